"""The `lists` backend: block and allow lists per category, matched on normalised text.

An entry is a word or phrase, matched on word boundaries after normalisation (case, accents, zero-width
characters, leetspeak, look-alike letters and spaced-out letters are folded; see
`bastion.moderation.normalize`), or a regex when written `re:...`, searched in the normalised text.

A block match scores its category 1.0 (and the parent category of a subcategory, so that
`hate/threatening` also scores `hate`), with the span of the original text that matched. An allow match
puts the category in `allowed`, which overrides a flag from any backend; block matches that lie inside an
allow match of the same category are dropped.

Lists come from the options, from TOML or JSON files of the same shape, and from a short built-in list
(`lists_default.json`, on unless `use_default = false`).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.core.errors import ConfigError
from bastion.core.settings import Settings
from bastion.core.taxonomy import BY_KEY, check_category, zero_scores
from bastion.moderation.backends.base import BackendScores, ModerationBackend, moderation_backends
from bastion.moderation.normalize import compile_phrase, normalize

REGEX_PREFIX = "re:"
DEFAULT_LIST = "lists_default.json"

ListMap = dict[str, list[str]]
_LOOKBEHIND = r"(?<![^\W_])"
_FIRST_TOKEN = re.compile(r"(?:\[il\]|[^\\\[(])(?:\+|\{\d+,\})")


def _check_lists(value: Mapping[str, Sequence[str]], where: str) -> ListMap:
    """Check category keys and entries of one block or allow map; raise ConfigError naming the culprit."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where} must be a table of category -> list of entries, got {type(value).__name__}"
        )
    checked: ListMap = {}
    for category, entries in value.items():
        try:
            check_category(category)
        except ConfigError as exc:
            raise type(exc)(f"{where}: {exc.message}") from None
        if isinstance(entries, str) or not isinstance(entries, Sequence):
            raise ConfigError(f"{where}[{category!r}] must be a list of strings")
        for entry in entries:
            if not isinstance(entry, str):
                raise ConfigError(f"{where}[{category!r}] has a non-string entry {entry!r}")
            _compile_entry(entry, f"{where}[{category!r}]")
        checked[category] = list(entries)
    return checked


