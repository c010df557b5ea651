"""Campaign runs under `/v1/redteam/runs` (read-only; runs start from `bastion redteam run`).

GET /v1/redteam/runs                        red_teamer, safety_reviewer, admin   RunList
GET /v1/redteam/runs/{run_id}               the same                              RunDetail (summary)
GET /v1/redteam/runs/{run_id}/attempts      the same                              AttemptList (paged)
GET /v1/redteam/runs/{run_id}/report        the same                              the HTML report
GET /v1/redteam/diff?a=RUN&b=RUN            the same                              diff of two runs
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from bastion.auth.matrix import Caller
from bastion.core.errors import InvalidRequest
from bastion.db.session import Database
from bastion.db.tables import RedteamAttemptRow, RedteamRunRow
from bastion.redteam.report import diff_runs, render_html, run_row, summarize
from bastion.redteam.schemas import AttemptList, AttemptOut, RunDetail, RunInfo, RunList

router = APIRouter(prefix="/v1/redteam", tags=["red team campaigns"])


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _info(row: RedteamRunRow) -> dict[str, Any]:
    totals = (row.summary or {}).get("totals") or {}
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "target": row.target,
        "planned": row.planned,
        "completed": row.completed,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
        "asr": totals.get("asr"),
        "over_refusal": totals.get("over_refusal"),
    }


@router.get("/runs", response_model=RunList)
def list_runs(request: Request, _caller: Caller, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> RunList:
    """Campaign runs, newest first."""
    with _db(request).session() as s:
        rows = s.scalars(select(RedteamRunRow).order_by(RedteamRunRow.created_at.desc()).limit(limit))
        return RunList(data=[RunInfo.model_validate(_info(r)) for r in rows])


@router.get("/runs/{run_id}", response_model=RunDetail)
def read_run(run_id: str, request: Request, _caller: Caller) -> RunDetail:
    """One run with its summary, computed from the stored attempts."""
    db = _db(request)
    row = run_row(db, run_id)
    summary = summarize(db, run_id, replay=(row.summary or {}).get("replay"))
    return RunDetail.model_validate({**_info(row), "spec": row.spec, "summary": summary})


@router.get("/runs/{run_id}/attempts", response_model=AttemptList)
def list_attempts(
    run_id: str,
    request: Request,
    _caller: Caller,
    verdict: Annotated[str | None, Query(description="Only attempts with this verdict.")] = None,
    probe: Annotated[str | None, Query(description="Only attempts of this probe.")] = None,
    after: Annotated[int, Query(ge=-1, description="Return attempts with seq greater than this.")] = -1,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AttemptList:
    """A run's attempts in plan order, `limit` at a time (page with `after` = the last seq)."""
    db = _db(request)
    run_row(db, run_id)
    for name, value in (("verdict", verdict), ("probe", probe)):
        if value is not None and "\x00" in value:
            raise InvalidRequest(f"{name} must not contain NUL characters", param=name)
    query = select(RedteamAttemptRow).where(RedteamAttemptRow.run_id == run_id, RedteamAttemptRow.seq > after)
    if verdict:
        query = query.where(RedteamAttemptRow.verdict == verdict)
    if probe:
        query = query.where(RedteamAttemptRow.probe == probe)
    with db.session() as s:
        rows = list(s.scalars(query.order_by(RedteamAttemptRow.seq).limit(limit + 1)))
    data = [
        AttemptOut.model_validate({c: getattr(r, c) for c in AttemptOut.model_fields}) for r in rows[:limit]
    ]
    return AttemptList(data=data, has_more=len(rows) > limit)


# The report answers HTML; its errors are still OpenAI's JSON envelope, documented as such.
HTML_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for status, description in {
        401: "Missing or invalid API key",
        403: "The key's role may not do this",
        404: "Unknown run",
    }.items()
}


@router.get("/runs/{run_id}/report", response_class=HTMLResponse, responses=HTML_ERRORS)
def run_report(run_id: str, request: Request, _caller: Caller) -> HTMLResponse:
    """The run's HTML report (self-contained: inline SVG plots, no scripts)."""
    db = _db(request)
    row = run_row(db, run_id)
    summary = summarize(db, run_id, replay=(row.summary or {}).get("replay"))
    return HTMLResponse(render_html(summary))


@router.get("/diff")
def diff(
    request: Request,
    _caller: Caller,
    a: Annotated[str, Query(description="The baseline run.")],
    b: Annotated[str, Query(description="The run compared with it.")],
) -> dict[str, Any]:
    """New failures, fixed ones and the ASR change per family with 95% Newcombe intervals."""
    db = _db(request)
    run_row(db, a)
    run_row(db, b)
    return diff_runs(db, a, b)
