"""Findings routes under `/v1/redteam/findings`: submit, list, read, triage and comment.

POST /v1/redteam/findings                    red_teamer, safety_reviewer, admin   201 Finding
GET  /v1/redteam/findings                    the same (a red_teamer sees its own)  list
GET  /v1/redteam/findings/{id}               the same; another's finding is 404   FindingDetail
POST /v1/redteam/findings/{id}/triage        safety_reviewer, admin               Finding (409 if not allowed)
GET  /v1/redteam/findings/{id}/comments      as GET one                           list of Comment
POST /v1/redteam/findings/{id}/comments      as GET one                           201 Comment
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from bastion.auth.deps import require_roles
from bastion.auth.keys import Principal, Role
from bastion.core.http import ErrorEnvelope
from bastion.core.records import Finding, FindingStatus
from bastion.redteam.findings import FindingStore, audit_log_for
from bastion.redteam.findings_schemas import (
    Comment,
    CommentCreate,
    FindingCreate,
    FindingDetail,
    FindingList,
    TriageRequest,
)

router = APIRouter(prefix="/v1/redteam/findings", tags=["red team findings"])

Participant = Annotated[Principal, Depends(require_roles(Role.RED_TEAMER, Role.SAFETY_REVIEWER))]
Reviewer = Annotated[Principal, Depends(require_roles(Role.SAFETY_REVIEWER))]
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorEnvelope, "description": "Not allowed from the finding's current status"}
}


def finding_store(request: Request) -> FindingStore:
    """The app's finding store, built on first use (it needs the audit log's keys)."""
    store: FindingStore | None = getattr(request.app.state, "findings", None)
    if store is None:
        db = request.app.state.db
        audit = getattr(request.app.state, "audit", None) or audit_log_for(request.app.state.settings, db)
        store = FindingStore(db, audit)
        request.app.state.findings = store
    return store


Store = Annotated[FindingStore, Depends(finding_store)]


@router.post("", response_model=Finding, status_code=201)
def submit_finding(body: FindingCreate, caller: Participant, store: Store) -> Finding:
    """Report a harmful behaviour: the conversation that shows it, its category and severity."""
    return store.submit(caller, body)


@router.get("", response_model=FindingList)
def list_findings(
    caller: Participant,
    store: Store,
    status: Annotated[list[FindingStatus] | None, Query(description="Only these statuses.")] = None,
    category: Annotated[str | None, Query(description="Only this taxonomy category.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")] = 100,
) -> FindingList:
    """The findings the caller may see: a red teamer its own, a reviewer all."""
    return FindingList(data=store.list_findings(caller, status=status or (), category=category, limit=limit))


@router.get("/{finding_id}", response_model=FindingDetail)
def get_finding(finding_id: str, caller: Participant, store: Store) -> FindingDetail:
    """One finding with its history (each step with its audit event) and comments."""
    return store.detail(caller, finding_id)


@router.post("/{finding_id}/triage", response_model=Finding, responses=CONFLICT)
def triage_finding(finding_id: str, body: TriageRequest, caller: Reviewer, store: Store) -> Finding:
    """Move a finding along the workflow; wont_fix needs a reason."""
    return store.triage(caller, finding_id, body.status, body.reason)


@router.get("/{finding_id}/comments", response_model=list[Comment])
def list_comments(finding_id: str, caller: Participant, store: Store) -> list[Comment]:
    """The comments on a finding, oldest first."""
    return store.detail(caller, finding_id).comments


@router.post("/{finding_id}/comments", response_model=Comment, status_code=201)
def add_comment(finding_id: str, body: CommentCreate, caller: Participant, store: Store) -> Comment:
    """Comment on a finding (its reporter, or a reviewer)."""
    return store.comment(caller, finding_id, body.body)
