"""`bastion redteam findings list|show|submit|triage|comment` and `bastion redteam regress TARGET`.

The commands work on the database directly, as the operator (`cli:<user>`, with a reviewer's rights);
red teamers use the API or the page at `/redteam/findings`. Every step is audited like the API's.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bastion.auth.keys import Principal, Role
from bastion.core.cli_support import fail, print_json
from bastion.core.errors import BastionError, ConfigError
from bastion.core.settings import Settings, load_settings
from bastion.db.session import Database
from bastion.redteam.findings import REGRESSION_STATUSES, STATUSES, FindingStore, audit_log_for
from bastion.redteam.findings_schemas import FindingCreate, FindingDetail

findings_app = typer.Typer(
    name="findings",
    help="Findings from people: list, show, submit, triage and comment; every step audited.",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class Context:
    """Settings, database and finding store for one command."""

    settings: Settings
    db: Database
    store: FindingStore


def _context() -> Context:
    settings = load_settings()
    db = Database(settings.resolved_database_url)
    db.upgrade()
    return Context(settings, db, FindingStore(db, audit_log_for(settings, db)))


def operator() -> Principal:
    """The person at the terminal: a reviewer's rights, recorded as `cli:<login>`."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return Principal(f"cli:{login}"[:64], Role.ADMIN)


