"""The findings page at `/redteam/findings`: a form to report a finding and the triage list."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from bastion.web.pages import STATIC

router = APIRouter(include_in_schema=False)


@router.get("/redteam/findings", response_class=HTMLResponse)
def findings_page() -> HTMLResponse:
    """Report a finding (red teamers) and triage findings (safety reviewers)."""
    return HTMLResponse((STATIC / "findings.html").read_text(encoding="utf-8"))
