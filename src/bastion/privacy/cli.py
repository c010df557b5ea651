"""`bastion audit verify|checkpoint` and `bastion privacy purge|rotate-key|export-training|orgs|users`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from bastion.core.cli_support import fail, print_json
from bastion.core.errors import BastionError, ConfigError
from bastion.core.settings import Settings, load_settings
from bastion.db.accounts import PLANS, Accounts
from bastion.db.session import Database
from bastion.privacy.audit import AuditLog, Checkpoint
from bastion.privacy.conversations import ConversationStore
from bastion.privacy.crypto import (
    KeyRing,
    decode_key,
    encode_key,
    master_key_path,
    new_key,
    write_secret,
)
from bastion.privacy.service import Privacy
from bastion.privacy.training import export_training

audit_app = typer.Typer(
    name="audit", help="Verify and export the tamper-evident audit log.", no_args_is_help=True
)
privacy_app = typer.Typer(
    name="privacy",
    help="Retention purge, training exports, organisations and users, key management.",
    no_args_is_help=True,
)
orgs_app = typer.Typer(name="orgs", help="Organisations (and their training opt-out).", no_args_is_help=True)
users_app = typer.Typer(name="users", help="Users (accounts that hold API keys).", no_args_is_help=True)
privacy_app.add_typer(orgs_app, name="orgs")
privacy_app.add_typer(users_app, name="users")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class Context:
    """What every privacy command needs, built from the settings in force."""

    settings: Settings
    db: Database
    keyring: KeyRing
    audit: AuditLog
    privacy: Privacy
    accounts: Accounts
    store: ConversationStore


def _context() -> Context:
    settings = load_settings()
    db = Database(settings.resolved_database_url)
    db.upgrade()
    privacy = Privacy.build(settings, db, background=False)
    return Context(settings, db, privacy.keyring, privacy.audit, privacy, privacy.accounts, privacy.store)


@audit_app.command("verify")
def verify(
    head: Annotated[
        Path | None,
        typer.Option(help="A head saved earlier by `bastion audit checkpoint`, to check against."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute the Merkle tree from every stored event; exit 1 naming the first tampered event."""
    try:
        trusted = _read_head(head) if head is not None else None
        report = _context().audit.verify(trusted)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(report.as_dict())
        if not report.ok:
            raise SystemExit(1)
        return
    if not report.ok:
        fail(f"audit log verification failed: {report.problem}")
    typer.echo(f"audit log ok: {report.tree_size} events, root {report.root_hash}")