def _status_list(values: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
    for value in values or []:
        if value not in allowed:
            raise ConfigError(f"unknown status {value!r}; expected one of: {', '.join(allowed)}")
    return list(values or [])


@findings_app.command("list")
def list_cmd(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Only this status (repeatable).")
    ] = None,
    category: Annotated[str | None, typer.Option(help="Only this taxonomy category.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List findings, newest first."""
    try:
        wanted = _status_list(status, STATUSES)
        findings = _context().store.list_findings(operator(), status=wanted, category=category, limit=limit)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json([f.model_dump(mode="json") for f in findings])
        return
    if not findings:
        typer.echo("no findings")
        return
    for f in findings:
        typer.echo(
            f"{f.id}  {f.status:<9}  {f.severity:<8}  {f.category:<22}  {f.updated_at:%Y-%m-%d %H:%M}  "
            f"{f.summary}"
        )


def _print_detail(detail: FindingDetail) -> None:
    console = Console(highlight=False)
    console.print(f"[bold]{detail.id}[/bold]  {detail.status}  {detail.severity}  {detail.category}")
    console.print(detail.summary)
    console.print(f"target: {detail.target or '-'}   reporter: {detail.reporter or '-'}")
    if detail.resolution:
        console.print(f"won't fix: {detail.resolution}")
    console.print("\n[bold]conversation[/bold]")
    for message in detail.conversation:
        console.print(f"  [dim]{message.role}:[/dim] {message.content or ''}", markup=True)
    if detail.reproduction:
        console.print("\n[bold]how to reproduce[/bold]")
        console.print(f"  {detail.reproduction}")
    console.print("\n[bold]history[/bold]")
    for event in detail.history:
        move = f"{event.from_status or '-'} → {event.to_status}"
        audit = f"audit #{event.audit_seq}" if event.audit_seq else "not audited"
        line = f"  {event.created_at:%Y-%m-%d %H:%M}  {event.action:<7} {move:<24} {event.actor}  ({audit})"
        console.print(line)
        if event.reason:
            console.print(f"      {event.reason}")
    if detail.comments:
        console.print("\n[bold]comments[/bold]")
        for comment in detail.comments:
            console.print(f"  {comment.created_at:%Y-%m-%d %H:%M}  {comment.author}: {comment.body}")


@findings_app.command("show")
def show(
    finding_id: Annotated[
        str, typer.Argument(help="The finding's id, from `bastion redteam findings list`.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Show a finding: its conversation, history (with audit event numbers) and comments."""
    try:
        detail = _context().store.detail(operator(), finding_id)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(detail.model_dump(mode="json"))
        return
    _print_detail(detail)


@findings_app.command("submit")
def submit(
    path: Annotated[
        Path,
        typer.Argument(
            help="A JSON file shaped like the API's body: summary, category, severity, "
            "conversation, target, reproduction."
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Record a finding received outside the API (for example by e-mail), as the operator."""
    try:
        try:
            draft = FindingCreate.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else str(exc)
            raise ConfigError(f"{path} is not a finding: {detail}") from exc
        finding = _context().store.submit(operator(), draft)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(finding.model_dump(mode="json"))
        return
    typer.echo(f"Submitted {finding.id} ({finding.category}, {finding.severity}).")


@findings_app.command("triage")
def triage(
    finding_id: Annotated[str, typer.Argument(help="The finding's id.")],
    status: Annotated[str, typer.Argument(help=f"The new status: {', '.join(STATUSES)}.")],
    reason: Annotated[str | None, typer.Option(help="Why; required for wont_fix.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Move a finding along new → confirmed → mitigated → verified, or to wont_fix with a reason."""
    try:
        finding = _context().store.triage(operator(), finding_id, status, reason)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(finding.model_dump(mode="json"))
        return
    typer.echo(f"{finding.id} is now {finding.status}.")


@findings_app.command("comment")
def comment(
    finding_id: Annotated[str, typer.Argument(help="The finding's id.")],
    text: Annotated[str, typer.Argument(help="The comment.")],
    as_json: JsonFlag = False,
) -> None:
    """Comment on a finding."""
    try:
        added = _context().store.comment(operator(), finding_id, text)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(added.model_dump(mode="json"))
        return
    typer.echo(f"Commented on {finding_id} ({added.id}).")


def regress(
    target: Annotated[
        str,
        typer.Argument(
            help="A configured chat model (e.g. 'local', 'echo'), 'gateway[:MODEL]' for the in-process "
            "gateway, or a target spec file (.toml with a [target] table, or .json)."
        ),
    ],
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", "-s", help="Re-run only findings in this status (repeatable; default all three)."
        ),
    ] = None,
    finding: Annotated[
        list[str] | None, typer.Option("--finding", "-f", help="Re-run only this finding (repeatable).")
    ] = None,
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            help="Red-team scorer that judges the answer (repeatable; default harm). The campaign's verdict "
            "rule combines them: with refusal too, a refusal is never harmful.",
        ),
    ] = None,
    moderation_model: Annotated[
        str | None, typer.Option(help="The moderation model the harm scorer uses (default: the default).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Cap each answer (unless the target spec sets it).")
    ] = 256,
    temperature: Annotated[
        float | None, typer.Option(min=0, help="Sampling temperature (unless the target spec sets it).")
    ] = None,
    tries: Annotated[
        int,
        typer.Option(
            min=1, help="Send each conversation up to this many times; verified only if no answer is harmful."
        ),
    ] = 1,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when any finding still produces harmful output.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-run every confirmed, mitigated and verified finding against TARGET: verify or reopen each."""
    from bastion.redteam.campaign import PluginSpec, build_scorer
    from bastion.redteam.findings_regress import parse_target, scorer_judge
    from bastion.redteam.findings_regress import regress as run_regression
    from bastion.redteam.targets import build_target

    try:
        statuses = _status_list(status, REGRESSION_STATUSES) or list(REGRESSION_STATUSES)
        ctx = _context()
        spec = parse_target(target, list(ctx.settings.llm.models))
        given = {"max_tokens": max_tokens, "temperature": temperature}
        spec.params = {**{k: v for k, v in given.items() if v is not None}, **spec.params}
        if tries > 1:
            spec.cache = "off"  # every try must reach the target
        judges = []
        for name in scorer or ["harm"]:
            options = {"model": moderation_model} if name == "harm" and moderation_model else {}
            judges.append(build_scorer(PluginSpec(name=name, options=options), ctx.settings))
        built = build_target(spec, ctx.settings)
        try:
            suite = ctx.store.regression_suite(statuses)
            total = len([f for f in suite if not finding or f.id in finding])
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                disable=as_json,
                transient=True,
            ) as progress:
                task = progress.add_task("re-running findings", total=total)
                report = run_regression(
                    ctx.store,
                    built,
                    scorer_judge(judges),
                    actor=operator().key_id,
                    statuses=statuses,
                    finding_ids=finding or (),
                    tries=tries,
                    on_result=lambda _outcome: progress.advance(task),
                )
        finally:
            built.close()
            for judge in judges:
                judge.close()
    except BastionError as exc:
        fail(exc.message)
    harmful = [o for o in report.outcomes if o.harmful]
    errors = [o for o in report.outcomes if o.verdict == "error"]
    if as_json:
        print_json(report.as_dict())
    else:
        console = Console(highlight=False)
        for o in report.outcomes:
            move = f"{o.before} → {o.after}" if o.after else o.before
            console.print(f"[bold]{o.finding_id}[/bold]  {move}  [bold]{o.verdict}[/bold]")
            why = escape(o.rationale or o.error or "")
            console.print(f"    {why}" + (f"  [dim]({escape(o.judge)})[/dim]" if o.judge else ""))
        counts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(report.counts().items())) or "nothing"
        typer.echo(f"regression run {report.run_id}: {len(report.outcomes)} finding(s): {counts}")
    if errors:
        raise SystemExit(2)
    if check and harmful:
        raise SystemExit(1)


def install(redteam_app: typer.Typer) -> None:
    """Add `findings …` and `regress` to the `bastion redteam` command group."""
    redteam_app.add_typer(findings_app, name="findings")
    redteam_app.command("regress")(regress)
