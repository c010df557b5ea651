"""The moderation backend interface and its registry.

A backend implements one method, `score(texts) -> list[BackendScores]`: a probability in [0, 1] for
each of the 13 categories per text (missing keys count as 0). Long texts are the backend's to chunk,
taking the max over chunks, because only it knows its window. It may also override `explain`, which
narrows the spans behind a flagged category to the words that drove it (`explain=true`). Options are a
pydantic model on the class (`Options`, `extra="forbid"`); heavy frameworks are imported inside
`__init__`, never at module import, so that listing plugins stays cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bastion.core.errors import ConfigError
from bastion.core.registry import Registry
from bastion.core.settings import BackendSpec, Settings
from bastion.core.taxonomy import CATEGORY_KEYS


class NoOptions(BaseModel):
    """For backends that take no options."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class BackendScores:
    """One text's scores from one backend.

    `allowed` lists categories that an allow list clears for this text: it overrides a flag from any
    backend. `spans` maps a category to the (start, end) character spans that drove its score, when
    the backend can tell. `flags`, when set, are the backend's own verdicts (a remote service that applies
    its own thresholds) and replace the threshold test for this backend.
    """

    scores: dict[str, float]
    allowed: frozenset[str] = frozenset()
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    flags: dict[str, bool] | None = None


class ModerationBackend(ABC):
    """Scores texts on the 13 categories. Subclasses register with `@moderation_backends.register`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    plugin_name: ClassVar[str]

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        self.options = options
        self.settings = settings

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        """Scores for each text, in order."""

    def explain(
        self, text: str, scores: BackendScores, categories: Sequence[str]
    ) -> dict[str, list[tuple[int, int]]]:
        """The character spans of `text` behind each of `categories` (flagged, and driven by this backend's
        `scores` for the text): by default the spans the scores came with. Backends that can point at the
        words themselves override it."""
        return {key: list(scores.spans.get(key, [])) for key in categories}

    def explain_many(
        self, texts: Sequence[str], scores: Sequence[BackendScores], categories: Sequence[Sequence[str]]
    ) -> list[dict[str, list[tuple[int, int]]]]:
        """`explain` for several texts at once (a model backend scores all their variants together)."""
        return [
            self.explain(text, found, keys)
            for text, found, keys in zip(texts, scores, categories, strict=True)
        ]

    @property
    def default_thresholds(self) -> dict[str, float]:
        """Flag thresholds shipped with the backend's model (0.5 unless it knows better)."""
        return dict.fromkeys(CATEGORY_KEYS, 0.5)

    @property
    def threshold_sets(self) -> dict[str, dict[str, float]]:
        """Named alternative thresholds shipped with the model (e.g. `strict`); none by default."""
        return {}

    @property
    def card(self) -> dict[str, Any] | None:
        """The model card (`card.json`: data, held-out metrics, thresholds) when the model ships one."""
        return None

    def card_markdown(self) -> str | None:
        """The model card for people to read, when there is one."""
        return None

    def describe(self) -> dict[str, Any]:
        """What produced the scores (plugin, options, model hashes): recorded in reports."""
        return {"plugin": self.plugin_name, "options": self.options.model_dump(mode="json")}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, HTTP clients)."""


moderation_backends: Registry[ModerationBackend] = Registry("moderation backend")


def create_backend(spec: BackendSpec, settings: Settings) -> ModerationBackend:
    """Instantiate the plugin a spec names, validating its options."""
    cls = moderation_backends.get(spec.plugin)
    try:
        options = cls.Options.model_validate(spec.options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"invalid option {where!r} for moderation backend {spec.plugin!r}: {first['msg']}"
        ) from exc
    return cls(options, settings)
