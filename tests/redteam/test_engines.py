"""Engines: the same campaign gives the same attempts on threads, worker processes and a local Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.core.errors import ConfigError, PluginNotFound
from bastion.core.settings import load_settings
from bastion.db.session import Database
from bastion.redteam.campaign import CampaignRunner, parse_campaign, run_stats
from bastion.redteam.report import attempts_of

SPEC: dict[str, Any] = {
    "name": "engines",
    "seed": 3,
    "samples": 3,
    "target": {"type": "chat", "options": {"backend": "echo"}},
    "probes": [{"name": "simplesafetytests"}],
    "converters": [{"name": "rot13"}],
    "over_refusal_probe": None,
}


def run_with(engine: dict[str, Any], tmp_path: Path) -> list[tuple[str, str, str]]:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'e.db'}", home=tmp_path)
    db = Database(settings.resolved_database_url)
    db.upgrade()
    runner = CampaignRunner(settings, db)
    run_id = runner.create(parse_campaign({**SPEC, "engine": engine}))
    summary = runner.run(run_id)
    assert summary["run"]["status"] == "completed"
    total, distinct = run_stats(db, run_id)
    assert total == distinct == 6
    rows = [(r.key, r.response or "", r.verdict) for r in attempts_of(db, run_id)]
    db.dispose()
    return rows


def test_process_engine_matches_threads(tmp_path: Path) -> None:
    threads = run_with({"name": "thread"}, tmp_path / "t")
    processes = run_with({"name": "process", "options": {"workers": 2}}, tmp_path / "p")
    assert threads == processes


def test_ray_engine_on_a_local_cluster(tmp_path: Path) -> None:
    threads = run_with({"name": "thread"}, tmp_path / "t")
    on_ray = run_with({"name": "ray", "options": {"workers": 2, "num_cpus": 1}}, tmp_path / "r")
    assert threads == on_ray


def test_unknown_plugins_fail_before_a_run_exists(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'e.db'}", home=tmp_path)
    db = Database(settings.resolved_database_url)
    db.upgrade()
    runner = CampaignRunner(settings, db)
    with pytest.raises(PluginNotFound, match="campaign engine"):
        runner.create(parse_campaign({**SPEC, "engine": {"name": "spark"}}))
    with pytest.raises(PluginNotFound, match="probe"):
        runner.create(parse_campaign({**SPEC, "probes": [{"name": "nope"}]}))
    with pytest.raises(ConfigError, match="payload_count"):
        runner.create(parse_campaign({**SPEC, "probes": [{"name": "dan", "options": {"payload_count": 0}}]}))
    assert list(attempts_of(db, "x")) == []
    db.dispose()
