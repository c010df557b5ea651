"""`bastion keys create|list|revoke`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bastion.auth.keys import KeyStore, Role
from bastion.core.cli_support import print_json
from bastion.core.settings import get_settings
from bastion.db.session import Database

keys_app = typer.Typer(name="keys", help="Create, list and revoke API keys.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _store() -> KeyStore:
    from bastion.privacy.service import Privacy  # the audit log (key changes are audit events)

    settings = get_settings()
    db = Database(settings.resolved_database_url)
    db.upgrade()
    return KeyStore(db, Privacy.build(settings, db, background=False).audit)


@keys_app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="What the key may do.")] = Role.CLIENT,
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    user: Annotated[
        str | None,
        typer.Option(help="The user it belongs to (`bastion privacy users list`); default: a new user."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key. The key is printed once and cannot be shown again."""
    secret, info = _store().create(role, name, user_id=user, actor="cli")
    if as_json:
        print_json({"key": secret, **asdict(info)})
        return
    Console().print(f"Created {info.role.value} key [bold]{info.id}[/bold] ({info.name}). Store it now:")
    typer.echo(secret)


@keys_app.command("list")
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List keys (never their secrets)."""
    keys = _store().list(include_revoked=include_revoked)
    if as_json:
        print_json([asdict(k) for k in keys])
        return
    table = Table("id", "name", "role", "user", "prefix", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            k.role.value,
            k.user_id or "-",
            k.prefix + "…",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "-",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `bastion keys list`.")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key: it stops working at once."""
    info = _store().revoke(key_id, actor="cli")
    if as_json:
        print_json(asdict(info))
        return
    typer.echo(f"Revoked {info.id} ({info.name}).")


@keys_app.command("set-role")
def set_role(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `bastion keys list`.")],
    role: Annotated[Role, typer.Argument(help="The new role.")],
    as_json: JsonFlag = False,
) -> None:
    """Change a key's role (an audit event)."""
    info = _store().set_role(key_id, role, actor="cli")
    if as_json:
        print_json(asdict(info))
        return
    typer.echo(f"{info.id} is now {info.role.value}.")
