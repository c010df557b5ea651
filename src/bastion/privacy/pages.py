"""The privacy pages: "Your data" at `/privacy` and the safety reviewers' retention queue at `/review`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from bastion.web.pages import page

router = APIRouter(include_in_schema=False)


@router.get("/privacy", response_class=HTMLResponse)
def your_data_page() -> HTMLResponse:
    """Your data: training opt-out, conversations, delete, export."""
    return HTMLResponse(
        page("privacy", "Your data", path="/privacy", styles=("chat", "privacy"), script="privacy")
    )


@router.get("/review", response_class=HTMLResponse)
def review_page() -> HTMLResponse:
    """The retention queue for safety reviewers."""
    return HTMLResponse(
        page(
            "review",
            "Safety review",
            path="/review",
            subtitle="Safety review: the retention queue",
            styles=("chat", "privacy"),
            script="review",
        )
    )
