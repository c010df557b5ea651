"""`bastion chat` against a real gateway server: one-shot JSON, interactive turns, blocked turns, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import load_settings
from bastion.db.session import Database
from bastion.gateway.cli import chat
from tests.conftest import LiveServer, free_port
from tests.gateway.helpers import BOMB_QUESTION, TEST_MODERATION, build_app

pytestmark = pytest.mark.slow

cli = typer.Typer()
cli.command()(chat)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home: Path = tmp_path_factory.mktemp("cli-home")
    db = Database(f"sqlite:///{home / 'gw.db'}")
    db.upgrade()
    settings = load_settings(database_url=db.url, home=home, moderation=TEST_MODERATION)
    key, _ = KeyStore(db).create(Role.CLIENT, "cli")
    with LiveServer(build_app(settings, db)) as live:
        yield live.url, key
    db.dispose()


def invoke(*args: str, key: str | None = None, stdin: str | None = None) -> tuple[int, str, str]:
    env = {"BASTION_KEY": key} if key else {"BASTION_KEY": ""}
    result = CliRunner().invoke(cli, list(args), input=stdin, env=env)
    return result.exit_code, result.stdout, result.stderr


def test_one_shot_json(server: tuple[str, str]) -> None:
    url, key = server
    code, out, _ = invoke("--url", url, "--model", "echo", "--message", "hello there", "--json", key=key)
    assert code == 0
    answer = json.loads(out)
    assert answer["content"] == "hello there" and answer["blocked"] is False
    code, out, _ = invoke("--url", url, "--model", "echo", "-m", BOMB_QUESTION, "--json", key=key)
    blocked = json.loads(out)
    assert blocked["blocked"] is True and blocked["finish_reason"] == "content_filter"
    assert "illicit/violent" in blocked["moderation"]["input"]["categories"]


def test_interactive_turns_show_blocks(server: tuple[str, str]) -> None:
    url, key = server
    code, out, _ = invoke(
        "--url", url, "--model", "echo", stdin=f"good morning\n{BOMB_QUESTION}\n/quit\n", key=key
    )
    assert code == 0
    assert "good morning" in out
    assert "blocked" in out and "illicit/violent → block" in out


def test_errors_are_one_line(server: tuple[str, str]) -> None:
    url, _ = server
    code, _, err = invoke("--url", url, "-m", "hi", "--json")
    assert code == 1 and "HTTP 401" in err and "BASTION_KEY" in err
    code, _, err = invoke("--url", f"http://127.0.0.1:{free_port()}", "-m", "hi", "--json", key="x")
    assert code == 1 and "cannot reach Bastion" in err
    code, _, err = invoke("--url", url, "--model", "nope", "-m", "hi", key=server[1])
    assert code == 1 and "does not exist" in err
