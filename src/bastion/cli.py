"""The `bastion` command: assembles each capability's commands, nothing else."""

from __future__ import annotations

import typer

from bastion.auth.cli import keys_app
from bastion.core.cli_support import fail
from bastion.core.errors import BastionError
from bastion.gateway.cli import chat
from bastion.moderation.cli import moderate
from bastion.moderation.cli_model import model_app
from bastion.privacy.cli import audit_app, privacy_app
from bastion.redteam.cli import redteam_app
from bastion.redteam.findings_cli import install as install_findings
from bastion.serve import db_app, serve

app = typer.Typer(
    name="bastion",
    help="Bastion: self-hosted AI safety platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve)
app.command("moderate")(moderate)
app.command("chat")(chat)
app.add_typer(model_app, name="moderation")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(privacy_app, name="privacy")
app.add_typer(audit_app, name="audit")
# `bastion redteam`: campaigns (redteam/cli.py), findings and regress (redteam/findings_cli.py).
install_findings(redteam_app)
app.add_typer(redteam_app, name="redteam")


def main() -> None:
    """Entry point: BastionError becomes one line on stderr and exit status 1."""
    try:
        app()
    except BastionError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        fail("interrupted", code=130)


if __name__ == "__main__":
    main()
