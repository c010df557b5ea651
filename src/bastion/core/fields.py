"""Field types shared by the API schemas of several capabilities."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


PlainText = Annotated[str, AfterValidator(_no_nul)]
"""Text stored as given (names, summaries, comments): any character but NUL, which PostgreSQL refuses."""
