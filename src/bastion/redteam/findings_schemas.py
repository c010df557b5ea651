"""Request and response models of the findings routes (`/v1/redteam/findings`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.core.fields import PlainText
from bastion.core.records import Finding, FindingStatus, Message, Severity
from bastion.core.taxonomy import CATEGORY_KEYS


class FindingCreate(BaseModel):
    """`POST /v1/redteam/findings`: what a red teamer found."""

    model_config = ConfigDict(extra="forbid")

    summary: PlainText = Field(
        min_length=1, max_length=500, description="One line: what the model did wrong."
    )
    category: str = Field(description="One of the 13 taxonomy keys, e.g. 'illicit/violent'.")
    severity: Severity = Field(description="low, medium, high or critical.")
    conversation: list[Message] = Field(
        min_length=1,
        max_length=200,
        description="The exchange that shows it, in order; at least one user message.",
    )
    target: PlainText = Field("", max_length=200, description="The model or target that answered.")
    reproduction: PlainText = Field(
        "", max_length=20_000, description="How to reproduce: steps, settings, sampling parameters."
    )

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value not in CATEGORY_KEYS:
            raise ValueError(f"unknown category {value!r}; expected one of: {', '.join(CATEGORY_KEYS)}")
        return value

    @field_validator("conversation")
    @classmethod
    def _has_user_turn(cls, value: list[Message]) -> list[Message]:
        if not any(m.role == "user" and (m.content or "").strip() for m in value):
            raise ValueError("the conversation needs at least one user message with text")
        return value


class TriageRequest(BaseModel):
    """`POST /v1/redteam/findings/{id}/triage`: move a finding to another status."""

    model_config = ConfigDict(extra="forbid")

    status: FindingStatus = Field(description="The new status.")
    reason: PlainText | None = Field(
        None, max_length=5_000, description="Why; required when the status is wont_fix."
    )


class CommentCreate(BaseModel):
    """`POST /v1/redteam/findings/{id}/comments`."""

    model_config = ConfigDict(extra="forbid")

    body: PlainText = Field(min_length=1, max_length=10_000)


class Comment(BaseModel):
    """A comment on a finding."""

    id: str
    finding_id: str
    author: str
    body: str
    created_at: datetime


class FindingEvent(BaseModel):
    """One step of a finding's history; regression verdicts carry their evidence."""

    id: int
    finding_id: str
    created_at: datetime
    actor: str
    action: Literal["submit", "triage", "regress"]
    from_status: FindingStatus | None
    to_status: FindingStatus
    reason: str | None = None
    evidence: dict[str, Any] | None = None
    audit_seq: int | None = Field(None, description="The audit log event that records this step.")


class FindingDetail(Finding):
    """A finding with its history and comments."""

    history: list[FindingEvent] = Field(default_factory=list)
    comments: list[Comment] = Field(default_factory=list)


class FindingList(BaseModel):
    """A page of findings, newest first."""

    object: Literal["list"] = "list"
    data: list[Finding]
