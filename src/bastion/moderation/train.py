"""Training of the embedded backend's heads: frozen MiniLM embeddings, one logistic head per category.

Steps (all seeded):
1. load every source (`datasets.load_all`), cap the large ones (rows positive for a thin category are kept
   first), cut texts to `max_train_chars` (training only; serving chunks the whole text);
2. embed each text once (mean of its windows), cached under `settings.cache_dir("embeddings")` by encoder
   fingerprint and text hash;
3. source-held-out evaluation: for each source family, train on all other families and score it;
   the pooled out-of-source scores give the honest metrics;
4. the shipped heads: train on a random 80 %, choose per-category thresholds on 10 % (max F1), report
   metrics on the last 10 %, and score XSTest (never trained on) as the final any-harm test;
5. write `heads.npz` and `card.json`.

The loss is binary cross-entropy masked where a source says nothing about a category, with each row
weighted by 1/sqrt(size of its source family) so that large sets do not drown small ones.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.settings import Settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.datasets import LabeledText, load_all, load_xstest
from bastion.moderation.evaluate import binary_metrics, evaluate

Progress = Callable[[str, int, int], None]

RARE = (
    "harassment/threatening",
    "hate/threatening",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


@dataclass
class TrainSpec:
    """Everything that decides the trained heads (recorded in the card)."""

    caps: dict[str, int] = field(
        default_factory=lambda: {
            "davidson": 2000,
            "implicit-hate": 2500,
            "hatexplain": 2500,
            "toxic-spans": 3000,
            "stormfront": 1500,
            "hatemoji": 2500,
            "reddit-cssrs": 1500,
            "rtp-lx": 150,
            "diasafety": 1000,
            "benign:wiki-talk": 1200,
            "benign:counsel-chat": 700,
        }
    )
    uncapped_sources: tuple[str, ...] = ("rtp-lx:EN",)
    max_train_chars: int = 400
    epochs: int = 300
    learning_rate: float = 0.02
    weight_decay: float = 1e-4
    max_pos_weight: float = 10.0
    source_weight_power: float = 0.5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    threshold_rule: str = (
        "max F1 on the random validation split (min 5 positives, else 0.5), clipped to [0.05, 0.95]"
    )


def default_artifacts_dir() -> Path:
    """The packaged heads folder (`bastion/moderation/artifacts/embedded`)."""
    return Path(str(resources.files("bastion.moderation") / "artifacts" / "embedded"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_hash(text: str) -> str:
    """Cache key of a text."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]


