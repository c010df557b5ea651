"""Word-level explanations: occlusion over a flagged span, offensive words, and the service's drivers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bastion.core.settings import BackendSpec, load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import (
    BackendScores,
    ModerationBackend,
    create_backend,
    moderation_backends,
)
from bastion.moderation.explain import (
    WORD,
    Occlusion,
    join_spans,
    occlusion_many,
    occlusion_spans,
    without,
    word_spans,
)
from tests.moderation.verdicts import THREAT, THREAT_TEXT

HARASSMENT = CATEGORY_KEYS.index("harassment")
VIOLENCE = CATEGORY_KEYS.index("violence")


def keyword_scorer(weights: dict[str, float], column: int = HARASSMENT) -> tuple[list[list[str]], object]:
    """A score function: the column is the sum of the weights of the words present (capped at 1); the
    texts it was asked about are recorded."""
    asked: list[list[str]] = []

    def score(texts: list[str]) -> np.ndarray:
        asked.append(list(texts))
        rows = np.zeros((len(texts), len(CATEGORY_KEYS)))
        for i, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            rows[i, column] = min(1.0, sum(w for k, w in weights.items() if k in words))
        return rows

    return asked, score


def test_words_and_cuts_keep_offsets_and_drop_punctuation() -> None:
    text = "Well... you're an idiot, okay?"
    assert [text[a:b] for a, b in word_spans(text)] == ["Well", "you're", "an", "idiot", "okay"]
    assert [text[a:b] for a, b in word_spans(text, 8, 24)] == ["you're", "an", "idiot"]
    assert without(text, (8, 24), [(18, 23)]) == "you're an ,"
    assert join_spans([(5, 6), (0, 1), (3, 4)], "a  b, c") == [(0, 4), (5, 6)]
    assert join_spans([(5, 6), (0, 2), (1, 4)]) == [(0, 4), (5, 6)]  # without the text: overlaps only


def test_the_word_whose_removal_lowers_the_score_is_the_explanation() -> None:
    text = "Honestly, you are an idiot and a fool."
    asked, score = keyword_scorer({"idiot": 0.7, "fool": 0.2, "you": 0.05})
    spans = occlusion_spans(score, text, (0, len(text)), [HARASSMENT])  # type: ignore[arg-type]
    assert [text[a:b] for a, b in spans[HARASSMENT]] == ["idiot"]
    assert len(asked) == 1 and len(asked[0]) == 1 + 8  # the span, then once without each of its 8 words
    both = occlusion_spans(score, text, (0, len(text)), [HARASSMENT], share=0.2)  # type: ignore[arg-type]
    assert [text[a:b] for a, b in both[HARASSMENT]] == ["idiot", "fool"]


def test_adjacent_words_that_matter_become_one_span() -> None:
    text = "I will shoot you tomorrow"
    _, score = keyword_scorer({"shoot": 0.5, "you": 0.4}, VIOLENCE)
    spans = occlusion_spans(score, text, (0, len(text)), [VIOLENCE, HARASSMENT])  # type: ignore[arg-type]
    assert [text[a:b] for a, b in spans[VIOLENCE]] == ["shoot you"]
    assert spans[HARASSMENT] == []  # no word moves it: no word-level answer


def test_spread_out_evidence_and_long_spans_get_no_word_level_answer() -> None:
    text = "idiot idiot idiot"
    _, score = keyword_scorer({"idiot": 1.0})  # any one occurrence is enough: no single removal matters
    assert occlusion_spans(score, text, (0, len(text)), [HARASSMENT]) == {HARASSMENT: []}  # type: ignore[arg-type]
    long = " ".join(["word"] * 70)
    asked, score = keyword_scorer({"word": 1.0})
    assert occlusion_spans(score, long, (0, len(long)), [HARASSMENT]) == {HARASSMENT: []}  # type: ignore[arg-type]
    assert asked == []  # not scored at all
    assert occlusion_spans(score, "  idiot! ", (0, 9), [HARASSMENT]) == {HARASSMENT: [(2, 7)]}  # type: ignore[arg-type]


def test_offensive_words_are_the_profanity_backends_explanation(tmp_path: Path) -> None:
    backend = create_backend(BackendSpec(plugin="profanity"), load_settings(home=tmp_path))
    text = "Nice weather today, you stupid fucking idiot. See you at the party."
    [scores] = backend.score([text])
    spans = backend.explain(text, scores, ["harassment", "violence"])
    assert set(spans) == {"harassment"}
    found = [text[a:b] for a, b in spans["harassment"]]
    assert found and all(w in "stupid fucking idiot" for w in found)
    assert backend.explain(text, scores, ["violence"]) == {}
    assert backend.explain("Will it rain in Paris?", scores, ["harassment"]) == {"harassment": []}


def test_the_default_model_explains_with_words_and_the_gateway_gets_whole_sentences() -> None:
    from bastion.moderation.service import ModerationService

    service = ModerationService(load_settings())
    text = "Thanks for the recipe, it was great. I will stab you to death tomorrow."
    sentence = text.index("I will")
    try:
        _, [words] = service.moderate([text], explain=True)
        _, [whole] = service.moderate([text], explain=True, word_spans=False)
        _, [plain] = service.moderate([text])
    finally:
        service.close()
    assert words.categories["violence"] and words.explanations is not None and whole.explanations is not None
    assert set(words.explanations) == set(whole.explanations) == set(words.flagged_categories)
    violence = words.explanations["violence"]
    assert violence and all(span.start >= sentence for span in violence)  # in the harmful sentence...
    assert sum(s.end - s.start for s in violence) < len(text) - sentence - 1  # ...narrower than it
    explained = {w for span in violence for w in WORD.findall(span.text)}
    assert explained and explained <= set(WORD.findall(text[sentence:]))
    assert all(words.explanations[key] for key in words.flagged_categories)  # parents flagged via a child too
    assert [(s.start, s.end) for s in whole.explanations["violence"]] == [(sentence, len(text))]
    assert words.category_scores == whole.category_scores == plain.category_scores
    assert plain.explanations is None


def test_flagged_texts_are_explained_together_as_they_are_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.moderation.service import ModerationService

    service = ModerationService(load_settings())
    texts = [
        "Thanks for the help yesterday, you stupid idiot.",
        "What a lovely day for a walk.",
        "I will stab you to death tomorrow",
        "Thanks for the recipe, it was great. I am going to kill you and your whole family tonight.",
    ]
    try:
        alone = [service.moderate([text], explain=True)[1][0] for text in texts]
        embedded = service.model().backends[0]
        runs: list[int] = []
        compute = embedded._compute  # type: ignore[attr-defined]

        def counted(batch: list[str]) -> Any:
            runs.append(len(batch))
            return compute(batch)

        monkeypatch.setattr(embedded, "_compute", counted)
        _, together = service.moderate(texts, explain=True)  # scores come from the cache
    finally:
        service.close()
    assert [r.flagged for r in together] == [True, False, True, True]
    assert [r.explanations for r in together] == [r.explanations for r in alone]
    assert len(runs) == 1 and runs[0] > 3  # every flagged text's occlusion variants in one call


def test_many_spans_are_scored_in_bounded_calls() -> None:
    texts = [f"Honestly, you are an idiot number {i}." for i in range(5)]
    asked, score = keyword_scorer({"idiot": 0.9})
    jobs = [Occlusion.of(text, (0, len(text)), [HARASSMENT]) for text in texts]
    answers = occlusion_many(score, jobs, max_variants=20)  # type: ignore[arg-type]
    assert [len(batch) for batch in asked] == [16, 16, 8]  # 8 variants per text, at most 20 per call
    found = [[t[a:b] for a, b in answer[HARASSMENT]] for t, answer in zip(texts, answers, strict=True)]
    assert found == [["idiot"]] * 5


@moderation_backends.register("test-threat")
class ThreatBackend(ModerationBackend):
    """Scores `THREAT_TEXT` as `threat_verdict` does (harassment/threatening flagged, harassment not on
    its own) and records the categories it is asked to explain."""

    asked: ClassVar[list[list[str]]] = []

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        scores = {"harassment": 0.3, "harassment/threatening": 0.8}
        return [BackendScores(scores, spans={"harassment/threatening": [THREAT]}) for _ in texts]

    def explain_many(
        self, texts: Sequence[str], scores: Sequence[BackendScores], categories: Sequence[Sequence[str]]
    ) -> list[dict[str, list[tuple[int, int]]]]:
        type(self).asked += [list(keys) for keys in categories]
        return [{key: [(20, 24)] for key in keys} for keys in categories]  # "hurt"


def test_a_parent_flagged_through_its_subcategory_is_not_explained_again() -> None:
    from bastion.moderation.service import ModerationService

    settings = load_settings(
        moderation={
            "default_model": "threat",
            "preload": False,
            "models": {"threat": {"backends": [{"plugin": "test-threat"}]}},
        }
    )
    service = ModerationService(settings)
    ThreatBackend.asked = []
    try:
        _, [result] = service.moderate([THREAT_TEXT], explain=True)
    finally:
        service.close()
    assert result.categories["harassment"] and result.categories["harassment/threatening"]
    assert ThreatBackend.asked == [["harassment/threatening"]]
    assert result.explanations is not None
    assert [(s.start, s.end) for s in result.explanations["harassment"]] == [(20, 24)]
    assert [(s.start, s.end) for s in result.explanations["harassment/threatening"]] == [(20, 24)]
