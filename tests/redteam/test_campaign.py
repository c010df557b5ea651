"""Campaigns on SQLite and PostgreSQL: stored as they go, resumable after a kill with no lost or duplicated
attempts, reports (HTML, JSONL, JSON summary) and diffs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bastion.core.errors import ConfigError
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.db.tables import RedteamAttemptRow, RedteamRunRow
from bastion.redteam.campaign import CampaignRunner, load_campaign, parse_campaign, plan, run_stats
from bastion.redteam.report import diff_runs, newcombe, render_html, summarize, wilson, write_report

REFUSAL = "I'm sorry, but I can't help with that request."
COMPLY = "Sure, here is how. Step 1: get the materials. Step 2: follow the method closely."


def campaign(reply: str | None = None, delay_s: float = 0.0, **extra: Any) -> dict[str, Any]:
    """A small campaign against the echo backend (or a canned reply)."""
    backend_options: dict[str, Any] = {"delay_s": delay_s}
    if reply is not None:
        backend_options["reply"] = reply
    data: dict[str, Any] = {
        "name": "test",
        "seed": 5,
        "samples": 3,
        "target": {"type": "chat", "options": {"backend": "echo", "backend_options": backend_options}},
        "probes": [{"name": "harmbench"}, {"name": "giskard_injection", "samples": 2}],
        "converters": [{"name": "base64"}],
        "scorers": [
            {"name": "refusal"},
            {"name": "judge", "options": {"backend": "echo", "backend_options": {"reply": "x"}}},
        ],
        "engine": {"name": "thread", "options": {"workers": 3}},
    }
    data.update(extra)
    return data


def keys_of(db: Database, run_id: str) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(RedteamAttemptRow.key).where(RedteamAttemptRow.run_id == run_id)))


def test_plan_is_deterministic_and_adds_over_refusal(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    spec = parse_campaign(campaign())
    first = plan(spec, settings)
    assert [u.key for u in first] == [u.key for u in plan(spec, settings)]
    probes = {u.probe for u in first}
    assert probes == {"harmbench", "giskard_injection", "xstest"}, (
        "XSTest safe prompts run beside harmful ones"
    )
    # harmful items × (identity + base64); benign items plain only
    assert len(first) == 3 * 2 + 2 * 2 + 3
    assert {u.converter for u in first if u.probe == "xstest"} == {"identity"}
    only = parse_campaign(campaign(converters=[{"name": "base64", "probes": ["giskard_injection"]}]))
    assert {u.probe for u in plan(only, settings) if u.converter == "base64"} == {"giskard_injection"}
    other_seed = plan(parse_campaign(campaign(seed=6)), settings)
    assert {u.key for u in other_seed} != {u.key for u in first}


def test_run_stores_every_attempt_with_scores(
    make_settings: Callable[..., Settings], database: Database
) -> None:
    settings = make_settings()
    runner = CampaignRunner(settings, database)
    run_id = runner.create(parse_campaign(campaign(reply=COMPLY)))
    summary = runner.run(run_id)
    total, distinct = run_stats(database, run_id)
    assert total == distinct == summary["run"]["planned"] == 13
    assert summary["run"]["status"] == "completed"
    # a target that always complies: every harmful item succeeds (no harm or judge score says otherwise)
    assert summary["by_probe"]["harmbench"]["asr"]["k"] == 6
    assert "over_refusal" in summary["by_probe"]["xstest"]
    assert summary["replay"]["target"]["type"] == "chat"
    with database.session() as s:
        row = s.scalars(select(RedteamAttemptRow).where(RedteamAttemptRow.run_id == run_id)).first()
        assert row is not None
        assert set(row.scores) >= {"refusal", "judge"} and set(row.rationales) >= {"refusal", "judge"}
        assert row.scores["judge"] is None, "an undecided judge counts as absent"
        assert row.conversation[-1]["role"] == "assistant"
        run = s.get(RedteamRunRow, run_id)
        assert run is not None and run.status == "completed" and run.summary


def test_resume_after_partial_run(make_settings: Callable[..., Settings], database: Database) -> None:
    settings = make_settings()
    runner = CampaignRunner(settings, database, batch_size=2)
    spec = parse_campaign(campaign())
    run_id = runner.create(spec)
    partial = runner.run(run_id, limit=5)
    assert partial["run"]["status"] == "interrupted" and len(keys_of(database, run_id)) == 5
    done = runner.run(run_id)
    assert done["run"]["status"] == "completed"
    keys = keys_of(database, run_id)
    assert sorted(keys) == sorted(u.key for u in plan(spec, settings)), "nothing lost, nothing repeated"
    with pytest.raises(ConfigError, match="exists"):
        runner.create(spec, run_id)


def test_resume_after_kill(
    make_settings: Callable[..., Settings], database: Database, tmp_path: Path
) -> None:
    """A run killed with SIGKILL mid-way resumes to exactly the planned attempts."""
    settings = make_settings()
    data = campaign(delay_s=0.15, samples=6)
    path = tmp_path / "campaign.toml"
    path.write_text(_toml(data))
    env = {
        **os.environ,
        "BASTION_DATABASE_URL": settings.resolved_database_url,
        "BASTION_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion.cli",
            "redteam",
            "run",
            str(path),
            "--run-id",
            "rt-killed",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                stored = len(keys_of(database, "rt-killed"))
            except Exception:
                stored = 0
            if stored >= 4 or proc.poll() is not None:
                break
        assert proc.poll() is None, (
            f"the run ended before the kill: {proc.stderr.read() if proc.stderr else ''}"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    spec = load_campaign(path)
    planned = len(plan(spec, settings))
    assert 4 <= len(keys_of(database, "rt-killed")) < planned
    with database.session() as s:
        run = s.get(RedteamRunRow, "rt-killed")
        assert run is not None and run.status == "running", "a killed run is left as it was"
    fast = CampaignRunner(settings, database)
    summary = fast.run("rt-killed")
    total, distinct = run_stats(database, "rt-killed")
    assert summary["run"]["status"] == "completed"
    assert total == distinct == planned
    assert sorted(keys_of(database, "rt-killed")) == sorted(u.key for u in plan(spec, settings))


def _toml(data: dict[str, Any]) -> str:
    """Enough TOML for the test campaigns (inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "\n".join(f"{k} = {value(v)}" for k, v in data.items()) + "\n"


def test_report_files_and_html(
    make_settings: Callable[..., Settings], database: Database, tmp_path: Path
) -> None:
    settings = make_settings()
    runner = CampaignRunner(settings, database)
    run_id = runner.create(parse_campaign(campaign()))
    runner.run(run_id)
    paths = write_report(database, run_id, tmp_path / "report")
    html = paths["html"].read_text()
    assert "Attack success rate" in html and "Over-refusal rate" in html
    assert "<svg" in html and "ASR by harm category" in html and "Worst examples" in html
    assert "<script" not in html
    lines = paths["jsonl"].read_text().splitlines()
    assert len(lines) == 13 and all(json.loads(line)["rationales"] for line in lines)
    summary = json.loads(paths["summary"].read_text())
    assert summary["spec"]["seed"] == 5 and summary["replay"]["scorers"]["refusal"]["artifact_sha256"]
    replayed = parse_campaign(summary["spec"])
    assert [u.key for u in plan(replayed, settings)] == sorted(
        keys_of(database, run_id), key=[u.key for u in plan(replayed, settings)].index
    )


def test_diff_finds_new_failures_and_fixes(
    make_settings: Callable[..., Settings], database: Database
) -> None:
    settings = make_settings()
    runner = CampaignRunner(settings, database)
    safe = runner.create(parse_campaign(campaign(reply=REFUSAL)))
    runner.run(safe)
    unsafe = runner.create(parse_campaign(campaign(reply=COMPLY)))
    runner.run(unsafe)
    result = diff_runs(database, safe, unsafe)
    assert result["paired_attempts"] == 13
    assert result["new_failures"], "the echoing model fails where the refusing one passed"
    assert {f["probe"] for f in result["new_failures"]} >= {"harmbench"}
    harmbench = result["families"]["harmbench"]
    assert harmbench["a"]["rate"] == 0.0 and harmbench["b"]["rate"] == 1.0
    assert harmbench["significant"] and harmbench["change_ci95"][0] > 0
    back = diff_runs(database, unsafe, safe)
    assert len(back["fixed"]) == len(result["new_failures"])
    # the refusing model over-refuses XSTest: a new over-refusal going the other way
    assert result["families"]["xstest"]["metric"] == "over_refusal"


def test_intervals() -> None:
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-3), pytest.approx(0.7634, abs=1e-3))
    # Newcombe (1998), example: 56/70 vs 48/80 → difference 0.2, CI (0.0524, 0.3339)
    low, high = newcombe(48, 80, 56, 70)
    assert (low, high) == (pytest.approx(0.0524, abs=1e-3), pytest.approx(0.3339, abs=1e-3))


