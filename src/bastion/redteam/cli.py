"""`bastion redteam run|resume|rescore|list|show|report|diff|plugins|train-refusal`: campaigns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bastion.core.cli_support import print_json
from bastion.core.settings import Settings, load_settings
from bastion.db.session import Database

redteam_app = typer.Typer(
    name="redteam",
    help="Red teaming: attack campaigns, reports and diffs; findings and regression runs.",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
console = Console(highlight=False)


def _context() -> tuple[Settings, Database]:
    settings = load_settings()
    db = Database(settings.resolved_database_url)
    db.upgrade()
    return settings, db


def _rate(rate: dict[str, Any] | None) -> str:
    if not rate or rate.get("rate") is None:
        return "–"
    low, high = rate["ci95"]
    return f"{100 * rate['rate']:.1f}% [{100 * low:.0f}–{100 * high:.0f}] n={rate['n']}"


def _print_summary(summary: dict[str, Any], report_dir: Path | None) -> None:
    run = summary["run"]
    totals = summary["totals"]
    console.print(
        f"run [bold]{run['id']}[/bold] ({run['status']}): {run['stored']}/{run['planned']} attempts; "
        f"ASR {_rate(totals['asr'])}; over-refusal {_rate(totals['over_refusal'])}; errors {totals['errors']}"
    )
    table = Table("probe", "ASR [95% CI]", "over-refusal [95% CI]", "errors")
    for name, group in summary["by_probe"].items():
        table.add_row(name, _rate(group.get("asr")), _rate(group.get("over_refusal")), str(group["errors"]))
    console.print(table)
    if report_dir is not None:
        console.print(f"report: {report_dir / 'report.html'}")


def _execute(
    settings: Settings, db: Database, run_id: str, show_progress: bool, limit: int | None
) -> dict[str, Any]:
    from bastion.redteam.campaign import CampaignRunner

    runner = CampaignRunner(settings, db)
    if not show_progress:
        return runner.run(run_id, limit=limit)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("fails {task.fields[fails]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(run_id, total=None, fails=0)
        fails = 0

        def hook(done: int, total: int, result: dict[str, Any] | None) -> None:
            nonlocal fails
            if result is not None and result["verdict"] == "fail":
                fails += 1
            progress.update(task, completed=done, total=total, fails=fails)

        return runner.run(run_id, progress=hook, limit=limit)


@redteam_app.command("run")
def run(
    campaign: Annotated[
        Path, typer.Argument(help="Campaign file (TOML): probes, converters, target, scorers.")
    ],
    run_id: Annotated[str | None, typer.Option(help="Id for the new run (default: generated).")] = None,
    engine: Annotated[
        str | None, typer.Option(help="Engine: thread, process or ray (overrides the file).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Attempts in flight (overrides the file).")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(min=0, help="Items per probe (overrides the file's default).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (overrides the file).")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Attack this configured chat model instead of the file's target (same params)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for report.html, attempts.jsonl, summary.json.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many attempts (resume later).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    json_output: JsonFlag = False,
) -> None:
    """Run a campaign; attempts are stored as they finish, so a stopped run can be resumed."""
    from bastion.redteam.campaign import CampaignRunner, load_campaign

    overrides: dict[str, Any] = {}
    if samples is not None:
        overrides["samples"] = samples
    if seed is not None:
        overrides["seed"] = seed
    spec = load_campaign(campaign, overrides)
    if model is not None:
        spec.target = spec.target.model_copy(update={"type": "chat", "options": {"model": model}})
    if engine is not None:
        spec.engine.name = engine
    if workers is not None:
        spec.engine.options["workers"] = workers
    settings, db = _context()
    new_id = CampaignRunner(settings, db).create(spec, run_id)
    if not json_output:
        console.print(f"run {new_id}: resume with `bastion redteam resume {new_id}` if it stops")
    _finish(settings, db, new_id, out, limit, progress, json_output)


def _finish(
    settings: Any,
    db: Any,
    run_id: str,
    out: Path | None,
    limit: int | None,
    progress: bool,
    json_output: bool,
) -> None:
    """Run a stored campaign's missing attempts, write the report when asked, print the summary."""
    from bastion.redteam.report import write_report

    summary = _execute(settings, db, run_id, progress and not json_output, limit)
    if out is not None:
        write_report(db, run_id, out)
    if json_output:
        print_json(summary)
    else:
        _print_summary(summary, out)


@redteam_app.command("resume")
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to finish.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the report files.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many attempts.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    json_output: JsonFlag = False,
) -> None:
    """Finish a stopped run: runs only the planned attempts that are not stored yet."""
    _finish(*_context(), run_id, out, limit, progress, json_output)


@redteam_app.command("rescore")
def rescore_run(
    run_id: Annotated[str, typer.Argument(help="The run whose stored responses to score again.")],
    json_output: JsonFlag = False,
) -> None:
    """Score a run's stored responses again with its scorers as they are now (e.g. after retraining)."""
    from bastion.redteam.campaign import rescore

    settings, db = _context()
    summary = rescore(settings, db, run_id)
    if json_output:
        print_json(summary)
    else:
        _print_summary(summary, None)


