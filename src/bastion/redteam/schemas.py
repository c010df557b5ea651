"""API schemas of red-team campaign runs (tables live in `bastion.db.tables`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Rate(BaseModel):
    """k of n, the rate, and its 95% Wilson interval."""

    k: int
    n: int
    rate: float | None
    ci95: list[float]


class RunInfo(BaseModel):
    """A campaign run as listed."""

    id: str
    name: str
    status: str = Field(description="created, running, completed or interrupted (resumable).")
    target: str
    planned: int
    completed: int
    created_at: datetime
    finished_at: datetime | None = None
    asr: Rate | None = Field(None, description="Attack success rate over harmful items.")
    over_refusal: Rate | None = Field(None, description="Refusal rate over benign items (XSTest).")


class RunList(BaseModel):
    """Runs, newest first."""

    object: Literal["list"] = "list"
    data: list[RunInfo]


class RunDetail(RunInfo):
    """A run with its summary (rates by probe, category, converter; worst examples; replay specs)."""

    spec: dict[str, Any]
    summary: dict[str, Any]


class AttemptOut(BaseModel):
    """One attempt: what was sent, what came back, every score with its rationale, the verdict."""

    key: str
    seq: int
    probe: str
    converter: str
    category: str
    intent: str
    item_id: str
    prompt: str
    conversation: list[dict[str, Any]]
    response: str | None
    scores: dict[str, float | None]
    rationales: dict[str, str]
    verdict: str
    error: str | None
    latency_ms: float


class AttemptList(BaseModel):
    """A page of a run's attempts, in plan order."""

    object: Literal["list"] = "list"
    data: list[AttemptOut]
    has_more: bool
