"""The gateway benchmark's comparison against another git revision."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from benchmarks.gateway_overhead import child_command, latency, parse_env, worktree

ROOT = Path(__file__).resolve().parent.parent


def worktrees() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout


def test_a_revision_is_checked_out_beside_this_tree_and_removed_afterwards() -> None:
    with worktree("HEAD") as folder:
        assert (folder / "benchmarks" / "gateway_overhead.py").is_file()
        assert (folder / "src" / "bastion" / "__init__.py").is_file()
        assert str(folder) in worktrees()
    assert not folder.exists()
    assert str(folder) not in worktrees()


def test_an_unknown_revision_is_one_clear_error() -> None:
    with pytest.raises(SystemExit, match="cannot check out 'no-such-revision'"), worktree("no-such-revision"):
        pass


def test_every_client_gets_every_turn_once() -> None:
    seen: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def app(name: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            text = json.loads(request.content)["messages"][0]["content"]
            seen[name].append(text)
            finish = "content_filter" if text == "turn 3" else "stop"  # every client blocks this turn
            choice = {"finish_reason": finish, "message": {"role": "assistant", "content": "ok"}}
            return httpx.Response(200, json={"choices": [choice]})

        return httpx.MockTransport(handle)

    clients = {name: httpx.Client(transport=app(name), base_url="http://test") for name in seen}
    texts = [f"turn {i}" for i in range(6)]
    times = latency({"direct": clients["a"], "gateway": clients["b"], "other": clients["c"]}, texts, True)
    assert all(seen[name] == texts for name in seen)
    assert [len(times[name]) for name in ("direct", "gateway", "other")] == [6, 6, 6]
    assert times["blocked"] == 1  # counted for the `gateway` client only


def test_the_other_gateway_gets_its_own_environment_and_tree(tmp_path: Path) -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("NOVALUE", "=1"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            parse_env([bad])
    command, env = child_command(None, "gateway", tmp_path)
    assert env is None and command[-4:] == ["--serve", "gateway", "--home", str(tmp_path)]
    command, env = child_command(None, "gateway", tmp_path, {"BASTION_GATEWAY__RECORD_USAGE": "false"})
    assert env is not None and env["BASTION_GATEWAY__RECORD_USAGE"] == "false"
    assert env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")
    command, env = child_command(tmp_path / "tree", "warm", tmp_path)
    assert command[1] == str(tmp_path / "tree" / "benchmarks" / "gateway_overhead.py")
    assert env is not None and env["PYTHONPATH"].split(os.pathsep) == [
        str(tmp_path / "tree" / "src"),
        str(tmp_path / "tree"),
    ]
