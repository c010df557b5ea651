"""The one test on the local model: a two-attempt campaign against SmolLM2 on CPU, end to end."""

from __future__ import annotations

from pathlib import Path

from bastion.core.settings import load_settings
from bastion.db.session import Database
from bastion.redteam.campaign import CampaignRunner, parse_campaign
from bastion.redteam.report import attempts_of


def test_campaign_against_the_local_model(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'local.db'}")
    db = Database(settings.resolved_database_url)
    db.upgrade()
    spec = parse_campaign(
        {
            "name": "local",
            "samples": 1,
            "target": {
                "type": "chat",
                "options": {"backend": "local"},
                "params": {"max_tokens": 8, "temperature": 0.0},
            },
            "probes": [{"name": "simplesafetytests"}],
            "scorers": [{"name": "refusal"}],
        }
    )
    runner = CampaignRunner(settings, db)
    run_id = runner.create(spec)
    summary = runner.run(run_id)
    rows = list(attempts_of(db, run_id))
    db.dispose()
    assert summary["run"]["status"] == "completed" and len(rows) == 2
    assert {r.probe for r in rows} == {"simplesafetytests", "xstest"}
    for row in rows:
        assert row.error is None and row.response, "the local model answered"
        assert row.verdict in ("fail", "pass", "over_refusal")
        assert row.scores["refusal"] is not None and "classifier" in row.rationales["refusal"]
