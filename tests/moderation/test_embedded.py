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


def test_a_harmful_sentence_after_benign_ones_is_scored_on_its_own(backend: EmbeddedBackend) -> None:
    benign = (
        "Thanks for helping with the move last weekend, the new flat looks great. The kitchen is bright and "
        "the kids love their rooms. We still need to buy curtains and a rug for the hall."
    )
    harmful = "I want to end my life tonight, I have the pills ready."
    text = f"{benign} {harmful}"
    (alone,) = backend.score([harmful])
    (mixed,) = backend.score([text])
    self_harm = CATEGORY_KEYS.index("self-harm")
    # Pooled over the whole window, the benign sentences dilute the harmful one.
    chunks = backend.encoder.encode_chunks([text], sentences=False)
    whole = chunks.scores if chunks.scores is not None else backend.heads.params.predict(chunks.embeddings)
    assert mixed.scores["self-harm"] >= float(whole[0, self_harm]) + 0.3
    # Its own segment's tokens also saw the context, so in context its score is not the one it gets alone
    # (the model before the current one kept 0.54 of 0.84 here; the current one 0.986 of 0.997)...
    rows = backend.encoder.encode_chunks([text], sentences=True)
    scores = rows.scores if rows.scores is not None else backend.heads.params.predict(rows.embeddings)
    in_context, which = rows.pool_max(scores.astype(np.float64), 1)
    assert rows.offsets[int(which[0, self_harm])] == (len(benign) + 1, len(text))
    assert abs(float(in_context[0, self_harm]) - alone.scores["self-harm"]) > 1e-3
    assert mixed.scores["self-harm"] == pytest.approx(float(in_context[0, self_harm]), abs=1e-6)
    # With `isolate_sentences`, the text's four sentences make the suspect one be scored again on its own.
    assert rows.long_sentences is not None and rows.long_sentences.tolist() == [False, True, True, True, True]
    isolating = create_backend(
        BackendSpec(plugin="embedded", options={"isolate_sentences": True}), load_settings()
    )
    try:
        (isolated,) = isolating.score([text])
    finally:
        isolating.close()
    assert isolated.scores["self-harm"] == pytest.approx(alone.scores["self-harm"], abs=1e-4)
    assert "self-harm" in flagged(backend, isolated.scores)
    assert isolated.spans["self-harm"] == [(len(benign) + 1, len(text))]


def test_only_long_texts_are_marked_for_isolating(backend: EmbeddedBackend) -> None:
    for text in ["Hello there.", "I will hurt you. You know why. Watch out."]:
        assert backend.encoder.encode_chunks([text]).long_sentences is None
    batch = backend.encoder.encode_chunks(["One thing. Two things.", "A. B. C. D.", "Fine."])
    assert batch.long_sentences is not None
    assert batch.long_sentences[batch.text_index == 1].tolist() == [False, True, True, True, True]
    assert not batch.long_sentences[batch.text_index != 1].any()


def test_isolated_sentences_join_their_text_with_their_offsets_in_the_text() -> None:
    from bastion.moderation.encoder import ChunkedEmbeddings, isolate_long_sentences

    texts = ["Nice day. Bad words here. Calm end.", "Other text."]
    # Text 0: its window and three sentences (the second suspect, the third not); text 1: one window.
    offsets = [(0, 35), (0, 9), (10, 25), (26, 35), (0, 11)]
    chunks = ChunkedEmbeddings(
        np.zeros((5, 2), np.float32),
        np.array([0, 0, 0, 0, 1]),
        offsets,
        None,
        np.array([False, True, True, True, False]),
    )
    probs = np.array([[0.05, 0.0], [0.01, 0.0], [0.3, 0.0], [0.09, 0.02], [0.5, 0.5]], np.float32)
    seen: list[list[str]] = []

    class Alone:
        def encode_chunks(self, pieces: list[str], sentences: bool = True) -> ChunkedEmbeddings:
            assert sentences is False
            seen.append(pieces)
            n = len(pieces)
            return ChunkedEmbeddings(np.ones((n, 2), np.float32), np.arange(n), [(0, len(p)) for p in pieces])

    def predict(found: ChunkedEmbeddings) -> np.ndarray:
        return np.where(found.embeddings[:, :1] > 0, 0.9, 0.0) * np.array([[1.0, 0.0]], np.float32)

    merged, merged_probs = isolate_long_sentences(Alone(), texts, chunks, probs, predict)  # type: ignore[arg-type]
    assert seen == [["Bad words here."]]
    assert merged.text_index.tolist() == [0, 0, 0, 0, 0, 1]
    assert merged.offsets[4] == (10, 25) and texts[0][10:25] == "Bad words here."
    best, which = merged.pool_max(merged_probs.astype(np.float64), 2)
    assert best[0].tolist() == pytest.approx([0.9, 0.02]) and merged.offsets[int(which[0, 0])] == (10, 25)
    assert best[1].tolist() == pytest.approx([0.5, 0.5])
    # Nothing flagged as a sentence of a long text: nothing is encoded again.
    plain = ChunkedEmbeddings(chunks.embeddings, chunks.text_index, offsets)
    assert isolate_long_sentences(Alone(), texts, plain, probs, predict)[0] is plain
    assert len(seen) == 1


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
