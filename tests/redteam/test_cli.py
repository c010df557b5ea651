"""`bastion redteam run|resume|list|show|report|diff|plugins` with --json, through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app

CAMPAIGN = """
name = "cli"
seed = 2
samples = 2
[target]
type = "chat"
options = {{ backend = "echo", backend_options = {{ reply = "{reply}" }} }}
[[probes]]
name = "advbench"
[[probes]]
name = "truthfulqa"
[[converters]]
name = "leetspeak"
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"BASTION_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "BASTION_HOME": str(tmp_path)}


def invoke(env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_run_list_show_report_diff(env: dict[str, str], tmp_path: Path) -> None:
    safe = tmp_path / "safe.toml"
    safe.write_text(CAMPAIGN.format(reply="I'm sorry, I can't help with that."))
    unsafe = tmp_path / "unsafe.toml"
    unsafe.write_text(CAMPAIGN.format(reply="Sure! Step 1: do it."))
    a = invoke(env, "redteam", "run", str(safe), "--run-id", "rt-a", "--json")
    assert a["run"]["status"] == "completed" and a["run"]["planned"] == 2 * 2 + 2 * 2 + 2
    b = invoke(
        env, "redteam", "run", str(unsafe), "--run-id", "rt-b", "--json", "--out", str(tmp_path / "rep")
    )
    assert (tmp_path / "rep" / "report.html").is_file()
    assert b["replay"]["data_sha256"]["advbench"]
    listed = invoke(env, "redteam", "list", "--json")
    assert [r["id"] for r in listed] == ["rt-b", "rt-a"]
    shown = invoke(env, "redteam", "show", "rt-a", "--json")
    assert shown["by_probe"]["advbench"]["asr"]["rate"] == 0.0
    paths = invoke(env, "redteam", "report", "rt-a", "--out", str(tmp_path / "r2"), "--json")
    assert Path(paths["jsonl"]).read_text().count("\n") == a["run"]["planned"]
    diff = invoke(env, "redteam", "diff", "rt-a", "rt-b", "--json")
    assert diff["families"]["advbench"]["change"] == 1.0 and diff["new_failures"]
    rescored = invoke(env, "redteam", "rescore", "rt-b", "--json")
    assert rescored["totals"] == b["totals"], "the same scorers give the same verdicts"
    plain = CliRunner().invoke(app, ["redteam", "diff", "rt-a", "rt-b"], env=env)
    assert plain.exit_code == 0 and "new failures" in plain.stdout


def test_model_override(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(reply="ok"))
    models = '{"default_model": "a", "models": {"a": {"backend": "echo", "options": {"reply": "from a"}}}}'
    result = invoke({**env, "BASTION_LLM": models}, "redteam", "run", str(path), "--model", "a", "--json")
    assert result["spec"]["target"] == {**result["spec"]["target"], "type": "chat", "options": {"model": "a"}}
    assert result["worst"][0]["response"] == "from a"


def test_resume_and_limit(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(reply="ok"))
    partial = invoke(env, "redteam", "run", str(path), "--run-id", "rt-p", "--limit", "3", "--json")
    assert partial["run"]["status"] == "interrupted" and partial["run"]["stored"] == 3
    done = invoke(env, "redteam", "resume", "rt-p", "--json")
    assert done["run"]["status"] == "completed" and done["run"]["stored"] == done["run"]["planned"]


def test_plugins_and_errors(env: dict[str, str], tmp_path: Path) -> None:
    listed = invoke(env, "redteam", "plugins", "--json")
    assert len(listed["probes"]) >= 12
    assert all(p["description"] and any(t.startswith("owasp:") for t in p["tags"]) for p in listed["probes"])
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[target]\ntype = "chat"\n[[probes]]\nname = "harmbench"\nbogus = 1\n')
    result = CliRunner().invoke(app, ["redteam", "run", str(bad)], env=env)
    assert result.exit_code != 0