@redteam_app.command("list")
def list_runs(
    limit: Annotated[int, typer.Option(min=1, help="Newest runs to show.")] = 20,
    json_output: JsonFlag = False,
) -> None:
    """Runs, newest first."""
    from sqlalchemy import select

    from bastion.db.tables import RedteamRunRow

    _, db = _context()
    with db.session() as s:
        rows = list(s.scalars(select(RedteamRunRow).order_by(RedteamRunRow.created_at.desc()).limit(limit)))
    data: list[dict[str, Any]] = [
        {
            "id": r.id,
            "name": r.name,
            "status": r.status,
            "target": r.target,
            "planned": r.planned,
            "completed": r.completed,
            "created_at": r.created_at.isoformat(),
            "asr": ((r.summary or {}).get("totals") or {}).get("asr"),
        }
        for r in rows
    ]
    if json_output:
        print_json(data)
        return
    table = Table("id", "name", "status", "target", "done", "ASR", "created")
    for d in data:
        table.add_row(
            d["id"],
            d["name"],
            d["status"],
            d["target"],
            f"{d['completed']}/{d['planned']}",
            _rate(d["asr"]),
            d["created_at"][:19],
        )
    console.print(table)


@redteam_app.command("show")
def show(run_id: Annotated[str, typer.Argument(help="The run.")], json_output: JsonFlag = False) -> None:
    """A run's summary: ASR and over-refusal by probe, category and converter."""
    from bastion.redteam.report import run_row, summarize

    _, db = _context()
    row = run_row(db, run_id)
    summary = summarize(db, run_id, replay=(row.summary or {}).get("replay"))
    if json_output:
        print_json(summary)
    else:
        _print_summary(summary, None)


@redteam_app.command("report")
def report(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    out: Annotated[Path, typer.Option(help="Folder for report.html, attempts.jsonl, summary.json.")] = Path(
        "redteam-report"
    ),
    json_output: JsonFlag = False,
) -> None:
    """Write the HTML report, the JSONL of attempts and the JSON summary (with the specs to replay)."""
    from bastion.redteam.report import write_report

    _, db = _context()
    paths = write_report(db, run_id, out)
    if json_output:
        print_json({k: str(v) for k, v in paths.items()})
    else:
        for kind, path in paths.items():
            console.print(f"{kind}: {path}")


@redteam_app.command("diff")
def diff(
    run_a: Annotated[str, typer.Argument(help="The baseline run (e.g. the last release).")],
    run_b: Annotated[str, typer.Argument(help="The run to compare (e.g. the candidate).")],
    examples: Annotated[int, typer.Option(min=0, help="New failures and fixes to print.")] = 5,
    json_output: JsonFlag = False,
) -> None:
    """New failures, fixed ones, and the ASR change per family with 95% Newcombe intervals."""
    from bastion.redteam.report import diff_runs

    _, db = _context()
    result = diff_runs(db, run_a, run_b)
    if json_output:
        print_json(result)
        return
    console.print(
        f"{run_a} → {run_b}: {result['paired_attempts']} paired attempts; "
        f"{len(result['new_failures'])} new failures, {len(result['fixed'])} fixed"
    )
    table = Table("family", "metric", "A", "B", "change [95% CI]", "")
    for name, fam in result["families"].items():
        low, high = fam["change_ci95"]
        table.add_row(
            name,
            fam["metric"],
            _rate(fam["a"]),
            _rate(fam["b"]),
            f"{100 * fam['change']:+.1f} pts [{100 * low:+.0f}, {100 * high:+.0f}]",
            "significant" if fam["significant"] else "",
        )
    console.print(table)
    for title, rows in (("new failures", result["new_failures"]), ("fixed", result["fixed"])):
        for row in rows[:examples]:
            console.print(
                f"[bold]{title}[/bold] {row['probe']} × {row['converter']} {row['item_id']}: "
                f"{row['prompt'][:100]!r}"
            )


@redteam_app.command("plugins")
def plugins(json_output: JsonFlag = False) -> None:
    """Registered probes, converters, scorers, targets and engines, with their descriptions and tags."""
    from bastion.redteam.converters import converters
    from bastion.redteam.engines import engines
    from bastion.redteam.probes import probes
    from bastion.redteam.scorers import scorers
    from bastion.redteam.targets import targets

    def doc(cls: Any) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    data: dict[str, list[dict[str, Any]]] = {
        "probes": [
            {"name": n, "description": doc(c), "tags": c.all_tags(), "goal": c.goal}
            for n, c in probes.items()
        ],
        "converters": [{"name": n, "description": doc(c)} for n, c in converters.items()],
        "scorers": [{"name": n, "description": doc(c)} for n, c in scorers.items()],
        "targets": [{"name": n, "description": doc(c)} for n, c in targets.items()],
        "engines": [{"name": n, "description": doc(c)} for n, c in engines.items()],
    }
    if json_output:
        print_json(data)
        return
    for kind, entries in data.items():
        table = Table("name", "description", title=kind)
        for entry in entries:
            table.add_row(entry["name"], entry["description"])
        console.print(table)


@redteam_app.command("train-refusal")
def train_refusal(
    output: Annotated[Path | None, typer.Option(help="Artefact path (default: the committed one).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Train the refusal classifier and print its agreement with labels on held-out data."""
    from bastion.redteam.scorers.refusal import ARTIFACT
    from bastion.redteam.scorers.refusal_train import train

    metrics = train(load_settings(), output or ARTIFACT)
    if json_output:
        print_json(metrics)
        return
    console.print(json.dumps(metrics, indent=2))
