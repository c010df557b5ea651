"""Shared domain records. Every capability reads and writes these; none invents its own copy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from bastion.core.taxonomy import CATEGORIES, CATEGORY_KEYS


class Span(BaseModel):
    """A character span of the input that drove a category's score."""

    start: int
    end: int
    text: str


class ModerationResult(BaseModel):
    """One input's verdict, in OpenAI's shape (all 13 keys in every map)."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    explanations: dict[str, list[Span]] | None = Field(
        None, description="Bastion extension (`explain=true`): spans that drove each flagged category."
    )

    @classmethod
    def build(
        cls,
        scores: dict[str, float],
        flags: dict[str, bool],
        input_type: str = "text",
        explanations: dict[str, list[Span]] | None = None,
    ) -> ModerationResult:
        """A result with every category present, in taxonomy order (built without re-validation: every
        field is made here in its final type)."""
        applied = {c.key: ([input_type] if input_type in c.input_types else []) for c in CATEGORIES}
        categories = {k: bool(flags.get(k, False)) for k in CATEGORY_KEYS}
        return cls.model_construct(
            flagged=any(categories.values()),
            categories=categories,
            category_scores={k: float(scores.get(k, 0.0)) for k in CATEGORY_KEYS},
            category_applied_input_types=applied,
            explanations=explanations,
        )

    @property
    def flagged_categories(self) -> list[str]:
        """The keys of the flagged categories, in taxonomy order."""
        return [k for k, v in self.categories.items() if v]


class Message(BaseModel):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Conversation(BaseModel):
    """An ordered exchange of messages with one model."""

    id: str
    model: str
    messages: list[Message] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Attempt(BaseModel):
    """One prompt sent to a target and what came back, with every scorer's verdict (red team, evals)."""

    prompt: str
    response: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    rationales: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    conversation: list[Message] = Field(
        default_factory=list, description="Every message exchanged (multi-turn attacks), answer included."
    )
    verdict: str | None = Field(
        None, description="The combined verdict (red team: fail, pass, over_refusal, error)."
    )


FindingStatus = Literal["new", "confirmed", "mitigated", "verified", "wont_fix"]
Severity = Literal["low", "medium", "high", "critical"]


class Finding(BaseModel):
    """A harmful behaviour someone found, tracked to a fix."""

    id: str
    category: str
    severity: Severity
    summary: str
    conversation: list[Message] = Field(default_factory=list)
    status: FindingStatus = "new"
    target: str = Field("", description="The model or target that produced the harmful output.")
    reproduction: str = Field("", description="How to reproduce it: steps, settings, sampling parameters.")
    reporter: str | None = Field(None, description="Who submitted it (an API key id).")
    source: Literal["human", "campaign"] = "human"
    resolution: str | None = Field(None, description="Why it will not be fixed (status wont_fix).")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Preference(BaseModel):
    """A human preference between responses to one prompt (for reward models and DPO)."""

    prompt: str
    chosen: str
    rejected: str
    metadata: dict[str, Any] = Field(default_factory=dict)
