"""Applying a gateway policy to moderation results: a verdict per side, redaction of spans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.core.records import ModerationResult
from bastion.gateway.settings import SEVERITY, StageRules

REDACTED = "[redacted]"


@dataclass
class StageVerdict:
    """The outcome of moderating one side: the top action, the action per flagged category, scores."""

    action: str = "allow"
    categories: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    results: list[ModerationResult] = field(default_factory=list)
    model: str | None = None

    @property
    def blocked(self) -> bool:
        """Whether the side is refused."""
        return self.action == "block"

    def merge(self, other: StageVerdict) -> None:
        """Fold another window's verdict into this one (max scores, most severe action)."""
        for key, score in other.scores.items():
            self.scores[key] = max(self.scores.get(key, 0.0), score)
        for key, action in other.categories.items():
            if SEVERITY[action] > SEVERITY[self.categories.get(key, "allow")]:
                self.categories[key] = action
        if SEVERITY[other.action] > SEVERITY[self.action]:
            self.action = other.action
        self.results.extend(other.results)
        self.model = self.model or other.model

    def openai_shape(self) -> dict[str, Any]:
        """The results in the shape of OpenAI's `moderation.input` / `moderation.output` fields."""
        model = self.model or "none"
        results = [
            {**r.model_dump(exclude={"explanations"}), "model": model, "type": "moderation_result"}
            for r in self.results
        ]
        return {"type": "moderation_results", "model": model, "results": results}

    def summary(self) -> dict[str, Any]:
        """The extension object sent to clients: the action and the flagged categories."""
        return {
            "action": self.action,
            "categories": sorted(self.categories),
            "actions": dict(self.categories),
        }


def evaluate(
    results: Sequence[ModerationResult], rules: StageRules, model: str | None = None
) -> StageVerdict:
    """The verdict for texts moderated on one side. Redact without spans becomes block."""
    verdict = StageVerdict(results=list(results), model=model)
    for result in results:
        text_spans: list[tuple[int, int]] = []
        for key, score in result.category_scores.items():
            verdict.scores[key] = max(verdict.scores.get(key, 0.0), score)
            rule = rules.rule(key)
            if rule.action == "allow":
                continue
            flagged = score >= rule.threshold if rule.threshold is not None else result.categories[key]
            if not flagged:
                continue
            action = rule.action
            if action == "redact":
                found = (result.explanations or {}).get(key) or []
                if found:
                    text_spans.extend((s.start, s.end) for s in found)
                else:
                    action = "block"
            if SEVERITY[action] > SEVERITY[verdict.categories.get(key, "allow")]:
                verdict.categories[key] = action
            if SEVERITY[action] > SEVERITY[verdict.action]:
                verdict.action = action
        verdict.spans.append(text_spans)
    return verdict


def redact(text: str, spans: Sequence[tuple[int, int]], start: int = 0) -> str:
    """`text` with every span (offset by `start`, clipped to the text) replaced by `[redacted]`."""
    clipped = sorted((max(0, s - start), min(len(text), e - start)) for s, e in spans if e - start > 0)
    merged: list[tuple[int, int]] = []
    for s, e in clipped:
        if s >= e:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    for s, e in reversed(merged):
        text = text[:s] + REDACTED + text[e:]
    return text
