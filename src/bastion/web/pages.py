"""The web UI routes: `/` is the moderation playground."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
STATIC = files("bastion.web") / "static"


@router.get("/", response_class=HTMLResponse)
def playground() -> HTMLResponse:
    """The moderation playground: paste text, see a bar per category."""
    return HTMLResponse((STATIC / "playground.html").read_text(encoding="utf-8"))
