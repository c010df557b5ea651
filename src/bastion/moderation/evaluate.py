"""Metrics for moderation scores: per category and any-category, with unknown labels masked.

`evaluate(scores, labels, thresholds)` takes per-text score maps and label maps (1, 0, or None/missing =
unknown) and returns, for each category and for `any` (score = max over categories; label 1 if any
category is 1, 0 if none is 1 and at least one is 0), the average precision (AUPRC), ROC-AUC, and
precision / recall / F1 at the thresholds. A category without both positives and negatives reports
null for the ranking metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import InvalidRequest
from bastion.core.taxonomy import CATEGORY_KEYS, check_category

ANY = "any"


def load_eval_rows(path: str | Path) -> tuple[list[str], list[dict[str, int | None]]]:
    """Read JSONL rows `{"text": ..., "labels": {category: 0|1}}`; categories left out are unknown."""
    texts: list[str] = []
    labels: list[dict[str, int | None]] = []
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest(f"cannot read evaluation file {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InvalidRequest(f"{path}:{number}: expected an object with a string 'text'")
        raw = row.get("labels", {})
        if not isinstance(raw, dict):
            raise InvalidRequest(f"{path}:{number}: 'labels' must be an object of category: 0|1")
        parsed: dict[str, int | None] = {}
        for key, value in raw.items():
            check_category(key)
            if value is not None and value not in (0, 1, True, False):
                raise InvalidRequest(
                    f"{path}:{number}: label for {key!r} must be 0, 1 or null, got {value!r}"
                )
            parsed[key] = None if value is None else int(value)
        texts.append(row["text"])
        labels.append(parsed)
    return texts, labels


def average_precision(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the precision-recall curve as the mean precision at each positive (ties grouped)."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return None
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: precision is measured after the whole tie group.
    ends = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[ends]
    fp = (ends + 1) - tp
    precision = tp / (tp + fp)
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(precision * recall_step))


def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC-AUC via the rank-sum statistic (ties count one half)."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    s_sorted = s[order]
    i = 0
    while i < len(s_sorted):
        j = i
        while j + 1 < len(s_sorted) and s_sorted[j + 1] == s_sorted[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _at_threshold(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, Any]:
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    fpr = fp / int(np.sum(y == 0)) if np.any(y == 0) else None
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": fpr, "tp": tp, "fp": fp, "fn": fn}


def binary_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUPRC, ROC-AUC and thresholded metrics for one binary task."""
    y = np.asarray(y, dtype=np.int64)
    s = np.asarray(s, dtype=np.float64)
    out: dict[str, Any] = {
        "n": len(y),
        "positives": int(y.sum()),
        "auprc": average_precision(y, s),
        "roc_auc": roc_auc(y, s),
        "threshold": threshold,
    }
    out.update(_at_threshold(y, s, threshold))
    return out


def any_label(labels: Mapping[str, int | None]) -> int | None:
    """1 if any category is 1; 0 if none is 1 and at least one is 0; else None."""
    values = [labels.get(k) for k in CATEGORY_KEYS]
    if any(v == 1 for v in values):
        return 1
    return 0 if any(v == 0 for v in values) else None


def evaluate(
    scores: Sequence[Mapping[str, float]],
    labels: Sequence[Mapping[str, int | None]],
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    """Per-category and any-category metrics; see the module docstring."""
    if len(scores) != len(labels):
        raise InvalidRequest(f"{len(scores)} score rows but {len(labels)} label rows")
    result: dict[str, Any] = {}
    score_matrix = np.array([[float(s.get(k, 0.0)) for k in CATEGORY_KEYS] for s in scores]).reshape(
        len(scores), len(CATEGORY_KEYS)
    )
    for j, key in enumerate(CATEGORY_KEYS):
        known = [i for i, lab in enumerate(labels) if lab.get(key) is not None]
        y = np.array([labels[i][key] for i in known], dtype=np.int64)
        result[key] = binary_metrics(y, score_matrix[known, j], float(thresholds.get(key, 0.5)))
    any_known = [(i, v) for i, lab in enumerate(labels) if (v := any_label(lab)) is not None]
    idx = [i for i, _ in any_known]
    y_any = np.array([v for _, v in any_known], dtype=np.int64)
    # A text is flagged when any category passes its threshold: compare score/threshold margins.
    thr = np.array([float(thresholds.get(k, 0.5)) for k in CATEGORY_KEYS])
    any_score = score_matrix[idx].max(axis=1) if idx else np.zeros(0)
    any_flag_margin = (score_matrix[idx] - thr).max(axis=1) if idx else np.zeros(0)
    metrics = binary_metrics(y_any, any_score, 0.0)
    metrics.update(_at_threshold(y_any, any_flag_margin, 0.0))
    metrics["threshold"] = "per category"
    result[ANY] = metrics
    return result


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float | None:
    """ECE: the |observed rate - mean score| over equal-width score bins, weighted by bin size."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return None
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += abs(float(y[sel].mean()) - float(p[sel].mean())) * int(sel.sum())
    return total / len(y)


def calibration_errors(
    scores: np.ndarray, labels: Sequence[Mapping[str, int | None]], bins: int = 15
) -> dict[str, Any]:
    """ECE per category (known rows only) for a score matrix [n, 13] in taxonomy order."""
    out: dict[str, Any] = {}
    for j, key in enumerate(CATEGORY_KEYS):
        known = [i for i, lab in enumerate(labels) if lab.get(key) is not None]
        y = np.array([labels[i][key] for i in known], dtype=np.float64)
        out[key] = expected_calibration_error(y, scores[known, j], bins) if known else None
    return out


def functional_tests_path() -> Path:
    """The team-written hate-speech functional tests shipped with the package."""
    from importlib import resources

    return Path(str(resources.files("bastion.moderation") / "artifacts" / "functional_tests.jsonl"))


def load_functional_tests(path: Path | None = None) -> list[dict[str, Any]]:
    """Rows `{"id", "function", "text", "label": "hateful"|"non-hateful"}`; [] when the file is absent."""
    path = path or functional_tests_path()
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if "text" in r and "label" in r]


def functional_report(
    cases: Sequence[Mapping[str, Any]], scores: Sequence[Mapping[str, float]], thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """Accuracy per function (and overall): a case is predicted hateful when its hate score passes the
    hate threshold; the expected label is the case's `label`."""
    by_function: dict[str, list[bool]] = {}
    for case, score in zip(cases, scores, strict=True):
        predicted = float(score.get("hate", 0.0)) >= float(thresholds.get("hate", 0.5))
        correct = predicted == (case["label"] == "hateful")
        by_function.setdefault(f"{case['function']} ({case['label']})", []).append(correct)
    table = {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(by_function.items())}
    everything = [c for v in by_function.values() for c in v]
    return {
        "by_function": table,
        "overall": {"n": len(everything), "accuracy": sum(everything) / len(everything)},
    }
