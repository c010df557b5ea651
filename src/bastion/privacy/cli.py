"""`bastion audit verify|checkpoint` and `bastion privacy purge|rotate-key`."""

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
from bastion.db.session import Database
from bastion.privacy.audit import AuditLog, Checkpoint, load_signing_key
from bastion.privacy.conversations import ConversationStore
from bastion.privacy.crypto import (
    KeyRing,
    decode_key,
    encode_key,
    load_master_key,
    master_key_path,
    new_key,
    write_secret,
)

audit_app = typer.Typer(
    name="audit", help="Verify and export the tamper-evident audit log.", no_args_is_help=True
)
privacy_app = typer.Typer(name="privacy", help="Retention purge and key management.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class Context:
    """What every privacy command needs, built from the settings in force."""

    settings: Settings
    db: Database
    keyring: KeyRing
    audit: AuditLog


def _context() -> Context:
    settings = load_settings()
    privacy = settings.privacy
    db = Database(settings.resolved_database_url)
    db.upgrade()
    keyring = KeyRing(db, load_master_key(privacy, env=settings.env, home=settings.home))
    audit = AuditLog(db, keyring, load_signing_key(privacy, env=settings.env, home=settings.home))
    return Context(settings, db, keyring, audit)


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
        ctx = _context()
        report = ConversationStore(ctx.db, ctx.keyring, ctx.settings.privacy, audit=ctx.audit).purge(at)
    except BastionError as exc:
        fail(exc.message)
    if as_json:
        print_json({"conversations": report.conversations, "messages": report.messages, "now": report.now})
        return
    typer.echo(f"purged {report.conversations} conversations ({report.messages} messages) as of {report.now}")


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
