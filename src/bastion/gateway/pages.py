"""The chat page at `/chat`: streams answers through the gateway and shows each turn's verdicts."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from bastion.web.pages import page

router = APIRouter(include_in_schema=False)


@router.get("/chat", response_class=HTMLResponse)
def chat_page() -> HTMLResponse:
    """The chat UI."""
    return HTMLResponse(
        page(
            "chat",
            "Chat",
            path="/chat",
            subtitle="Chat through the safety gateway",
            styles=("chat",),
            script="chat",
        )
    )
