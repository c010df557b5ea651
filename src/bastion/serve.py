"""`bastion serve` and `bastion db upgrade`: run the service, migrate the schema."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import Settings, get_settings, load_settings
from bastion.db.session import Database

db_app = typer.Typer(name="db", help="Database schema.", no_args_is_help=True)


def ensure_admin_key(settings: Settings, db: Database) -> str | None:
    """Create the first admin key when none exists; returns its secret (to print once) or None."""
    if settings.auth == "off":
        return None
    store = KeyStore(db)
    if store.has_active_admin():
        return None
    secret, _info = store.create(Role.ADMIN, "first admin key")
    return secret


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from settings: 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default from settings: 8000).")] = None,
) -> None:
    """Start the API server and web UI."""
    import uvicorn

    from bastion.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(**overrides) if overrides else get_settings()
    settings.check_serving(settings.host)
    db = Database(settings.resolved_database_url)
    db.upgrade()
    secret = ensure_admin_key(settings, db)
    if secret:
        typer.secho("An admin API key was created. It is shown only this once; store it now:", fg="yellow")
        typer.echo(f"\n    {secret}\n")
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    typer.echo(f"Bastion on http://{settings.host}:{settings.port}  (state in {settings.home})")
    uvicorn.run(
        create_app(settings, database=db),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply every pending migration to the configured database."""
    settings = get_settings()
    Database(settings.resolved_database_url).upgrade()
    typer.echo(f"Database at head: {settings.resolved_database_url}")
