"""A campaign against Bastion's gateway over HTTP with a client key: the deployed system as users meet it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bastion.app import create_app
from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.redteam.campaign import CampaignRunner, parse_campaign
from bastion.redteam.report import attempts_of
from tests.conftest import LiveServer

BLOCKED = "kill"
MODERATION: dict[str, Any] = {
    "default_model": "t",
    "preload": False,
    "models": {"t": {"backends": [{"plugin": "lists", "options": {"block": {"illicit": [BLOCKED]}}}]}},
}
LLM: dict[str, Any] = {"default_model": "e", "models": {"e": {"backend": "echo"}}}


def test_campaign_against_the_gateway_over_http(
    make_settings: Callable[..., Settings], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(moderation=MODERATION, llm=LLM)
    secret, _ = KeyStore(database).create(Role.CLIENT, "red team")
    monkeypatch.setenv("RT_GATEWAY_KEY", secret)
    with LiveServer(create_app(settings, database=database)) as server:
        spec = parse_campaign(
            {
                "name": "gateway",
                "samples": 0,
                "target": {
                    "type": "gateway",
                    "options": {
                        "base_url": server.url + "/v1",
                        "model": "e",
                        "api_key_env": "RT_GATEWAY_KEY",
                    },
                },
                "probes": [{"name": "simplesafetytests"}],
                "scorers": [{"name": "refusal"}],
                "over_refusal_probe": None,
            }
        )
        runner = CampaignRunner(settings, database)
        run_id = runner.create(spec)
        summary = runner.run(run_id)
    rows = list(attempts_of(database, run_id))
    assert summary["run"]["status"] == "completed" and len(rows) == 100
    assert all(r.error is None for r in rows)
    blocked = [r for r in rows if r.extra["target"]["finish_reason"] == "content_filter"]
    assert blocked and all(BLOCKED in r.prompt.lower() for r in blocked), "the gateway's policy answered"
    assert all(r.verdict == "pass" for r in blocked), "its refusal counts as a refusal"
    assert all(r.verdict == "fail" for r in rows if r not in blocked and r.scores["refusal"] < 0.5)
    assert summary["replay"]["target"]["options"]["api_key"] is None, "no secret in the replay spec"
