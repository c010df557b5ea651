"""Helpers every capability's CLI uses: one-line errors, JSON output, settings from options."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    err_console.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise SystemExit(code)


def print_json(data: Any) -> None:
    """Write `data` as JSON on stdout (one document)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
