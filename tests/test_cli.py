"""The `bastion` command, run as a user runs it: a real process, one-line errors, JSON for scripts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASTION = [sys.executable, "-m", "bastion.cli"]


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BASTION, *args], env=env, input=stdin, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return {**os.environ, "BASTION_DATABASE_URL": database_url}


def test_help_does_not_import_torch(env: dict[str, str]) -> None:
    code = "import sys, bastion.cli, bastion.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert "moderate" in run(["--help"], env).stdout


def test_keys_lifecycle(env: dict[str, str]) -> None:
    created = run(["keys", "create", "--role", "red_teamer", "--name", "outside expert", "--json"], env)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key"].startswith("bst-") and key["role"] == "red_teamer"
    listed = json.loads(run(["keys", "list", "--json"], env).stdout)
    assert [k["id"] for k in listed] == [key["id"]]
    assert key["key"] not in run(["keys", "list"], env).stdout
    assert run(["keys", "revoke", key["id"]], env).returncode == 0
    assert json.loads(run(["keys", "list", "--json"], env).stdout) == []


def test_errors_are_one_line_and_non_zero(env: dict[str, str]) -> None:
    revoke = run(["keys", "revoke", "key_missing"], env)
    assert revoke.returncode == 1
    assert len(revoke.stderr.strip().splitlines()) == 1
    assert "key_missing" in revoke.stderr and "Traceback" not in revoke.stderr
    role = run(["keys", "create", "--role", "emperor"], env)
    assert role.returncode != 0 and "Traceback" not in role.stderr


def test_serve_refuses_auth_off_on_public_address(env: dict[str, str]) -> None:
    result = run(["serve", "--host", "0.0.0.0"], {**env, "BASTION_AUTH": "off"})
    assert result.returncode == 1
    assert "auth is off" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_setting_is_one_line(env: dict[str, str]) -> None:
    result = run(["keys", "list"], {**env, "BASTION_PORT": "not-a-port"})
    assert result.returncode == 1
    assert "port" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_moderate_arguments_files_and_stdin(env: dict[str, str], tmp_path: Path) -> None:
    threat = "I am going to kill you and your whole family tonight."
    weather = "What's the weather like in Paris tomorrow?"
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": weather}) + "\n" + json.dumps({"text": threat}) + "\n")
    result = run(["moderate", "--json", threat, "--file", str(source)], env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == [threat, weather, threat]
    assert [r["flagged"] for r in rows] == [True, False, True]
    assert all(r["model"] == "bastion-embedded" for r in rows)
    piped = run(["moderate", "--json"], env, stdin=weather + "\n")
    assert [json.loads(line)["flagged"] for line in piped.stdout.splitlines()] == [False]
    table = run(["moderate", weather], env)
    assert table.returncode == 0 and "model: bastion-embedded" in table.stdout
    # The table shows the words behind each flag; text that looks like console markup is shown as is.
    insult = "[/b] Thanks for the help, you stupid idiot."
    explained = run(["moderate", "--explain", insult], {**env, "COLUMNS": "200"})
    assert explained.returncode == 0, explained.stderr
    assert "why (explain)" in explained.stdout and "harassment: 'stupid idiot'" in explained.stdout
    assert "[/b]" in explained.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_moderate_bad_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    result = run(["moderate", "--file", str(bad)], env)
    assert result.returncode == 1
    assert "bad.jsonl:1" in result.stderr and "Traceback" not in result.stderr
    missing = run(["moderate", "--file", str(tmp_path / "absent.txt")], env)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
