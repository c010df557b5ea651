"""Findings from people, tracked to a fix: submission, triage, comments and regression verdicts.

Every step is written to the finding's history and to the tamper-evident audit log.

    new ──► confirmed ──► mitigated ──► verified
     │        │   ▲           │   │         │
     │        │   └── reopen ─┴───┼─────────┘   (a reviewer, or a regression run that still sees harm)
     └────────┴───────────────────┴──► wont_fix (a reason is required) ──► confirmed (reconsidered)

A regression run (`findings_regress.py`) may also verify a confirmed finding directly: its evidence shows
the target no longer produces the harmful output.

Who may do what: a `red_teamer` submits, comments on and sees its own findings — those of its account,
from any of its keys (another's is 404, as if it did not exist); `safety_reviewer` and `admin` see every
finding and triage.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.auth.keys import Principal, Role
from bastion.core.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from bastion.core.records import Finding, FindingStatus, Message
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.db.tables import ApiKey, FindingCommentRow, FindingEventRow, FindingRow, utcnow
from bastion.privacy.audit import AuditLog
from bastion.redteam.findings_schemas import (
    Comment,
    FindingCreate,
    FindingDetail,
    FindingEvent,
)

STATUSES: tuple[FindingStatus, ...] = ("new", "confirmed", "mitigated", "verified", "wont_fix")

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"confirmed", "wont_fix"}),
    "confirmed": frozenset({"mitigated", "wont_fix"}),
    "mitigated": frozenset({"verified", "confirmed", "wont_fix"}),
    "verified": frozenset({"confirmed"}),
    "wont_fix": frozenset({"confirmed"}),
}
"""Triage moves a reviewer may make: current status → allowed next statuses."""

REGRESSION_STATUSES: tuple[FindingStatus, ...] = ("confirmed", "mitigated", "verified")
"""Findings in these statuses form the regression suite: each was confirmed once."""

REVIEWERS = frozenset({Role.ADMIN, Role.SAFETY_REVIEWER})
PARTICIPANTS = REVIEWERS | {Role.RED_TEAMER}

AUDIT_SUBMIT = "redteam.finding.submit"
AUDIT_TRIAGE = "redteam.finding.triage"
AUDIT_COMMENT = "redteam.finding.comment"
AUDIT_REGRESS = "redteam.finding.regress"


def new_id(prefix: str) -> str:
    """A random identifier such as `fnd_1a2b3c4d5e6f7a8b`."""
    return f"{prefix}_{secrets.token_hex(8)}"


def audit_log_for(settings: Settings, db: Database) -> AuditLog:
    """The audit log of this deployment: its key ring (master key) and checkpoint signing key."""
    from bastion.privacy.audit import load_signing_key
    from bastion.privacy.crypto import KeyRing, load_master_key

    privacy = settings.privacy
    keyring = KeyRing(db, load_master_key(privacy, env=settings.env, home=settings.home))
    return AuditLog(db, keyring, load_signing_key(privacy, env=settings.env, home=settings.home))


def _record(row: FindingRow) -> Finding:
    return Finding(
        id=row.id,
        category=row.category,
        severity=row.severity,
        summary=row.summary,
        conversation=[Message.model_validate(m) for m in row.conversation],
        status=row.status,
        target=row.target,
        reproduction=row.reproduction,
        reporter=row.reporter,
        source=row.source,
        resolution=row.resolution,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _event(row: FindingEventRow) -> FindingEvent:
    return FindingEvent(
        id=row.id,
        finding_id=row.finding_id,
        created_at=row.created_at,
        actor=row.actor,
        action=row.action,
        from_status=row.from_status,
        to_status=row.to_status,
        reason=row.reason,
        evidence=row.evidence,
        audit_seq=row.audit_seq,
    )


def _comment(row: FindingCommentRow) -> Comment:
    return Comment(
        id=row.id, finding_id=row.finding_id, author=row.author, body=row.body, created_at=row.created_at
    )


def check_transition(current: str, wanted: str, reason: str | None) -> None:
    """Raise unless a reviewer may move a finding from `current` to `wanted` (with `reason`)."""
    if wanted not in STATUSES:
        raise InvalidRequest(
            f"unknown status {wanted!r}; expected one of: {', '.join(STATUSES)}", param="status"
        )
    if wanted == "wont_fix" and not (reason or "").strip():
        raise InvalidRequest("a finding marked wont_fix needs a reason; send one in 'reason'", param="reason")
    allowed = TRANSITIONS[current]
    if wanted not in allowed:
        raise Conflict(
            f"a {current} finding cannot become {wanted}; from {current} it can become: "
            f"{', '.join(sorted(allowed))}",
            param="status",
            code="invalid_transition",
        )


def regression_verdict(before: str, harmful: bool) -> tuple[str, str]:
    """A regression run's (new status, verdict) for a finding that was `before` and is (not) `harmful`.

    still harmful: confirmed stays confirmed (`still_open`), mitigated/verified → confirmed (`reopened`);
    no longer harmful: → verified (`verified`), or stays verified (`holds`)."""
    if harmful:
        return "confirmed", ("still_open" if before == "confirmed" else "reopened")
    return "verified", ("holds" if before == "verified" else "verified")


class FindingStore:
    """Findings in the database, their workflow, and the audit trail of every step."""

    def __init__(self, db: Database, audit: AuditLog, *, clock: Callable[[], Any] = utcnow) -> None:
        self.db = db
        self.audit = audit
        self.clock = clock

    # -- visibility ----------------------------------------------------------------------------------------

    @staticmethod
    def _require(actor: Principal, roles: Iterable[Role], what: str) -> None:
        allowed = frozenset(roles)
        if actor.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise PermissionDenied(f"{what} needs one of the roles: {names}; your key is {actor.role.value}")

    @staticmethod
    def _owner(session: Session, actor: Principal) -> str:
        """Whose findings the actor's are: the account its key belongs to (any of its keys sees them),
        or the key itself when it belongs to none (the CLI operator, auth off)."""
        key = session.get(ApiKey, actor.key_id)
        return key.user_id if key is not None and key.user_id else actor.key_id

    def _visible(
        self, session: Session, actor: Principal, row: FindingRow | None, finding_id: str
    ) -> FindingRow:
        if row is None or (actor.role not in REVIEWERS and row.owner != self._owner(session, actor)):
            raise NotFound(
                f"no finding with id {finding_id!r}; list yours with GET /v1/redteam/findings",
                param="finding_id",
            )
        return row

    def _load(self, session: Session, actor: Principal, finding_id: str, *, lock: bool = False) -> FindingRow:
        self._require(actor, PARTICIPANTS, "findings")
        row = session.get(FindingRow, finding_id, with_for_update=lock)
        return self._visible(session, actor, row, finding_id)

    # -- audit ---------------------------------------------------------------------------------------------

    def _audit(self, event_id: int | None, actor: str, action: str, finding_id: str, **details: Any) -> int:
        """Append to the audit log and link the history row to the audit event; the event's seq."""
        event = self.audit.append(actor, action, f"finding:{finding_id}", details=details)
        if event_id is not None:
            with self.db.session() as session:
                row = session.get(FindingEventRow, event_id)
                if row is not None:
                    row.audit_seq = event.seq
        return event.seq

    # -- reads ---------------------------------------------------------------------------------------------

    def get(self, actor: Principal, finding_id: str) -> Finding:
        """One finding the actor may see; NotFound otherwise."""
        with self.db.session() as session:
            return _record(self._load(session, actor, finding_id))

    def detail(self, actor: Principal, finding_id: str) -> FindingDetail:
        """A finding with its history and comments."""
        with self.db.session() as session:
            row = self._load(session, actor, finding_id)
            events = session.scalars(
                select(FindingEventRow)
                .where(FindingEventRow.finding_id == finding_id)
                .order_by(FindingEventRow.id)
            ).all()
            comments = session.scalars(
                select(FindingCommentRow)
                .where(FindingCommentRow.finding_id == finding_id)
                .order_by(FindingCommentRow.created_at, FindingCommentRow.id)
            ).all()
            return FindingDetail(
                **_record(row).model_dump(),
                history=[_event(e) for e in events],
                comments=[_comment(c) for c in comments],
            )

    def list_findings(
        self,
        actor: Principal,
        *,
        status: Sequence[str] = (),
        category: str | None = None,
        limit: int = 100,
    ) -> list[Finding]:
        """The findings the actor may see, newest first, optionally filtered."""
        self._require(actor, PARTICIPANTS, "findings")
        for s in status:
            if s not in STATUSES:
                raise InvalidRequest(
                    f"unknown status {s!r}; expected one of: {', '.join(STATUSES)}", param="status"
                )
        query = select(FindingRow).order_by(FindingRow.created_at.desc(), FindingRow.id).limit(limit)
        if status:
            query = query.where(FindingRow.status.in_(list(status)))
        if category:
            query = query.where(FindingRow.category == category)
        with self.db.session() as session:
            if actor.role not in REVIEWERS:
                query = query.where(FindingRow.owner == self._owner(session, actor))
            return [_record(row) for row in session.scalars(query)]

    def regression_suite(self, statuses: Sequence[str] = REGRESSION_STATUSES) -> list[Finding]:
        """Every finding that was confirmed and is not won't-fix: each is a regression probe."""
        query = (
            select(FindingRow)
            .where(FindingRow.status.in_(list(statuses)))
            .order_by(FindingRow.created_at, FindingRow.id)
        )
        with self.db.session() as session:
            return [_record(row) for row in session.scalars(query)]

    # -- writes --------------------------------------------------------------------------------------------

    def submit(self, actor: Principal, draft: FindingCreate, *, source: str = "human") -> Finding:
        """Store a new finding (status `new`) reported by `actor`."""
        self._require(actor, PARTICIPANTS, "submitting a finding")
        now = self.clock()
        row = FindingRow(
            id=new_id("fnd"),
            reporter=actor.key_id,
            owner="",
            source=source,
            category=draft.category,
            severity=draft.severity,
            status="new",
            summary=draft.summary,
            target=draft.target,
            reproduction=draft.reproduction,
            conversation=[m.model_dump(mode="json", exclude_none=True) for m in draft.conversation],
            created_at=now,
            updated_at=now,
        )
        with self.db.session() as session:
            row.owner = self._owner(session, actor)
            session.add(row)
            session.flush()
            event = FindingEventRow(
                finding_id=row.id, created_at=now, actor=actor.key_id, action="submit", to_status="new"
            )
            session.add(event)
            session.flush()
            event_id = event.id
            finding = _record(row)
        self._audit(
            event_id,
            actor.key_id,
            AUDIT_SUBMIT,
            finding.id,
            category=finding.category,
            severity=finding.severity,
            target=finding.target,
            to="new",
        )
        return finding

    def triage(self, actor: Principal, finding_id: str, status: str, reason: str | None = None) -> Finding:
        """Move a finding to `status` (reviewers only); Conflict when the workflow does not allow it."""
        reason = (reason or "").strip() or None
        with self.db.session() as session:
            row = self._load(session, actor, finding_id, lock=True)
            self._require(actor, REVIEWERS, "triaging a finding")
            check_transition(row.status, status, reason)
            before = row.status
            event_id, finding = self._move(session, row, actor.key_id, "triage", status, reason, None)
        self._audit(
            event_id,
            actor.key_id,
            AUDIT_TRIAGE,
            finding_id,
            **{"from": before, "to": status, "reason": reason},
        )
        return finding

    def _move(
        self,
        session: Session,
        row: FindingRow,
        actor: str,
        action: str,
        status: str,
        reason: str | None,
        evidence: dict[str, Any] | None,
    ) -> tuple[int, Finding]:
        before = row.status
        now = self.clock()
        row.status = status
        row.updated_at = now
        if status == "wont_fix":
            row.resolution = reason
        elif before == "wont_fix":
            row.resolution = None
        event = FindingEventRow(
            finding_id=row.id,
            created_at=now,
            actor=actor,
            action=action,
            from_status=before,
            to_status=status,
            reason=reason,
            evidence=evidence,
        )
        session.add(event)
        session.flush()
        return event.id, _record(row)

    def record_regression(
        self, actor: str, finding_id: str, harmful: bool, evidence: dict[str, Any], note: str
    ) -> FindingEvent:
        """Store a regression run's verdict on one finding (its new status and the evidence), audited.

        The verdict is decided here, from the finding's status at this moment: see `regression_verdict`."""
        with self.db.session() as session:
            row = session.get(FindingRow, finding_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no finding with id {finding_id!r}", param="finding_id")
            if row.status not in REGRESSION_STATUSES:
                raise Conflict(
                    f"finding {finding_id} is {row.status}; only {', '.join(REGRESSION_STATUSES)} findings "
                    "are re-run",
                    code="invalid_transition",
                )
            before = row.status
            status, verdict = regression_verdict(before, harmful)
            evidence = {**evidence, "harmful": harmful, "verdict": verdict}
            reason = f"{verdict.replace('_', ' ')}: {note}"
            event_id, _ = self._move(session, row, actor, "regress", status, reason, evidence)
        self._audit(
            event_id,
            actor,
            AUDIT_REGRESS,
            finding_id,
            **{
                "from": before,
                "to": status,
                "verdict": verdict,
                "harmful": harmful,
                "run_id": evidence.get("run_id"),
                "response_sha256": evidence.get("response_sha256"),
            },
        )
        with self.db.session() as session:
            stored = session.get(FindingEventRow, event_id)
            assert stored is not None
            return _event(stored)

    def comment(self, actor: Principal, finding_id: str, body: str) -> Comment:
        """Add a comment (the reporter on its own finding, or a reviewer on any)."""
        text = body.strip()
        if not text:
            raise InvalidRequest("a comment needs some text", param="body")
        with self.db.session() as session:
            self._load(session, actor, finding_id)
            row = FindingCommentRow(
                id=new_id("cmt"),
                finding_id=finding_id,
                created_at=self.clock(),
                author=actor.key_id,
                body=text,
            )
            session.add(row)
            session.flush()
            comment = _comment(row)
        self._audit(
            None,
            actor.key_id,
            AUDIT_COMMENT,
            finding_id,
            comment_id=comment.id,
            body_sha256=hashlib.sha256(text.encode()).hexdigest(),
        )
        return comment