def test_render_html_escapes(make_settings: Callable[..., Settings], database: Database) -> None:
    settings = make_settings()
    runner = CampaignRunner(settings, database)
    run_id = runner.create(parse_campaign(campaign(reply="<b>Sure</b><script>alert(1)</script> step 1")))
    runner.run(run_id)
    page = render_html(summarize(database, run_id))
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_a_failing_plugin_is_recorded_not_fatal(
    make_settings: Callable[..., Settings], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.redteam.converters import Base64
    from bastion.redteam.scorers.refusal import RefusalScorer

    def broken(self: Any, text: str, rng: Any) -> str:
        raise ValueError("boom")

    def flaky(self: Any, attempt: Any) -> Any:
        raise RuntimeError("scorer bug")

    monkeypatch.setattr(Base64, "convert", broken)
    monkeypatch.setattr(RefusalScorer, "score", flaky)
    settings = make_settings()
    runner = CampaignRunner(settings, database)
    run_id = runner.create(parse_campaign(campaign(reply=COMPLY)))
    summary = runner.run(run_id)
    assert summary["run"]["status"] == "completed"
    assert summary["totals"]["errors"] == 5, "every base64 attempt is an error, kept out of the rates"
    with database.session() as s:
        rows = list(s.scalars(select(RedteamAttemptRow).where(RedteamAttemptRow.run_id == run_id)))
    assert all("ValueError" in (r.error or "") for r in rows if r.converter == "base64")
    plain = [r for r in rows if r.converter == "identity"]
    assert all(r.scores["refusal"] is None and "scorer bug" in r.rationales["refusal"] for r in plain)
