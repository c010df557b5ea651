"""`bastion moderate`: score texts from arguments, files or stdin, in batches, as a table or JSONL."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bastion.core.errors import InvalidRequest
from bastion.core.settings import get_settings
from bastion.moderation.service import ModerationService


def _lines_of(source: str, name: str) -> Iterator[str]:
    jsonl = name.endswith(".jsonl")
    for number, line in enumerate(source.splitlines(), 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{name}:{number}: not valid JSON ({exc.msg})") from exc
            text = row.get("text", row.get("input")) if isinstance(row, dict) else row
            if not isinstance(text, str):
                raise InvalidRequest(f"{name}:{number}: expected a string or an object with a 'text' field")
            yield text
        else:
            yield line


def read_inputs(texts: list[str], files: list[Path]) -> list[str]:
    """Texts from arguments, then files (.jsonl rows with `text`, else one per line), else stdin."""
    collected = [t for t in texts if t != "-"]
    for path in files:
        try:
            content = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from exc
        collected.extend(_lines_of(content, path.name))
    if "-" in texts or (not texts and not files):
        if sys.stdin.isatty() and not collected:
            raise InvalidRequest("nothing to moderate: pass texts, --file FILE, or pipe text on stdin")
        collected.extend(_lines_of(sys.stdin.read(), "stdin.jsonl" if "--jsonl" in sys.argv else "stdin"))
    if not collected:
        raise InvalidRequest("nothing to moderate: the inputs were empty")
    return collected


def moderate(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to score; '-' reads stdin.")] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="A file of texts: .jsonl rows with 'text', else lines."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Moderation model (default from settings).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per batch.")] = 64,
    explain: Annotated[bool, typer.Option(help="Include the spans behind each flagged category.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Write one JSON result per line (JSONL).")] = False,
) -> None:
    """Score texts on the 13 categories with a local moderation model."""
    inputs = read_inputs(texts or [], file or [])
    service = ModerationService(get_settings())
    name = service.resolve(model)
    stderr = Console(stderr=True)
    results = []
    with Progress(
        TextColumn("moderating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=len(inputs) <= batch_size,
    ) as progress:
        task = progress.add_task("moderate", total=len(inputs))
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            _name, batch_results = service.moderate(batch, model=name, explain=explain)
            results.extend(batch_results)
            if as_json:
                for text, result in zip(batch, batch_results, strict=True):
                    row = {"text": text, "model": name, **result.model_dump(exclude_none=True)}
                    sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            progress.advance(task, len(batch))
    service.close()
    if as_json:
        return
    columns = ["text", "flagged", "top categories (score)"] + (["why (explain)"] if explain else [])
    table = Table(*columns, title=f"model: {name}")
    for text, result in zip(inputs, results, strict=True):
        top = sorted(result.category_scores.items(), key=lambda kv: kv[1], reverse=True)[:3]
        shown = ", ".join(f"{k} {v:.2f}" for k, v in top)
        preview = text if len(text) <= 60 else text[:57] + "..."
        cells = [escape(preview), "[red]yes[/red]" if result.flagged else "no", shown]
        if explain:
            cells.append(
                escape(
                    "\n".join(
                        f"{key}: " + ", ".join(repr(span.text) for span in spans)
                        for key, spans in (result.explanations or {}).items()
                    )
                )
            )
        table.add_row(*cells)
    Console().print(table)
