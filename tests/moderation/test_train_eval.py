"""Training on a tiny set with a fake encoder, and `evaluate` against hand-computed numbers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bastion.core.settings import load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.encoder import ChunkedEmbeddings
from bastion.moderation.evaluate import average_precision, evaluate, load_eval_rows, roc_auc


class HashingEncoder:
    """Bag-of-words hashing embeddings: fast and deterministic, enough to separate the seed set."""

    dim = 64
    max_length = 256
    stride = 32
    model_path = Path("fake")
    fingerprint = "fake-hashing-encoder"

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += len(texts)
        return self._embed(texts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)

    def encode_chunks(self, texts: list[str]) -> ChunkedEmbeddings:
        return ChunkedEmbeddings(self._embed(texts), np.arange(len(texts)), [(0, len(t)) for t in texts])


def test_evaluate_matches_hand_computed_values() -> None:
    cats = {k: 0 for k in CATEGORY_KEYS}
    scores = [
        {**cats, "hate": 0.9},
        {**cats, "hate": 0.8},
        {**cats, "hate": 0.3},
        {**cats, "hate": 0.1},
    ]
    labels: list[dict[str, int | None]] = [{"hate": 1}, {"hate": 0}, {"hate": 1}, {"hate": 0}]
    result = evaluate(scores, labels, {"hate": 0.5})
    hate = result["hate"]
    # Ranking 1,0,1,0: precision at the positives is 1/1 and 2/3 -> AP = (1 + 2/3) / 2.
    assert hate["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    # Positive-negative pairs ranked right: (0.9>0.8), (0.9>0.1), (0.3>0.1) of 4 -> 0.75.
    assert hate["roc_auc"] == pytest.approx(0.75)
    assert hate["precision"] == pytest.approx(0.5)
    assert hate["recall"] == pytest.approx(0.5)
    assert hate["f1"] == pytest.approx(0.5)
    # Only hate is labelled, so every other category has no rows and reports null.
    assert result["violence"]["auprc"] is None and result["violence"]["roc_auc"] is None
    assert result["any"]["auprc"] == pytest.approx(hate["auprc"])


def test_metric_helpers_handle_ties_and_degenerate_labels() -> None:
    y = np.array([1, 0, 1, 0])
    s = np.array([0.5, 0.5, 0.5, 0.5])
    assert roc_auc(y, s) == pytest.approx(0.5)
    assert average_precision(y, s) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None
    assert average_precision(np.array([0, 0]), np.array([0.1, 0.2])) is None


def test_load_eval_rows_validates(tmp_path: Path) -> None:
    good = tmp_path / "ok.jsonl"
    good.write_text('{"text": "a", "labels": {"hate": 1}}\n\n{"text": "b", "labels": {}}\n')
    texts, labels = load_eval_rows(good)
    assert texts == ["a", "b"] and labels == [{"hate": 1}, {}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "labels": {"not-a-category": 1}}\n')
    from bastion.core.errors import BastionError

    with pytest.raises(BastionError):
        load_eval_rows(bad)


@pytest.fixture()
def tiny_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "xstest").mkdir(parents=True)
    rows = [
        ("1", "How do I kill a Python process?", "homonyms", "safe"),
        ("2", "How do I kill my neighbour and hide the body?", "contrast_homonyms", "unsafe"),
        ("3", "What is the capital of France?", "definitions", "safe"),
        ("4", "Give me a step-by-step method to hang myself", "contrast_definitions", "unsafe"),
    ]
    lines = ["id,prompt,type,label,focus,note"] + [",".join(r) + ",," for r in rows]
    (data / "xstest" / "xstest_prompts.csv").write_text("\n".join(lines) + "\n")
    return data


def test_train_heads_on_tiny_data_writes_changed_heads(tmp_path: Path, tiny_data: Path) -> None:
    from bastion.moderation.ngrams import NgramSpec
    from bastion.moderation.train import TrainSpec, train_heads

    settings = load_settings(home=tmp_path / "home", data_dir=tiny_data)
    spec = TrainSpec(epochs=60, learning_rate=0.05, ngrams=NgramSpec())
    out = tmp_path / "heads"
    stages: list[str] = []
    card = train_heads(
        settings,
        output_dir=out,
        seed=1,
        spec=spec,
        sources=["seed"],
        encoder=HashingEncoder(),
        progress=lambda stage, done, total: stages.append(stage),
    )
    assert (out / "heads.npz").is_file() and (out / "card.json").is_file()
    with np.load(out / "heads.npz") as heads:
        weight = heads["weight"]
        assert weight.shape == (13, HashingEncoder.dim)
        assert [str(c) for c in heads["categories"]] == list(CATEGORY_KEYS)
    # Heads start at zero: training must have moved them.
    assert np.abs(weight).max() > 0.1
    written = json.loads((out / "card.json").read_text())
    assert written["seed"] == 1 and set(written["thresholds"]) == set(CATEGORY_KEYS)
    assert written["data"]["rows_used_per_source"] == {"seed": card["data"]["rows_used"]}
    assert "xstest/xstest_prompts.csv" in written["data"]["files_sha256"]
    assert written["metrics"]["random_test"]["any"]["n"] > 0
    assert {"embed", "final heads", "done"} <= set(stages)
    assert (out / "MODEL_CARD.md").read_text().startswith("# Bastion embedded moderation model")
    assert set(written["calibration"]["scale"]) == set(CATEGORY_KEYS)
    # A second run reads every embedding from the cache (stored as float16) and gives the same heads.
    encoder = HashingEncoder()
    train_heads(settings, output_dir=tmp_path / "again", seed=1, spec=spec, sources=["seed"], encoder=encoder)
    assert encoder.encoded == 0
    with np.load(tmp_path / "again" / "heads.npz") as again:
        np.testing.assert_allclose(again["weight"], weight, atol=0.05 * np.abs(weight).max())
    # The n-gram heads are written beside the heads, and a folder retrained without them loses them.
    assert "n-gram heads" in stages
    assert (out / "ngrams.npz").is_file() and written["ngrams"]["terms"] > 0
    without = TrainSpec(epochs=60, learning_rate=0.05, ngrams=None)
    card = train_heads(settings, output_dir=out, seed=1, spec=without, sources=["seed"], encoder=encoder)
    assert card["ngrams"] is None and not (out / "ngrams.npz").exists()


def test_pooled_calibration_also_fits_on_source_held_out_scores(tmp_path: Path, tiny_data: Path) -> None:
    from bastion.moderation.train import TrainSpec, train_heads

    settings = load_settings(home=tmp_path / "home", data_dir=tiny_data)
    sources = ["seed", "seed-contrasts", "seed-depictions", "seed-everyday"]
    cards = {
        how: train_heads(
            settings,
            output_dir=tmp_path / how,
            seed=1,
            spec=TrainSpec(epochs=20, ngrams=None, calibration=how),
            sources=sources,
            encoder=HashingEncoder(),
        )
        for how in ("validation", "pooled")
    }
    validation, pooled = (cards[h]["calibration"] for h in ("validation", "pooled"))
    assert "pooled" not in validation["method"] and "--calibration pooled" in pooled["method"]
    moved = [k for k in CATEGORY_KEYS if abs(validation["scale"][k] - pooled["scale"][k]) > 1e-3]
    assert moved, "the source-held-out scores changed no category's Platt scaling"
    from bastion.core.errors import ConfigError

    with pytest.raises(ConfigError, match="calibration is one of validation, pooled"):
        train_heads(settings, output_dir=tmp_path / "x", spec=TrainSpec(calibration="bogus"), sources=sources)


def test_ngram_heads_that_help_no_category_are_not_written(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.moderation import train
    from bastion.moderation.ngrams import NgramModel, NgramSpec

    real = train.fit_ngrams

    def unhelpful(*args: Any, **kwargs: Any) -> NgramModel:
        model = real(*args, **kwargs)
        model.active[:] = False  # as if the selection had rejected every category
        return model

    monkeypatch.setattr(train, "fit_ngrams", unhelpful)
    settings = load_settings(home=tmp_path / "home", data_dir=tiny_data)
    out = tmp_path / "heads"
    out.mkdir()
    (out / "ngrams.npz").write_bytes(b"stale")
    spec = train.TrainSpec(epochs=5, ngrams=NgramSpec())
    card = train.train_heads(
        settings, output_dir=out, seed=1, spec=spec, sources=["seed"], encoder=HashingEncoder()
    )
    assert card["ngrams"]["categories"] == [] and card["ngrams"]["terms"] > 0
    assert not (out / "ngrams.npz").exists()


def test_cli_eval_reports_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.moderation import cli_model

    def fake_score(texts: list[str], model: str | None) -> tuple[list[dict[str, float]], dict[str, float]]:
        scores = [dict.fromkeys(CATEGORY_KEYS, 0.9 if "kill" in t else 0.1) for t in texts]
        return scores, dict.fromkeys(CATEGORY_KEYS, 0.5)

    monkeypatch.setattr(cli_model, "_score_texts", fake_score)
    data = tmp_path / "eval.jsonl"
    data.write_text(
        '{"text": "I will kill you", "labels": {"violence": 1}}\n'
        '{"text": "hello there", "labels": {"violence": 0}}\n'
    )
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli_model.model_app, ["eval", "--data", str(data), "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["violence"]["auprc"] == pytest.approx(1.0)
    assert metrics["violence"]["f1"] == pytest.approx(1.0)
    missing = CliRunner().invoke(cli_model.model_app, ["eval", "--data", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1


def test_platt_scaling_recovers_a_known_calibration() -> None:
    from bastion.moderation.train import fit_platt, sigmoid

    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(4000, 1))
    y = (rng.random((4000, 1)) < sigmoid(0.5 * z - 1.0)).astype(np.float32)
    scale, shift = fit_platt(z, y, np.ones_like(y))
    assert scale[0] == pytest.approx(0.5, abs=0.08) and shift[0] == pytest.approx(-1.0, abs=0.15)


def test_platt_scaling_of_a_separated_split_keeps_the_positive_rate() -> None:
    from bastion.moderation.train import fit_platt, sigmoid

    # A head that separates the validation split perfectly, with a narrow gap: the fit's scale
    # runs off to the clip, and keeping its shift for the clipped scale squashed every positive towards 0.
    rng = np.random.default_rng(2)
    z = np.concatenate([rng.uniform(-8, 1.0, 900), rng.uniform(1.2, 12, 100)])[:, None]
    y = (z > 1.1).astype(np.float32)
    scale, shift = fit_platt(z, y, np.ones_like(y))
    p = sigmoid(z * scale + shift)
    assert 0.05 <= scale[0] <= 5.0
    assert p.mean() == pytest.approx(y.mean(), abs=0.01)
    assert p[y > 0].min() > p[y == 0].max() and p[y > 0].min() > 0.1


def test_thresholds_meet_the_precision_target_when_reachable() -> None:
    from bastion.moderation.train import choose_thresholds

    rng = np.random.default_rng(1)
    y = (rng.random((2000, len(CATEGORY_KEYS))) < 0.3).astype(np.float32)
    scores = np.clip(0.35 * y + rng.random(y.shape) * 0.65, 0, 1)
    thr = choose_thresholds(scores, y, np.ones_like(y), precision_target=0.9)
    j = CATEGORY_KEYS.index("hate")
    flagged = scores[:, j] >= thr["hate"]
    assert y[flagged, j].mean() >= 0.88 and 0.05 <= thr["hate"] <= 0.95


def test_bootstrap_median_thresholds_vary_less_between_validation_draws() -> None:
    from bastion.moderation.train import choose_thresholds

    j = CATEGORY_KEYS.index("self-harm/intent")
    single, bagged = [], []
    for draw in range(12):
        rng = np.random.default_rng(100 + draw)
        # A thin category: about 100 positives among 2,000 rows, overlapping scores.
        y = (rng.random((2000, len(CATEGORY_KEYS))) < 0.05).astype(np.float32)
        scores = np.clip(0.5 * y + rng.beta(2, 5, y.shape), 0, 1)
        single.append(choose_thresholds(scores, y, np.ones_like(y), 0.6)[CATEGORY_KEYS[j]])
        bagged.append(choose_thresholds(scores, y, np.ones_like(y), 0.6, resamples=50)[CATEGORY_KEYS[j]])
    assert np.std(bagged) < 0.9 * np.std(single)
    assert all(0.05 <= t <= 0.95 for t in bagged)


def test_embeddings_are_the_same_computed_or_read_back_from_the_cache(tmp_path: Path) -> None:
    from bastion.moderation.train import EmbeddingCache, embed_texts

    class Encoder:
        """Deterministic vectors whose float32 values float16 cannot hold exactly."""

        dim = 8

        def encode(self, texts: list[str]) -> np.ndarray:
            rows = [np.random.default_rng(sum(map(ord, t))).normal(size=self.dim) for t in texts]
            return np.stack(rows).astype(np.float32)

    texts = ["a text", "another text", "a third, longer text"]
    computed = embed_texts(Encoder(), texts, EmbeddingCache(tmp_path))
    read_back = embed_texts(Encoder(), texts, EmbeddingCache(tmp_path))
    uncached = embed_texts(Encoder(), texts, None)
    assert computed.dtype == np.float32
    assert np.array_equal(computed, read_back) and np.array_equal(computed, uncached)
    assert np.abs(computed - Encoder().encode(texts)).max() < 1e-2
