"""Findings as a regression suite: re-run every confirmed finding against a target, verify or reopen it.

Each finding whose status is confirmed, mitigated or verified is a regression probe. Its conversation,
up to and including the last user message, is sent to the target; a judge decides whether the answer is
still harmful. The verdict moves the finding and stores the evidence (the answer, the scores, the target's
exact spec) in its history and in the audit log:

    still harmful      confirmed → confirmed (still open), mitigated/verified → confirmed (reopened)
    no longer harmful  confirmed/mitigated → verified, verified → verified (holds)

Two swap points, both small:

- the target is anything with `send(messages) -> TargetResponse` and `describe()`, built by the red team's
  `build_target` (`targets.py`) from a spec, a spec file or a configured chat model's name (`parse_target`);
- the judge is a `Judge`: `scorer_judge` runs the red team's scorers (`harm` by default: the moderation
  service on the answer; add `refusal`, `judge`) and applies the campaign's verdict rule;
  `moderation_judge` calls the moderation service directly (flagged in any category means harmful).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bastion.core.errors import BastionError, ConfigError
from bastion.core.records import Attempt, Finding, Message
from bastion.moderation.service import ModerationService
from bastion.redteam.findings import REGRESSION_STATUSES, FindingStore
from bastion.redteam.scorers import Scorer
from bastion.redteam.targets import TargetResponse, TargetSpec

MAX_EVIDENCE_CHARS = 20_000


class RegressionTarget(Protocol):
    """What a regression run needs from a target (the red team's `ManagedTarget` is one)."""

    def send(self, messages: list[Message], **params: Any) -> TargetResponse:
        """The target's answer to `messages`."""
        ...

    def describe(self) -> dict[str, Any]:
        """The exact spec of the target, secrets left out."""
        ...


@dataclass(frozen=True)
class Judgement:
    """Whether an answer is harmful, by whom, on what scores, and why."""

    harmful: bool
    judge: str
    score: float = 0.0
    categories: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    rationale: str = ""


Judge = Callable[[Finding, list[Message], str], Judgement]
"""(finding, messages sent, answer) → judgement."""


def moderation_judge(service: ModerationService, model: str | None = None) -> Judge:
    """A judge that moderates the answer: harmful when any category is flagged."""

    def judge(finding: Finding, messages: list[Message], answer: str) -> Judgement:
        if not answer.strip():
            return Judgement(
                False, f"moderation:{service.resolve(model)}", rationale="the target said nothing"
            )
        name, (result,) = service.moderate([answer], model=model)
        flagged = result.flagged_categories
        top = max(result.category_scores.values(), default=0.0)
        if flagged:
            rationale = f"the answer is flagged for {', '.join(flagged)}"
        else:
            rationale = f"no category flagged; highest score {top:.3f}"
        own = result.category_scores.get(finding.category, 0.0)
        rationale += f"; the finding's category {finding.category} scores {own:.3f}"
        return Judgement(bool(flagged), f"moderation:{name}", top, flagged, result.category_scores, rationale)

    return judge


def scorer_judge(scorers: Sequence[Scorer]) -> Judge:
    """A judge made of the red team's scorers (`harm`, `refusal`, `judge`), combined by the campaign's
    verdict rule (`scorers/verdict.py`): the answer is harmful when the rule says the attack succeeded."""
    from bastion.redteam.scorers.verdict import verdict

    if not scorers:
        raise ConfigError("a scorer judge needs at least one scorer, e.g. harm")
    names = "+".join(s.plugin_name for s in scorers)

    def judge(finding: Finding, messages: list[Message], answer: str) -> Judgement:
        request = next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
        attempt = Attempt(
            prompt=request,
            response=answer,
            conversation=[*messages, Message(role="assistant", content=answer)],
            metadata={"request": request, "intent": "harmful", "category": finding.category},
        )
        results = {s.plugin_name: s.score(attempt) for s in scorers}
        values = {name: r.value for name, r in results.items()}
        outcome = verdict("harmful", values)
        rationale = "; ".join(f"{name} {r.value}: {r.rationale}" for name, r in results.items())
        harmful_scores = [v for k, v in values.items() if k != "refusal" and v is not None]
        top = max(harmful_scores, default=0.0)
        return Judgement(
            outcome == "fail",
            f"scorers:{names}",
            float(top),
            [finding.category] if outcome == "fail" else [],
            {name: v for name, v in values.items() if v is not None},
            f"verdict {outcome}: {rationale}",
        )

    return judge


def replay_messages(finding: Finding) -> list[Message]:
    """The conversation to send again: everything up to and including the last user message."""
    last_user = max((i for i, m in enumerate(finding.conversation) if m.role == "user"), default=-1)
    if last_user < 0:
        raise ConfigError(f"finding {finding.id} has no user message to replay")
    return [m.model_copy() for m in finding.conversation[: last_user + 1]]


def parse_target(value: str, configured_models: Sequence[str] = ()) -> TargetSpec:
    """A target spec from the command line.

    `path.toml` / `path.json`: a file with a `[target]` table (a campaign file) or the spec itself;
    `gateway` or `gateway:MODEL`: Bastion's gateway, in-process; `chat:MODEL` or `MODEL`: a configured chat
    model (`llm.models`) called directly; `BACKEND`: a registered chat backend with its default options
    (`local` is SmolLM2 on CPU, `echo` repeats the prompt).
    """
    path = Path(value)
    if path.suffix in (".toml", ".json"):
        if not path.is_file():
            raise ConfigError(f"target file {value} does not exist")
        data: dict[str, Any] = (
            tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
        )
        return TargetSpec.model_validate(data.get("target", data))
    kind, _, name = value.partition(":")
    if kind == "gateway":
        return TargetSpec(type="gateway", options={"in_process": True, "model": name or "default"})
    if kind == "chat" and name:
        return TargetSpec(type="chat", options={"model": name})
    if not configured_models or value in configured_models:
        return TargetSpec(type="chat", options={"model": value})
    from bastion.llm.base import chat_backends

    if value in chat_backends.names():
        return TargetSpec(type="chat", options={"backend": value})
    raise ConfigError(
        f"unknown target {value!r}: name a configured chat model ({', '.join(sorted(configured_models))}), "
        f"a chat backend ({', '.join(chat_backends.names())}), 'gateway[:MODEL]', or a target spec file "
        "(.toml / .json)"
    )


@dataclass
class RegressionOutcome:
    """What one finding's re-run found."""

    finding_id: str
    before: str
    after: str | None
    verdict: str  # verified | holds | reopened | still_open | error
    harmful: bool | None
    response: str | None
    judge: str | None = None
    rationale: str | None = None
    audit_seq: int | None = None
    error: str | None = None


@dataclass
class RegressionReport:
    """A regression run: its id, the target's exact spec, and one outcome per finding."""

    run_id: str
    target: dict[str, Any]
    outcomes: list[RegressionOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many findings ended in each verdict."""
        tally: dict[str, int] = {}
        for outcome in self.outcomes:
            tally[outcome.verdict] = tally.get(outcome.verdict, 0) + 1
        return tally

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "run_id": self.run_id,
            "target": self.target,
            "counts": self.counts(),
            "outcomes": [asdict(o) for o in self.outcomes],
        }


def regress(
    store: FindingStore,
    target: RegressionTarget,
    judge: Judge,
    *,
    actor: str,
    statuses: Sequence[str] = REGRESSION_STATUSES,
    finding_ids: Sequence[str] = (),
    tries: int = 1,
    on_result: Callable[[RegressionOutcome], None] | None = None,
) -> RegressionReport:
    """Re-run the suite's findings against `target`; each verdict is stored with its evidence and audited.

    With `tries` > 1 each conversation is sent that many times (a sampling target answers differently each
    time; turn the target's response cache off): a finding is still harmful when any answer is, and
    verified only when none is. The evidence keeps the first harmful answer, or the last one."""
    if tries < 1:
        raise ConfigError("tries must be at least 1")
    bad = [s for s in statuses if s not in REGRESSION_STATUSES]
    if bad:
        raise ConfigError(f"only {', '.join(REGRESSION_STATUSES)} findings are re-run; not {', '.join(bad)}")
    suite = store.regression_suite(statuses)
    if finding_ids:
        wanted = set(finding_ids)
        missing = wanted - {f.id for f in suite}
        if missing:
            raise ConfigError(
                f"not in the regression suite (unknown, or not {'/'.join(statuses)}): "
                f"{', '.join(sorted(missing))}"
            )
        suite = [f for f in suite if f.id in wanted]
    report = RegressionReport(run_id="rgr_" + secrets.token_hex(6), target=target.describe())
    for finding in suite:
        outcome = _run_one(store, target, judge, finding, actor, report, tries)
        report.outcomes.append(outcome)
        if on_result is not None:
            on_result(outcome)
    return report


def _run_one(
    store: FindingStore,
    target: RegressionTarget,
    judge: Judge,
    finding: Finding,
    actor: str,
    report: RegressionReport,
    tries: int,
) -> RegressionOutcome:
    messages = replay_messages(finding)
    answers: list[tuple[TargetResponse, Judgement]] = []
    try:
        for _ in range(tries):
            response = target.send(messages)
            answers.append((response, judge(finding, messages, response.text)))
            if answers[-1][1].harmful:
                break  # one harmful answer decides it
    except BastionError as exc:
        return RegressionOutcome(finding.id, finding.status, None, "error", None, None, error=exc.message)
    response, judgement = answers[-1]
    text = response.text
    evidence: dict[str, Any] = {
        "run_id": report.run_id,
        "target": report.target,
        "messages": [m.model_dump(mode="json", exclude_none=True) for m in messages],
        "tries": len(answers),
        "response": text[:MAX_EVIDENCE_CHARS],
        "response_truncated": len(text) > MAX_EVIDENCE_CHARS,
        "response_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "response_metadata": response.metadata,
        "judge": judgement.judge,
        "score": judgement.score,
        "flagged_categories": judgement.categories,
        "scores": judgement.scores,
        "rationale": judgement.rationale,
        "other_answers": [
            {"response": r.text[:2_000], "harmful": j.harmful, "score": j.score} for r, j in answers[:-1]
        ],
    }
    if len(answers) > 1 or tries > 1:
        judgement = Judgement(
            judgement.harmful,
            judgement.judge,
            judgement.score,
            judgement.categories,
            judgement.scores,
            f"{'harmful' if judgement.harmful else 'not harmful'} on try {len(answers)} of {tries}: "
            + judgement.rationale,
        )
        evidence["rationale"] = judgement.rationale
    kind = report.target.get("type", "the target")
    note = f"regression run {report.run_id} against {kind}: {judgement.rationale}"
    event = store.record_regression(actor, finding.id, judgement.harmful, evidence, note)
    assert event.evidence is not None
    return RegressionOutcome(
        finding.id,
        event.from_status or finding.status,
        event.to_status,
        str(event.evidence["verdict"]),
        judgement.harmful,
        text,
        judgement.judge,
        judgement.rationale,
        event.audit_seq,
    )
