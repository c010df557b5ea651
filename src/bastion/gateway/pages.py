"""The chat page at `/chat`: streams answers through the gateway and shows each turn's verdicts."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from bastion.web.pages import STATIC

router = APIRouter(include_in_schema=False)


@router.get("/chat", response_class=HTMLResponse)
def chat_page() -> HTMLResponse:
    """The chat UI."""
    return HTMLResponse((STATIC / "chat.html").read_text(encoding="utf-8"))
