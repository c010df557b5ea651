"""The embedded backend with the shipped heads: clear cases, long text, odd input, options, card."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ConfigError, DependencyMissing
from bastion.core.settings import BackendSpec, load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import create_backend, moderation_backends
from bastion.moderation.backends.embedded import EmbeddedBackend
from bastion.moderation.encoder import sanitize
from bastion.moderation.train import default_artifacts_dir

THREAT = "I am going to kill you and your whole family tonight"
BENIGN = "What's the weather like in Paris tomorrow?"


@pytest.fixture(scope="module")
def backend() -> Iterator[EmbeddedBackend]:
    created = create_backend(BackendSpec(plugin="embedded"), load_settings())
    assert isinstance(created, EmbeddedBackend)
    yield created
    created.close()


def flagged(backend: EmbeddedBackend, scores: dict[str, float]) -> set[str]:
    thresholds = backend.default_thresholds
    return {k for k, v in scores.items() if v >= thresholds[k]}


def test_registered_and_options_are_strict() -> None:
    assert moderation_backends.get("embedded") is EmbeddedBackend
    with pytest.raises(ConfigError):
        create_backend(BackendSpec(plugin="embedded", options={"no_such_option": 1}), load_settings())
    with pytest.raises(ConfigError):
        create_backend(
            BackendSpec(plugin="embedded", options={"heads_path": "/nonexistent"}), load_settings()
        )


def test_shipped_artifacts_are_small_and_complete() -> None:
    folder = default_artifacts_dir()
    assert (folder / "heads.npz").stat().st_size + (folder / "card.json").stat().st_size < 1_000_000


def test_served_scores_blend_the_ngram_heads_of_the_heads_folder(
    backend: EmbeddedBackend, tmp_path: Path
) -> None:
    import shutil

    import numpy as np

    from bastion.moderation.ngrams import NgramModel, NgramSpec, fit_ngrams

    harassment = CATEGORY_KEYS.index("harassment")
    texts = [f"you are a pathetic {w} and nobody wants you" for w in ("loser", "clown", "fool")] * 10
    texts += [f"we walked to the {w} and had lunch" for w in ("park", "river", "market")] * 10
    y = np.zeros((len(texts), len(CATEGORY_KEYS)), np.float32)
    y[:30, harassment] = 1
    mask = np.zeros_like(y)
    mask[:, harassment] = 1
    folder = default_artifacts_dir()
    heads = tmp_path / "heads"
    heads.mkdir()
    for name in ("heads.npz", "card.json"):
        shutil.copy(folder / name, heads / name)
    ngrams = fit_ngrams(texts, y, mask, NgramSpec(min_df=2, min_positives=10))
    ngrams.save(heads)
    options = {"heads_path": str(heads), "encoder_path": str(folder / "encoder"), "cache_size": 0}
    blended = create_backend(BackendSpec(plugin="embedded", options=options), load_settings())
    assert isinstance(blended, EmbeddedBackend)
    try:
        probes = [THREAT, BENIGN, "ur such a pathetic loser lol, nobody wants u here"]
        plain = backend.score(probes)
        served = blended.score(probes)
        assert blended.describe()["ngrams"]["categories"] == ["harassment"]
    finally:
        blended.close()
    lexical = NgramModel.load(heads / "ngrams.npz").probabilities(probes)
    w = ngrams.blend_weight
    for t in range(len(probes)):
        for j, key in enumerate(CATEGORY_KEYS):
            expected = plain[t].scores[key]
            if j == harassment:
                expected = (1 - w) * expected + w * float(lexical[t, j])
            assert served[t].scores[key] == pytest.approx(expected, abs=1e-6), (t, key)
    assert served[2].scores["harassment"] != pytest.approx(plain[2].scores["harassment"], abs=1e-3)


def test_clear_threat_flagged_and_weather_question_not(backend: EmbeddedBackend) -> None:
    threat, benign = backend.score([THREAT, BENIGN])
    assert set(threat.scores) == set(CATEGORY_KEYS)
    assert flagged(backend, threat.scores) & {"harassment/threatening", "violence"}
    assert flagged(backend, benign.scores) == set()
    assert threat.spans and all(
        start < end <= len(THREAT) for spans in threat.spans.values() for start, end in spans
    )


def test_harmful_sentence_after_long_benign_text_is_found(backend: EmbeddedBackend) -> None:
    filler = " ".join(
        ["The committee reviewed the quarterly budget and agreed to repaint the library next spring."] * 230
    )
    assert len(filler.split()) >= 3000
    text = filler + " " + THREAT + "."
    (result,) = backend.score([text])
    hits = flagged(backend, result.scores) & {"harassment/threatening", "violence"}
    assert hits
    start, end = next(iter(result.spans[next(iter(hits))]))
    assert start > len(filler) // 2 and end == len(text)
    (plain,) = backend.score([filler])
    assert not flagged(backend, plain.scores) & {"harassment/threatening", "violence"}


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t ", "a\x00b\x00", "\ud800", "lone \udfff surrogate \ud83d", "🙂" * 50, " " * 199_998 + "hi"],
)
def test_weird_input_does_not_crash(backend: EmbeddedBackend, text: str) -> None:
    (result,) = backend.score([text])
    assert set(result.scores) == set(CATEGORY_KEYS)
    assert all(0.0 <= v <= 1.0 for v in result.scores.values())


def test_blank_text_scores_zero_and_short_replies_are_mostly_not_flagged(backend: EmbeddedBackend) -> None:
    for result in backend.score(["", " ", "\n\t  \n"]):
        assert set(result.scores.values()) == {0.0} and not result.spans
    # Everyday one-word replies (none of them in the training data) at the default thresholds.
    replies = [
        "ok",
        "thanks",
        "hi",
        "yes",
        "no",
        "lol",
        "cool",
        "bye",
        "hmm",
        "1",
        "asdf",
        "stop",
        "wait",
        "why",
    ]
    flagged_replies = [
        r for r, s in zip(replies, backend.score(replies), strict=True) if flagged(backend, s.scores)
    ]
    assert len(flagged_replies) <= 2, flagged_replies


def test_sanitize_keeps_length() -> None:
    for text in ["\ud800x", "a\x00b", "plain", "é\udfffé"]:
        assert len(sanitize(text)) == len(text)
        sanitize(text).encode("utf-8")


def test_two_hundred_thousand_characters_are_chunked(backend: EmbeddedBackend) -> None:
    # Words over 100 characters are one token each, so 200,000 characters stay quick to encode.
    text = ("a" * 150 + " ") * 1325 + THREAT
    assert len(text) > 200_000
    chunks = backend.encoder.encode_chunks([text])
    assert len(chunks.offsets) > 3 and chunks.offsets[-1][1] == len(text)
    assert set(chunks.text_index.tolist()) == {0}
    (result,) = backend.score([text])
    assert set(result.scores) == set(CATEGORY_KEYS)


def test_describe_records_hashes(backend: EmbeddedBackend) -> None:
    info = backend.describe()
    assert info["plugin"] == "embedded"
    assert len(info["heads_sha256"]) == 64
    assert info["encoder_fingerprint"] == info["trained_encoder_fingerprint"]
    assert info["data_sha256"] and all(len(h) == 64 for h in info["data_sha256"].values())
    assert set(backend.default_thresholds) == set(CATEGORY_KEYS)
    assert info["ngrams"] is None  # the shipped heads were trained without n-gram heads


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.moderation import encoder

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(DependencyMissing, match=r"bastion\[ml\]"):
        encoder.Encoder()


def test_other_local_encoder_folder_is_accepted(tmp_path: Path) -> None:
    from bastion.moderation.encoder import Encoder, default_model_path

    with pytest.raises(ConfigError):
        Encoder(tmp_path)
    assert Encoder(default_model_path(), max_length=128).max_length == 128


def test_a_harmful_sentence_after_a_benign_one_is_scored_on_its_own(backend: EmbeddedBackend) -> None:
    benign = (
        "Thanks for helping with the move last weekend, the new flat looks great. The kitchen is bright and "
        "the kids love their rooms. We still need to buy curtains and a rug for the hall."
    )
    harmful = "I want to end my life tonight, I have the pills ready."
    text = f"{benign} {harmful}"
    (alone,) = backend.score([harmful])
    (mixed,) = backend.score([text])
    self_harm = CATEGORY_KEYS.index("self-harm")
    # Pooled over the whole window, the benign sentences dilute the harmful one; its own segment does not.
    chunks = backend.encoder.encode_chunks([text], sentences=False)
    whole = chunks.scores if chunks.scores is not None else backend.heads.params.predict(chunks.embeddings)
    assert mixed.scores["self-harm"] >= float(whole[0, self_harm]) + 0.3
    # Its segment's tokens also saw the context, so it keeps most of its own score, not all of it.
    assert mixed.scores["self-harm"] >= 0.5 * alone.scores["self-harm"]
    rows = backend.encoder.encode_chunks([text], sentences=True)
    scores = rows.scores if rows.scores is not None else backend.heads.params.predict(rows.embeddings)
    best, which = rows.pool_max(scores.astype(np.float64), 1)
    assert best[0, self_harm] == pytest.approx(mixed.scores["self-harm"], abs=1e-6)
    assert rows.offsets[int(which[0, self_harm])] == (len(benign) + 1, len(text))


def test_sentence_segments_are_token_ranges_of_each_sentence_in_a_window() -> None:
    from bastion.moderation.encoder import sentence_segments

    # [CLS] one . two ? [SEP]: sentences "one." (0, 4) and "two?" (5, 9).
    offsets = [(0, 0), (0, 3), (3, 4), (5, 8), (8, 9), (0, 0)]
    assert sentence_segments(offsets, [(0, 4), (5, 9)]) == [(1, 3, (0, 4)), (3, 5, (5, 9))]
    # A window that starts inside the first sentence keeps that sentence's tail as a segment.
    assert sentence_segments([(0, 0), (3, 4), (5, 8), (8, 9), (0, 0)], [(0, 4), (5, 9)]) == [
        (1, 2, (3, 4)),
        (2, 4, (5, 9)),
    ]
    # One sentence in the window: the window itself covers it.
    assert sentence_segments(offsets, [(0, 9)]) == []
    assert sentence_segments([(0, 0), (0, 3), (0, 0)], [(0, 3), (10, 20)]) == []


def test_sentence_spans() -> None:
    from bastion.moderation.encoder import sentence_spans

    text = "One. Two?  Three!\nFour; five 3.5 six\n\n  "
    assert [text[a:b] for a, b in sentence_spans(text)] == ["One.", "Two?", "Three!", "Four;", "five 3.5 six"]
    assert sentence_spans("   ") == []
    assert sentence_spans("no end") == [(0, 6)]
