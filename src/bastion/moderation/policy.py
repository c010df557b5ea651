"""How backend scores become a verdict: combine by max, apply thresholds, honour allow lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bastion.core.records import ModerationResult, Span
from bastion.core.taxonomy import CATEGORY_KEYS, SUBCATEGORIES
from bastion.moderation.backends.base import BackendScores
from bastion.moderation.explain import join_spans


def combine(
    text: str,
    per_backend: Sequence[BackendScores],
    backend_thresholds: Sequence[dict[str, float]],
    policy_thresholds: dict[str, float],
    explain: bool = False,
) -> ModerationResult:
    """One text's verdict from each backend's scores.

    - score: the max over backends; a parent category is at least as high as its subcategories
      (`hate/threatening` implies `hate`).
    - flag: with a policy threshold for the category, combined score >= it; otherwise any backend's
      score >= that backend's own threshold (or the backend's own flag, when it reports flags).
    - an allow-list match for the category clears its flag, whatever the scores.
    - explanations: each flagged category's spans from every backend, joined; a parent with none of its
      own takes those of its flagged subcategories.
    """
    scores = dict.fromkeys(CATEGORY_KEYS, 0.0)
    flags = dict.fromkeys(CATEGORY_KEYS, False)
    allowed: set[str] = set()
    spans: dict[str, list[tuple[int, int]]] = {}
    for result, thresholds in zip(per_backend, backend_thresholds, strict=True):
        allowed |= result.allowed
        found_scores, found_flags = result.scores, result.flags
        for key in CATEGORY_KEYS:  # `backend_flags` inlined: this runs twice per gateway turn
            score = found_scores.get(key, 0.0)
            if not 0.0 <= score <= 1.0:  # out of range, or NaN
                score = _clip(score)
            if score > scores[key]:
                scores[key] = score
            if found_flags is not None:
                if found_flags.get(key, False):
                    flags[key] = True
            elif score >= thresholds.get(key, 0.5):
                flags[key] = True
        for key, found in result.spans.items():
            spans.setdefault(key, []).extend(found)
    for child, parent in SUBCATEGORIES:
        if scores[child] > scores[parent]:
            scores[parent] = scores[child]
    for key, threshold in policy_thresholds.items():
        flags[key] = scores[key] >= threshold
    for child, parent in SUBCATEGORIES:
        if flags[child]:
            flags[parent] = True
    for key in allowed:
        flags[key] = False
    explanations = None
    if explain:
        inherited: dict[str, list[tuple[int, int]]] = {}
        # A parent flagged only through a subcategory shows the child's spans.
        for child, parent in SUBCATEGORIES:
            if flags[child] and not spans.get(parent):
                inherited.setdefault(parent, []).extend(spans.get(child, []))
        spans.update(inherited)
        explanations = {
            key: [Span(start=s, end=e, text=text[s:e]) for s, e in join_spans(spans.get(key, []))]
            for key in CATEGORY_KEYS
            if flags[key]
        }
    return ModerationResult.build(scores, flags, explanations=explanations)


def backend_flags(result: BackendScores, thresholds: Mapping[str, float]) -> list[str]:
    """The categories one backend flags on its own (the rule `combine` applies to each backend): its own
    verdicts when it reports flags, else those whose score (clipped to [0, 1]) reaches its threshold."""
    if result.flags is not None:
        return [key for key in CATEGORY_KEYS if result.flags.get(key, False)]
    out = []
    for key in CATEGORY_KEYS:
        score = result.scores.get(key, 0.0)
        if not 0.0 <= score <= 1.0:
            score = _clip(score)
        if score >= thresholds.get(key, 0.5):
            out.append(key)
    return out


def _clip(value: float) -> float:
    if value != value:  # NaN from a misbehaving backend counts as 0
        return 0.0
    return min(1.0, max(0.0, float(value)))
