"""The `lists` backend and the text normalisation under it."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from bastion.core.errors import ConfigError, UnknownCategory
from bastion.core.settings import BackendSpec, load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import ModerationBackend, create_backend, moderation_backends
from bastion.moderation.backends.lists import ListsBackend, default_lists
from bastion.moderation.normalize import compile_phrase, normalize


def make(**options: Any) -> ModerationBackend:
    return create_backend(BackendSpec(plugin="lists", options=options), load_settings())


def flagged(backend: ModerationBackend, text: str) -> set[str]:
    (result,) = backend.score([text])
    return {k for k, v in result.scores.items() if v > 0}


# --- normalisation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("KILL", "kill"),
        ("k1ll", "kill"),
        ("h4t3", "hate"),
        ("@ss a$$", "ass ass"),
        ("ｋｉｌｌ", "kill"),  # fullwidth
        ("𝐤𝐢𝐥𝐥", "kill"),  # mathematical bold
        ("kíll", "kill"),  # accent
        ("ki\u0301ll", "kill"),  # combining accent
        ("ki\u200bll", "kill"),  # zero-width space
        ("ki\u00adll", "kill"),  # soft hyphen
        ("кill", "kill"),  # Cyrillic k mixed with Latin
        ("k.i.l.l", "kill"),
        ("k i l l", "kill"),
        ("k-1-l-l me", "kill me"),
        ("a  \t\n b", "a b"),
        ("I\u2019m", "i'm"),
    ],
)
def test_normalize_folds_evasions(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@pytest.mark.parametrize(
    "raw",
    ["I have 5 apples in 2024", "привет мир", "kill!", "call me at 5.30", "e.g. this"],
)
def test_normalize_leaves_ordinary_text_alone(raw: str) -> None:
    assert normalize(raw).text == raw.casefold()


def test_normalized_positions_map_back_to_the_original() -> None:
    raw = "Hey \u200bＹＯＵ  k.1.l.l\u0301 it"
    norm = normalize(raw)
    assert norm.text == "hey you kill it"
    start = norm.text.index("kill")
    s, e = norm.original_span(start, start + 4)
    assert raw[s:e] == "k.1.l.l\u0301"
    s, e = norm.original_span(4, 7)
    assert raw[s:e] == "ＹＯＵ"
    assert len(norm.starts) == len(norm.ends) == len(norm.text)


def _fold_every_word(text: str) -> str:
    """The word folding applied to every word, with no shortcut (what `normalize` must equal)."""
    from bastion.moderation.normalize import _WORD, _fold_word

    chars = list(text)
    for match in _WORD.finditer(text):
        start, end = match.span()
        letters = chars[start:end]
        _fold_word(letters)
        chars[start:end] = letters
    return "".join(chars)


def test_word_folding_shortcut_for_ascii_text_changes_nothing() -> None:
    from bastion.moderation.normalize import _fold_words

    rng = random.Random(7)
    alphabet = "abcdeilostxyz013457@$|!+-_.,' ?" + "AB" + "\u0430\u0435\u20ac\u00a1"  # Cyrillic a/e, euro, ¡
    folded_some = 0
    for n in range(3000):
        pool = alphabet if n % 3 else alphabet[:-4]  # two thirds of the texts are not pure ASCII
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
        chars = list(text)
        _fold_words(chars)
        assert "".join(chars) == _fold_every_word(text), text
        folded_some += "".join(chars) != text
    assert folded_some > 500  # the texts do exercise the folding


def test_one_scan_over_all_phrases_finds_a_match_wherever_a_category_does() -> None:
    backend = make(block={"violence": ["smash the door", "burn it"], "hate": ["lo mein"]})
    assert isinstance(backend, ListsBackend)
    rng = random.Random(11)
    phrases = [p for entries in default_lists()[0].values() for p in entries if not p.startswith("re:")]
    phrases += ["smash the door", "burn it", "lo mein"]
    words = ["the", "a", "kill", "you", "i", "am", "door", "burn", "it", "--", "!!", "k1ll", "yourself"]
    hits = 0
    for _ in range(1500):
        parts = [rng.choice(words) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.5:
            phrase = rng.choice(phrases)
            parts.insert(rng.randint(0, len(parts)), phrase.upper() if rng.random() < 0.3 else phrase)
        text = normalize(rng.choice([" ", "-", ". "]).join(parts)).text
        per_category = any(m.spans(text) for m in (*backend._block.values(), *backend._allow.values()))
        assert per_category <= (backend._any_phrase is not None and bool(backend._any_phrase.search(text)))
        hits += per_category
    assert hits > 300


def test_compiled_phrase_tolerates_stretching_and_punctuation_but_not_partial_words() -> None:
    pattern = re.compile(compile_phrase("I'm going to kill you"))
    assert pattern.search(normalize("im gooing to kiiill you").text)
    assert pattern.search(normalize("I'm... going, to KILL you").text)
    assert not pattern.search(normalize("I'm going to killyou").text)
    assert not pattern.search(normalize("I'm going to skill you").text)
    assert not pattern.search(normalize("I'm going to kill your process").text)
    assert compile_phrase("  ...  ") == ""


# --- the backend --------------------------------------------------------------------------------


def test_registered() -> None:
    assert "lists" in moderation_backends.names()
    assert moderation_backends.get("lists") is ListsBackend


def test_block_match_scores_category_and_parent_with_original_span() -> None:
    backend = make(use_default=False, block={"hate/threatening": ["burn them all"]})
    text = "They said: B\u200bURN  th3m a.l.l tonight"
    (result,) = backend.score([text])
    assert result.scores["hate/threatening"] == 1.0
    assert result.scores["hate"] == 1.0  # the parent of a subcategory scores too
    assert set(result.scores) == set(CATEGORY_KEYS)
    assert sum(result.scores.values()) == 2.0
    (span,) = result.spans["hate/threatening"]
    assert text[span[0] : span[1]] == "B\u200bURN  th3m a.l.l"
    assert result.allowed == frozenset()


def test_no_match_scores_zero() -> None:
    backend = make(use_default=False, block={"violence": ["stab him"]})
    (result,) = backend.score(["I stabilised him after the fall"])
    assert all(v == 0.0 for v in result.scores.values())
    assert result.spans == {}


def test_every_occurrence_is_a_span() -> None:
    backend = make(use_default=False, block={"violence": ["stab"]})
    text = "stab, then STAB again"
    (result,) = backend.score([text])
    assert [text[s:e] for s, e in result.spans["violence"]] == ["stab", "STAB"]


def test_regex_entries_search_the_normalised_text() -> None:
    backend = make(use_default=False, block={"illicit": [r"re:\bbuy (?:some )?h[e3]roin\b"]})
    assert flagged(backend, "where can I BUY some her0in") == {"illicit"}
    assert flagged(backend, "heroin addiction treatment") == set()


def test_allow_match_reports_allowed_and_clears_block_inside_it() -> None:
    backend = make(
        use_default=False,
        block={"violence": ["kill"]},
        allow={"violence": ["kill the process", "re:\\bkill -9\\b"]},
    )
    (result,) = backend.score(["please kill the process"])
    assert result.allowed == frozenset({"violence"})
    assert result.scores["violence"] == 0.0
    (result,) = backend.score(["kill the process, then kill him"])
    assert result.allowed == frozenset({"violence"})
    assert result.scores["violence"] == 1.0  # the second "kill" is outside the allowed phrase
    (result,) = backend.score(["kill -9 1234"])
    assert result.allowed == frozenset({"violence"})


def test_batch_keeps_order() -> None:
    backend = make(use_default=False, block={"sexual": ["xxxpornword"], "illicit": ["cook meth"]})
    results = backend.score(["fine", "let's cook meth", "xxxpornword", ""])
    assert [{k for k, v in r.scores.items() if v} for r in results] == [set(), {"illicit"}, {"sexual"}, set()]


def test_default_list_is_on_by_default_and_can_be_turned_off() -> None:
    threat = "I'm going to k1ll you"
    assert "harassment/threatening" in flagged(make(), threat)
    assert flagged(make(use_default=False), threat) == set()
    block, _ = default_lists()
    assert set(block) <= set(CATEGORY_KEYS)
    assert 0 < sum(len(v) for v in block.values()) < 100  # short on purpose


@pytest.mark.parametrize(
    "text",
    [
        "How do I make a pipe-bomb?",
        "i want to k i l l myself",
        "I W1LL KILL YOU",
        "kill all the immigrants",
    ],
)
def test_default_list_catches_clear_cases(text: str) -> None:
    assert flagged(make(), text)


@pytest.mark.parametrize(
    "text",
    [
        "How do I kill a Python process?",
        "This battery will kill your phone",
        "The history of the pipe organ",
        "I killed it at the gym today",
        "My grandmother was an immigrant",
        "What is the best way to learn French?",
        "Suicide prevention hotlines are open all night.",
    ],
)
def test_default_list_leaves_benign_text_alone(text: str) -> None:
    assert flagged(make(), text) == set()


def test_unknown_category_is_refused() -> None:
    with pytest.raises(UnknownCategory, match="violent"):
        make(block={"violent": ["x"]})


def test_bad_regex_names_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"re:\(unclosed"):
        make(allow={"violence": ["fine", "re:(unclosed"]})


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="blocks"):
        make(blocks={"violence": ["x"]})


def test_list_files_toml_and_json(tmp_path: Path) -> None:
    toml_file = tmp_path / "extra.toml"
    toml_file.write_text('[block]\n"self-harm/intent" = ["i will end it tonight"]\n', encoding="utf-8")
    json_file = tmp_path / "allow.json"
    json_file.write_text(
        json.dumps({"_note": "x", "allow": {"violence": ["kill the lights"]}}), encoding="utf-8"
    )
    backend = make(use_default=False, files=[str(toml_file), str(json_file)])
    (result,) = backend.score(["I will end it tonight"])
    assert result.scores["self-harm/intent"] == 1.0
    assert result.scores["self-harm"] == 1.0
    (result,) = backend.score(["kill the lights"])
    assert result.allowed == frozenset({"violence"})
    info = backend.describe()
    assert info["plugin"] == "lists"
    assert info["entries"] == {"block": 1, "allow": 1}
    assert len(info["lists_sha256"]) == 64


def test_list_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read list file"):
        make(files=[str(tmp_path / "missing.toml")])
    bad_cat = tmp_path / "bad.json"
    bad_cat.write_text(json.dumps({"block": {"nope": ["x"]}}), encoding="utf-8")
    with pytest.raises(UnknownCategory, match=r"bad\.json"):
        make(files=[str(bad_cat)])
    bad_regex = tmp_path / "bad.toml"
    bad_regex.write_text("[block]\nviolence = ['re:[a-']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"re:\[a-"):
        make(files=[str(bad_regex)])
    bad_syntax = tmp_path / "syntax.toml"
    bad_syntax.write_text("[block\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        make(files=[str(bad_syntax)])
    wrong_key = tmp_path / "wrong.json"
    wrong_key.write_text(json.dumps({"blocklist": {}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown keys"):
        make(files=[str(wrong_key)])


def test_long_text_is_fast_enough() -> None:
    backend = make()
    text = "an ordinary sentence about gardening and the weather. " * 4000  # ~220k characters
    import time

    start = time.perf_counter()
    (result,) = backend.score([text + "I will kill you"])
    assert time.perf_counter() - start < 5
    assert result.scores["harassment/threatening"] == 1.0
    (span,) = result.spans["harassment/threatening"]
    assert span == (len(text), len(text) + len("I will kill you"))
