"""The web UI: one page layout (head, top bar, navigation) shared by every capability's pages, and `/`,
the moderation playground.

A page is a body fragment in `static/NAME.html` plus its own stylesheet and script; `page()` wraps it.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
STATIC = files("bastion.web") / "static"

NAVIGATION = (
    ("/", "Moderation playground"),
    ("/chat", "Chat"),
    ("/privacy", "Your data"),
    ("/review", "Safety review"),
    ("/redteam/findings", "Findings"),
    ("/docs", "API docs"),
)


def page(
    fragment: str,
    title: str,
    *,
    path: str,
    subtitle: str | None = None,
    styles: tuple[str, ...] = (),
    script: str | None = None,
    replacements: dict[str, str] | None = None,
) -> str:
    """The full HTML of a page: the shared head and top bar around `static/{fragment}.html`."""
    body = (STATIC / f"{fragment}.html").read_text(encoding="utf-8")
    for placeholder, value in (replacements or {}).items():
        body = body.replace(placeholder, value)
    links = "\n".join(
        f'  <link rel="stylesheet" href="/static/{escape(s)}.css">' for s in ("playground", *styles)
    )
    scripts = ("common", script) if script else ("common",)
    script_tag = "".join(f'\n  <script src="/static/{escape(name)}.js" defer></script>' for name in scripts)
    nav = "\n".join(
        f'      <a href="{href}">{escape(label)}</a>' for href, label in NAVIGATION if href != path
    )
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Bastion · {escape(title)}</title>
{links}{script_tag}
</head>
<body>
  <header class="topbar">
    <div class="brand">
      <span class="logo" aria-hidden="true">&#9632;</span>
      <span class="name">Bastion</span>
      <span class="sub">{escape(subtitle or title)}</span>
    </div>
    <nav aria-label="Links">
{nav}
    </nav>
  </header>

{body}</body>
</html>
"""


@router.get("/", response_class=HTMLResponse)
def playground() -> HTMLResponse:
    """The moderation playground: paste text, see a bar per category."""
    return HTMLResponse(page("playground", "Moderation playground", path="/", script="playground"))