class EmbeddingCache:
    """Text embeddings on disk, one shard file per run, keyed by text hash, for one encoder fingerprint."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._vectors: dict[str, np.ndarray] = {}
        for shard in sorted(folder.glob("shard-*.npz")):
            try:
                with np.load(shard) as data:
                    keys, vecs = data["keys"], data["vectors"]
            except (OSError, ValueError, KeyError):
                continue
            for key, vec in zip(keys.tolist(), vecs, strict=True):
                self._vectors[str(key)] = vec

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector, or None."""
        return self._vectors.get(key)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store new vectors in a fresh shard."""
        if not keys:
            return
        name = f"shard-{time.time_ns()}.npz"
        tmp = self.folder / f".{name}"
        with tmp.open("wb") as fh:
            np.savez(fh, keys=np.array(keys), vectors=vectors.astype(np.float16))
        tmp.rename(self.folder / name)
        for key, vec in zip(keys, vectors.astype(np.float16), strict=True):
            self._vectors[key] = vec


def embed_texts(
    encoder: Any,
    texts: Sequence[str],
    cache: EmbeddingCache | None,
    progress: Progress | None = None,
    batch: int = 512,
) -> np.ndarray:
    """Embeddings of `texts` (float32), computing only those missing from the cache."""
    keys = [text_hash(t) for t in texts]
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    missing: list[int] = []
    for i, key in enumerate(keys):
        vec = cache.get(key) if cache is not None else None
        if vec is None:
            missing.append(i)
        else:
            out[i] = vec
    missing.sort(key=lambda i: len(texts[i]))  # similar lengths per batch: less padding
    done = len(texts) - len(missing)
    if progress:
        progress("embed", done, len(texts))
    for start in range(0, len(missing), batch):
        idx = missing[start : start + batch]
        vecs = encoder.encode([texts[i] for i in idx])
        out[idx] = vecs
        if cache is not None:
            cache.add([keys[i] for i in idx], vecs)
        done += len(idx)
        if progress:
            progress("embed", done, len(texts))
    return out


def family(source: str) -> str:
    """The source family used for source-held-out folds (`rtp-lx:DE` → `rtp-lx`)."""
    return source.split(":", 1)[0]


def select_rows(rows: Sequence[LabeledText], spec: TrainSpec, rng: random.Random) -> list[LabeledText]:
    """Cap large sources; rows positive for a thin category are kept before the others."""
    by_source: dict[str, list[LabeledText]] = {}
    for row in rows:
        by_source.setdefault(row.source, []).append(row)
    chosen: list[LabeledText] = []
    for source, group in sorted(by_source.items()):
        cap = (
            None if source in spec.uncapped_sources else spec.caps.get(source, spec.caps.get(family(source)))
        )
        if cap is None or len(group) <= cap:
            chosen += group
            continue
        rare = [r for r in group if any(r.labels[k] == 1 for k in RARE)]
        rest = [r for r in group if not any(r.labels[k] == 1 for k in RARE)]
        rng.shuffle(rare)
        rng.shuffle(rest)
        keep = rare[: int(cap * 0.7)]
        chosen += keep + rest[: cap - len(keep)]
    return chosen


def label_arrays(rows: Sequence[LabeledText]) -> tuple[np.ndarray, np.ndarray]:
    """Targets [n, 13] (unknown = 0) and mask [n, 13] (1 where known)."""
    y = np.zeros((len(rows), len(CATEGORY_KEYS)), dtype=np.float32)
    m = np.zeros_like(y)
    for i, row in enumerate(rows):
        for j, key in enumerate(CATEGORY_KEYS):
            value = row.labels.get(key)
            if value is not None:
                y[i, j] = value
                m[i, j] = 1.0
    return y, m


def fit_heads(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, row_weight: np.ndarray, spec: TrainSpec, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masked, weighted logistic heads; returns weight [13, d] and bias [13] on the raw embeddings."""
    import torch

    torch.manual_seed(seed)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).float()
    yt, mt = torch.from_numpy(y), torch.from_numpy(mask)
    wt = torch.from_numpy(row_weight.astype(np.float32))[:, None] * mt
    pos = (yt * wt).sum(0)
    neg = ((1 - yt) * wt).sum(0)
    pos_weight = torch.clamp(neg / pos.clamp(min=1e-6), min=1.0, max=spec.max_pos_weight)
    linear = torch.nn.Linear(x.shape[1], y.shape[1])
    torch.nn.init.zeros_(linear.weight)
    with torch.no_grad():
        prior = (pos / (pos + neg).clamp(min=1e-6)).clamp(1e-4, 1 - 1e-4)
        linear.bias.copy_(torch.log(prior / (1 - prior)))
    optim = torch.optim.Adam(linear.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    norm = wt.sum(0).clamp(min=1.0)
    for _ in range(spec.epochs):
        optim.zero_grad()
        loss = ((loss_fn(linear(xt), yt) * wt).sum(0) / norm).sum()
        loss.backward()
        optim.step()
    w = linear.weight.detach().numpy().astype(np.float64)
    b = linear.bias.detach().numpy().astype(np.float64)
    # Fold the standardisation into the heads: w·((x - mean)/std) + b = (w/std)·x + (b - w·(mean/std)).
    w_raw = w / std[None, :]
    b_raw = b - w_raw @ mean
    return w_raw.astype(np.float32), b_raw.astype(np.float32)


def predict(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Sigmoid scores [n, 13]."""
    logits = x.astype(np.float64) @ weight.T.astype(np.float64) + bias.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))


def source_weights(rows: Sequence[LabeledText], power: float) -> np.ndarray:
    """Per-row weight 1/size(family)**power, normalised to mean 1."""
    sizes = Counter(family(r.source) for r in rows)
    w = np.array([sizes[family(r.source)] ** -power for r in rows], dtype=np.float64)
    return w / w.mean()


def choose_thresholds(scores: np.ndarray, y: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Per category, the threshold with the best F1 on the given rows (0.5 with under 5 positives)."""
    out: dict[str, float] = {}
    for j, key in enumerate(CATEGORY_KEYS):
        known = mask[:, j] > 0
        yj, sj = y[known, j], scores[known, j]
        if yj.sum() < 5:
            out[key] = 0.5
            continue
        order = np.argsort(-sj)
        tp = np.cumsum(yj[order])
        k = np.arange(1, len(order) + 1)
        f1 = 2 * tp / (k + yj.sum())
        best = int(np.argmax(f1))
        nxt = sj[order[best + 1]] if best + 1 < len(order) else sj[order[best]] - 1e-3
        out[key] = float(np.clip((sj[order[best]] + nxt) / 2, 0.05, 0.95))
    return out


def _score_maps(scores: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(CATEGORY_KEYS, map(float, row), strict=True)) for row in scores]


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def train_heads(
    settings: Settings,
    *,
    output_dir: Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    spec: TrainSpec | None = None,
    sources: Sequence[str] | None = None,
    encoder: Any = None,
) -> dict[str, Any]:
    """Train the heads, write `heads.npz` and `card.json` to `output_dir`, and return the card."""
    from bastion.moderation.encoder import Encoder

    started = time.monotonic()
    spec = spec or TrainSpec()
    out_dir = Path(output_dir) if output_dir is not None else default_artifacts_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)

    def step(name: str, done: int, total: int) -> None:
        if progress is not None:
            progress(name, done, total)

    step("load", 0, 1)
    loaded = load_all(settings.data_dir, sources)
    rows = select_rows(loaded.rows, spec, rng)
    step("load", 1, 1)
    encoder = encoder or Encoder()
    cache = EmbeddingCache(settings.cache_dir("embeddings", encoder.fingerprint[:16]))
    texts = [r.text[: spec.max_train_chars] for r in rows]
    x = embed_texts(encoder, texts, cache, step)
    y, mask = label_arrays(rows)
    weights = source_weights(rows, spec.source_weight_power)
    families = sorted({family(r.source) for r in rows})
    fam_of = np.array([family(r.source) for r in rows])

    # Source-held-out: every family is scored by heads that never saw it.
    oos = np.zeros_like(y, dtype=np.float64)
    for k, fam in enumerate(families if len(families) > 1 else []):
        held = fam_of == fam
        w, b = fit_heads(x[~held], y[~held], mask[~held], weights[~held], spec, seed)
        oos[held] = predict(x[held], w, b)
        step("source folds", k + 1, len(families))

    # Shipped heads: random 80/10/10 split over all sources.
    order = np_rng.permutation(len(rows))
    n_val = int(len(rows) * spec.val_fraction)
    n_test = int(len(rows) * spec.test_fraction)
    val_idx, test_idx, train_idx = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    step("final heads", 0, 1)
    weight, bias = fit_heads(x[train_idx], y[train_idx], mask[train_idx], weights[train_idx], spec, seed)
    step("final heads", 1, 1)
    thresholds = choose_thresholds(predict(x[val_idx], weight, bias), y[val_idx], mask[val_idx])

    labels_all = [r.labels for r in rows]
    metrics_oos = evaluate(_score_maps(oos), labels_all, thresholds) if len(families) > 1 else {}
    test_scores = predict(x[test_idx], weight, bias)
    metrics_test = evaluate(_score_maps(test_scores), [labels_all[i] for i in test_idx], thresholds)
    per_family: dict[str, Any] = {}
    for fam in families if metrics_oos else []:
        idx = np.nonzero(fam_of == fam)[0]
        m = evaluate(_score_maps(oos[idx]), [labels_all[i] for i in idx], thresholds)["any"]
        per_family[fam] = {k: m[k] for k in ("n", "positives", "auprc", "roc_auc", "precision", "recall")}

    xs_texts, xs_labels, xs_path = load_xstest(settings.data_dir)
    xs_chunks = encoder.encode_chunks(xs_texts)
    xs_scores, _ = xs_chunks.pool_max(predict(xs_chunks.embeddings, weight, bias), len(xs_texts))
    # XSTest's unsafe prompts carry no category: score the any-harm task directly.
    xs_y = np.array(xs_labels)
    thr = np.array([thresholds[k] for k in CATEGORY_KEYS])
    xs_any = binary_metrics(xs_y, xs_scores.max(axis=1), 0.0)
    xs_flag = binary_metrics(xs_y, (xs_scores - thr).max(axis=1), 0.0)
    xs_any.update({k: xs_flag[k] for k in ("precision", "recall", "f1", "fpr", "tp", "fp", "fn")})
    xs_any["threshold"] = "per category"

    np.savez(
        out_dir / "heads.npz",
        weight=weight,
        bias=bias,
        categories=np.array(CATEGORY_KEYS),
        encoder_fingerprint=np.array(encoder.fingerprint),
    )
    data_root = settings.data_dir.resolve()
    data_files: dict[str, str] = {}
    for files in loaded.files.values():
        for path in files:
            resolved = path.resolve()
            name = str(resolved.relative_to(data_root)) if resolved.is_relative_to(data_root) else path.name
            data_files[name] = sha256_file(path)
    xs_resolved = xs_path.resolve()
    data_files[
        str(xs_resolved.relative_to(data_root)) if xs_resolved.is_relative_to(data_root) else "xstest"
    ] = sha256_file(xs_path)
    n_pos = {k: int(((y[:, j] == 1) & (mask[:, j] > 0)).sum()) for j, k in enumerate(CATEGORY_KEYS)}
    n_neg = {k: int(((y[:, j] == 0) & (mask[:, j] > 0)).sum()) for j, k in enumerate(CATEGORY_KEYS)}
    card: dict[str, Any] = {
        "model": "bastion-embedded heads: one logistic head per category on frozen MiniLM embeddings",
        "created_unix": int(time.time()),
        "seed": seed,
        "heads_sha256": sha256_file(out_dir / "heads.npz"),
        "encoder": {
            "name": encoder.model_path.parent.name
            if encoder.model_path.name == "model"
            else encoder.model_path.name,
            "fingerprint": encoder.fingerprint,
            "max_length": encoder.max_length,
            "stride": encoder.stride,
            "pooling": "mean over tokens, L2-normalised; serving takes the max score over 256-token windows",
        },
        "spec": asdict(spec),
        "thresholds": thresholds,
        "threshold_rule": spec.threshold_rule,
        "splits": {
            "source_held_out": "each source family scored by heads trained on all other families "
            "(leave-one-family-out), pooled; P/R/F1 use the shipped thresholds",
            "random_test": f"random {spec.test_fraction:.0%} of rows, all sources; heads trained on "
            f"{1 - spec.val_fraction - spec.test_fraction:.0%}, thresholds on another "
            f"{spec.val_fraction:.0%}",
            "xstest": "XSTest prompts (never trained on): 200 unsafe vs 250 safe look-alikes, any-harm only",
        },
        "metrics": {
            "source_held_out": metrics_oos,
            "random_test": metrics_test,
            "xstest_any_harm": xs_any,
            "source_held_out_any_by_family": per_family,
        },
        "data": {
            "files_sha256": dict(sorted(data_files.items())),
            "rows_loaded_per_source": dict(sorted(Counter(r.source for r in loaded.rows).items())),
            "rows_used_per_source": dict(sorted(Counter(r.source for r in rows).items())),
            "rows_used": len(rows),
            "positives_per_category": n_pos,
            "negatives_per_category": n_neg,
        },
        "training_seconds": round(time.monotonic() - started, 1),
        "notes": [
            "Labels are mapped from public data sets by datasets.py; several are topic labels or keyword "
            "rules "
            "(AILuminate, AART, AdvBench, DangerousQA) and are noisy.",
            "violence/graphic has team-written positives only (artifacts/seed/team_written.json).",
            "Any-harm negatives are rows with no positive label and at least one known negative.",
        ],
    }
    card = _round(card)
    (out_dir / "card.json").write_text(
        json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    step("done", 1, 1)
    return card