def _compile_entry(entry: str, where: str) -> re.Pattern[str] | None:
    """The regex for one entry, or None for a blank one. Bad regexes raise ConfigError naming the entry."""
    if entry.startswith(REGEX_PREFIX):
        source = entry[len(REGEX_PREFIX) :]
        if not source:
            raise ConfigError(f"{where} has an empty regex entry {entry!r}")
    else:
        source = compile_phrase(entry)
        if not source:
            return None
    try:
        return re.compile(source, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{where} entry {entry!r} is not a valid regex: {exc}. Fix or remove it.") from exc


class ListsOptions(BaseModel):
    """Options of the `lists` backend."""

    model_config = ConfigDict(extra="forbid")

    block: ListMap = Field(
        default_factory=dict,
        description="Category -> entries that flag it (score 1.0). Words/phrases, or regexes as 're:...'.",
    )
    allow: ListMap = Field(
        default_factory=dict,
        description="Category -> entries that clear it: a match puts the category in `allowed`.",
    )
    files: list[Path] = Field(
        default_factory=list,
        description="TOML or JSON files with the same shape ({block = {...}, allow = {...}}), merged in.",
    )
    use_default: bool = Field(True, description="Also use the short built-in block list.")

    @field_validator("block", "allow", mode="before")
    @classmethod
    def _valid_lists(cls, value: Any, info: Any) -> ListMap:
        return _check_lists(value, info.field_name)


@dataclass
class _CategoryMatcher:
    """Compiled entries of one category on one side (block or allow)."""

    phrases: list[str] = field(default_factory=list)
    regexes: list[re.Pattern[str]] = field(default_factory=list)
    combined: re.Pattern[str] | None = None

    def finalize(self) -> None:
        """Combine the phrase patterns into one alternation (see `phrase_alternation`)."""
        self.combined = phrase_alternation(self.phrases)

    def spans(self, text: str, phrases: bool = True) -> list[tuple[int, int]]:
        """Normalised-text spans of every match (of the regex entries only, when not `phrases`)."""
        found: list[tuple[int, int]] = []
        if phrases and self.combined is not None:
            found.extend(m.span() for m in self.combined.finditer(text))
        for pattern in self.regexes:
            found.extend(m.span() for m in pattern.finditer(text) if m.end() > m.start())
        return found


def phrase_alternation(phrases: Sequence[str]) -> re.Pattern[str] | None:
    """One pattern matching wherever any of the phrase patterns (`compile_phrase` sources) matches; None
    for no phrases. Every phrase pattern starts with the same lookbehind and then one letter token: both
    are factored out, so that the engine tests one first letter per group rather than every phrase."""
    if not phrases:
        return None
    groups: dict[str, list[str]] = {}
    for source in dict.fromkeys(phrases):
        rest = source[len(_LOOKBEHIND) :]
        head = _FIRST_TOKEN.match(rest)
        key = head.group(0) if head else ""
        groups.setdefault(key, []).append(rest[len(key) :])
    alternatives = [head + "(?:" + "|".join(tails) + ")" for head, tails in groups.items()]
    return re.compile(_LOOKBEHIND + "(?:" + "|".join(alternatives) + ")", re.IGNORECASE)


def _matchers(lists: Sequence[tuple[ListMap, str]]) -> dict[str, _CategoryMatcher]:
    matchers: dict[str, _CategoryMatcher] = {}
    for mapping, where in lists:
        for category, entries in mapping.items():
            matcher = matchers.setdefault(category, _CategoryMatcher())
            for entry in entries:
                pattern = _compile_entry(entry, f"{where}[{category!r}]")
                if pattern is None:
                    continue
                if entry.startswith(REGEX_PREFIX):
                    matcher.regexes.append(pattern)
                else:
                    matcher.phrases.append(pattern.pattern)
    for matcher in matchers.values():
        matcher.finalize()
    return matchers


def load_list_file(path: Path) -> tuple[ListMap, ListMap]:
    """Read a TOML or JSON list file: (block, allow). Keys starting with '_' are comments."""
    path = path.expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read list file {path}: {exc.strerror or exc}. Check the `files` option."
        ) from exc
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        elif path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            raise ConfigError(f"list file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"list file {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"list file {path} must hold a table with 'block' and/or 'allow'")
    unknown = sorted(k for k in data if k not in ("block", "allow") and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"list file {path} has unknown keys {unknown}; expected 'block' and 'allow'")
    block = _check_lists(data.get("block", {}), f"{path}: block")
    allow = _check_lists(data.get("allow", {}), f"{path}: allow")
    return block, allow


def default_lists() -> tuple[ListMap, ListMap]:
    """The built-in (block, allow) lists shipped as `lists_default.json`."""
    text = resources.files("bastion.moderation.backends").joinpath(DEFAULT_LIST).read_text("utf-8")
    data = json.loads(text)
    return _check_lists(data.get("block", {}), "built-in block"), _check_lists(
        data.get("allow", {}), "built-in allow"
    )


@moderation_backends.register("lists")
class ListsBackend(ModerationBackend):
    """Block and allow lists per category, matched on normalised text with spans in the original."""

    Options = ListsOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        assert isinstance(options, ListsOptions)
        blocks: list[tuple[ListMap, str]] = []
        allows: list[tuple[ListMap, str]] = []
        if options.use_default:
            block, allow = default_lists()
            blocks.append((block, "built-in block"))
            allows.append((allow, "built-in allow"))
        for path in options.files:
            block, allow = load_list_file(path)
            blocks.append((block, f"{path}: block"))
            allows.append((allow, f"{path}: allow"))
        blocks.append((options.block, "block"))
        allows.append((options.allow, "allow"))
        self._block = _matchers(blocks)
        self._allow = _matchers(allows)
        # Benign text matches no phrase of any category: one scan over all of them says so, and spares
        # a scan per category (found in the gateway's and the batch API's profiles).
        self._any_phrase = phrase_alternation(
            [p for matcher in (*self._block.values(), *self._allow.values()) for p in matcher.phrases]
        )
        digest = hashlib.sha256()
        for mapping, _ in blocks + allows:
            digest.update(json.dumps(mapping, sort_keys=True).encode())
        self._digest = digest.hexdigest()
        self._counts = {
            "block": sum(len(e) for m, _ in blocks for e in m.values()),
            "allow": sum(len(e) for m, _ in allows for e in m.values()),
        }

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        """1.0 for each category with a block match (with its spans); allow matches go to `allowed`."""
        return [self._score_one(text) for text in texts]

    def _score_one(self, text: str) -> BackendScores:
        norm = normalize(text)
        phrases = self._any_phrase is not None and self._any_phrase.search(norm.text) is not None
        scores = zero_scores()
        spans: dict[str, list[tuple[int, int]]] = {}
        allowed: set[str] = set()
        allow_spans: dict[str, list[tuple[int, int]]] = {}
        for category, matcher in self._allow.items():
            found = matcher.spans(norm.text, phrases)
            if found:
                allowed.add(category)
                allow_spans[category] = found
        for category, matcher in self._block.items():
            cleared = allow_spans.get(category, [])
            found = [
                (s, e)
                for s, e in matcher.spans(norm.text, phrases)
                if not any(a <= s and e <= b for a, b in cleared)
            ]
            if not found:
                continue
            original = sorted({norm.original_span(s, e) for s, e in found})
            targets = [category]
            parent = BY_KEY[category].parent
            if parent is not None:
                targets.append(parent)
            for key in targets:
                scores[key] = 1.0
                spans[key] = sorted(set(spans.get(key, [])) | set(original))
        return BackendScores(scores=scores, allowed=frozenset(allowed), spans=spans)

    def describe(self) -> dict[str, Any]:
        """Plugin, options, entry counts and a hash of every list in force."""
        info = super().describe()
        info["lists_sha256"] = self._digest
        info["entries"] = dict(self._counts)
        return info
