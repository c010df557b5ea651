"""The findings page at `/redteam/findings`: a form to report a finding and the triage list.

The page holds no data: its script calls `/v1/redteam/findings` with the API key pasted into it.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from bastion.core.taxonomy import CATEGORIES
from bastion.web.pages import page

router = APIRouter(include_in_schema=False)
PLACEHOLDER = "<!-- CATEGORY_OPTIONS -->"


@lru_cache(maxsize=1)
def _page() -> str:
    """The page with the taxonomy's categories as the category choices (one source of truth)."""
    options = "\n".join(
        f'<option value="{escape(c.key)}" title="{escape(c.definition)}">{escape(c.key)}</option>'
        for c in CATEGORIES
    )
    return page(
        "findings",
        "Red team findings",
        path="/redteam/findings",
        styles=("findings",),
        script="findings",
        replacements={PLACEHOLDER: options},
    )


@router.get("/redteam/findings", response_class=HTMLResponse)
def findings_page() -> HTMLResponse:
    """Report a finding (red teamers) and triage findings (safety reviewers)."""
    return HTMLResponse(_page())