def _read_head(path: Path) -> Checkpoint:
    try:
        return Checkpoint(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a head printed by `bastion audit checkpoint`: {exc}") from exc


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Print the signed head (tree size, root hash, signature, public key) as JSON, to store elsewhere."""
    try:
        head = _context().audit.head()
    except BastionError as exc:
        fail(exc.message)
    if head is None:
        fail("the audit log is empty: there is no signed head yet")
    print_json(head.as_dict())


@privacy_app.command("purge")
def purge(
    now: Annotated[
        str | None, typer.Option(help="Purge as of this ISO 8601 time (default: now), e.g. for a dry clock.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Remove deleted conversations past the retention window and expired temporary chats."""
    try:
        at = datetime.fromisoformat(now) if now else None
    except ValueError:
        fail(f"--now {now!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00+00:00")
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        report = _context().store.purge(at)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(
            {
                "conversations": report.conversations,
                "messages": report.messages,
                "usage_refs": report.usage_refs,
                "export_items": report.export_items,
                "exports_invalidated": report.exports_invalidated,
                "derived": report.derived,
                "now": report.now,
            }
        )
        return
    typer.echo(
        f"purged {report.conversations} conversations ({report.messages} messages, "
        f"{report.usage_refs} usage-event references, {report.export_items} export-manifest entries in "
        f"{len(report.exports_invalidated)} exports) as of {report.now}"
    )


@privacy_app.command("export-training")
def export_training_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the JSONL export.")],
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many conversations.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Export conversations that may be used for training (never opted-out, temporary, deleted or purged
    ones) as JSONL, and record the manifest (ids + hashes) that a later purge invalidates."""
    try:
        ctx = _context()
        export = export_training(ctx.store, ctx.accounts, actor="cli", path=output, limit=limit)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(
            {
                "id": export.id,
                "conversations": len(export.records),
                "path": export.path,
                "sha256": export.sha256,
            }
        )
        return
    typer.echo(
        f"exported {len(export.records)} conversations to {export.path} (export {export.id}, "
        f"sha256 {export.sha256})"
    )


def _opt_flag(value: str | None) -> bool | None:
    if value is None:
        return None
    if value not in ("in", "out"):
        fail(f"--training {value!r}: expected 'in' or 'out'")
    return value == "out"


@orgs_app.command("create")
def org_create(
    name: Annotated[str, typer.Option(help="The organisation's name.")],
    plan: Annotated[str, typer.Option(help=f"One of: {', '.join(PLANS)}.")] = "team",
    training: Annotated[
        str | None,
        typer.Option(help="'out' or 'in'; default: out for enterprise, in otherwise."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an organisation."""
    try:
        ctx = _context()
        org = ctx.accounts.create_org(name, plan, _opt_flag(training))
        ctx.audit.append(
            "cli", "org.create", org.id, details={"plan": org.plan, "training_opt_out": org.training_opt_out}
        )
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(org.__dict__)
        return
    state = "opted out of" if org.training_opt_out else "in"
    typer.echo(f"created organisation {org.id} ({org.name}, {org.plan}; {state} training)")


@orgs_app.command("list")
def org_list(as_json: JsonFlag = False) -> None:
    """List organisations."""
    try:
        orgs = _context().accounts.list_orgs()
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json([o.__dict__ for o in orgs])
        return
    for o in orgs:
        typer.echo(f"{o.id}  {o.plan:<10}  opt-out={'yes' if o.training_opt_out else 'no'}  {o.name}")


@orgs_app.command("set-training")
def org_set_training(
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    training: Annotated[str, typer.Argument(help="'out' or 'in'.")],
) -> None:
    """Opt an organisation out of (or in to) training (an audit event)."""
    value = _opt_flag(training)
    assert value is not None
    try:
        _context().privacy.set_org_opt_out(org_id, value, actor="cli")
    except BastionError as exc:
        fail(exc.message)
    typer.echo(f"{org_id}: {'opted out of' if value else 'opted in to'} training")


@users_app.command("create")
def user_create(
    name: Annotated[str, typer.Option(help="A label for the user.")] = "",
    org: Annotated[str | None, typer.Option(help="Organisation id (default: the default one).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a user; give it keys with `bastion keys create --user ID`."""
    try:
        ctx = _context()
        user = ctx.accounts.create_user(org, name)
        ctx.audit.append("cli", "user.create", user.id, details={"org_id": user.org_id})
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(user.__dict__)
        return
    typer.echo(f"created user {user.id} in {user.org_id}")


@users_app.command("list")
def user_list(
    org: Annotated[str | None, typer.Option(help="Only this organisation's users.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List users (accounts, not end users)."""
    try:
        users = _context().accounts.list_users(org)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json([u.__dict__ for u in users])
        return
    for u in users:
        typer.echo(f"{u.id}  {u.org_id}  opt-out={'yes' if u.training_opt_out else 'no'}  {u.name}")


@privacy_app.command("rotate-key")
def rotate_key(
    new: Annotated[
        str | None, typer.Option("--new-key", help="The new master key (base64); default: a random one.")
    ] = None,
) -> None:
    """Re-wrap every data key with a new master key. In development the key file is replaced; otherwise
    the new key is printed once: set it as BASTION_PRIVACY__MASTER_KEY before restarting."""
    try:
        ctx = _context()
        key = decode_key(new, "new master key") if new else new_key()
        to_file = ctx.settings.privacy.master_key is None and ctx.settings.env == "development"
        path = master_key_path(ctx.settings.home)
        pending = path.with_name(path.name + ".new")
        if to_file:  # written before the re-wrap commits, so a crash cannot lose the only copy
            write_secret(pending, encode_key(key))
        count = ctx.keyring.rotate_master_key(key)
        if to_file:
            os.replace(pending, path)
        ctx.audit.append("cli", "privacy.rotate_master_key", "data_keys", details={"data_keys": count})
    except BastionError as exc:
        fail(exc.message)
    if to_file:
        typer.echo(f"re-wrapped {count} data keys; the new master key is in {path}")
        return
    typer.echo(f"re-wrapped {count} data keys. Set BASTION_PRIVACY__MASTER_KEY to the new key now:")
    typer.echo(encode_key(key))


@privacy_app.command("delete-user")
def delete_user_command(
    user_id: Annotated[str, typer.Argument(help="The user's id (`bastion privacy users list`).")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Erase a user and its end users now: conversations everywhere, keys revoked, data keys destroyed
    (crypto-shredding), records removed."""
    if not yes:
        fail("erasing a user cannot be undone; add --yes to confirm")
    try:
        summary = _context().privacy.delete_user(user_id, actor="cli")
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json(summary)
        return
    typer.echo(
        f"erased {user_id}: {summary['conversations']} conversations, {summary['end_users']} end users, "
        f"{summary['keys_revoked']} keys revoked, {summary['data_keys_shredded']} data keys shredded"
    )
