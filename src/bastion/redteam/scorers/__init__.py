"""Scorers: what a response to an attack is worth (registry `scorers`).

A scorer implements one method, `score(attempt) -> Score`: a value in [0, 1] (or None when it cannot
tell) and a rationale that says why. The attempt is the shared `Attempt` record; its metadata carries
`request` (the underlying harmful or benign request), `intent`, `category`, `probe` and `converter`.

    harm      the moderation service on the response, with the request as context
    refusal   a trained refusal classifier (TF-IDF + logistic regression), string rules as fallback
    judge     an LLM judge through any chat backend with a StrongREJECT-style rubric

How the scores combine into the attempt's verdict is written once, in `verdict.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bastion.core.records import Attempt
from bastion.core.registry import Registry
from bastion.core.settings import Settings


@dataclass
class Score:
    """One scorer's verdict on one attempt: `value` in [0, 1] (None: undecided) and why."""

    value: float | None
    rationale: str


class NoOptions(BaseModel):
    """For scorers that take no options."""

    model_config = ConfigDict(extra="forbid")


class Scorer:
    """Scores attempts. Subclasses register with `@scorers.register("name")`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    plugin_name: ClassVar[str]
    meaning: ClassVar[str] = ""
    """What a value of 1.0 means, for reports."""

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        self.options = options
        self.settings = settings

    @classmethod
    def description(cls) -> str:
        """The docstring's first line."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def score(self, attempt: Attempt) -> Score:
        """The attempt's score and rationale."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Name, options (and, for trained scorers, the artefact's hash)."""
        return {"name": self.plugin_name, "options": self.options.model_dump(mode="json")}

    def close(self) -> None:
        """Release models."""


scorers: Registry[Scorer] = Registry("scorer")
