"""`/v1/redteam/runs`: list, read, attempts, report and diff, by role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.app import create_app
from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.redteam.campaign import CampaignRunner, parse_campaign

SPEC: dict[str, Any] = {
    "name": "api",
    "samples": 2,
    "target": {"type": "chat", "options": {"backend": "echo", "backend_options": {"reply": "Sure, step 1."}}},
    "probes": [{"name": "advbench"}],
}


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], database: Database
) -> Iterator[tuple[TestClient, KeyStore, str]]:
    settings = make_settings(moderation={"preload": False, "default_model": "bastion-lists"})
    runner = CampaignRunner(settings, database)
    run_id = runner.create(parse_campaign(SPEC))
    runner.run(run_id)
    app = create_app(settings, database=database)
    with TestClient(app) as client:
        yield client, KeyStore(database), run_id


def auth(keys: KeyStore, role: Role) -> dict[str, str]:
    secret, _ = keys.create(role, f"test {role.value}")
    return {"Authorization": f"Bearer {secret}"}


def test_runs_for_red_teamers_and_reviewers(api: tuple[TestClient, KeyStore, str]) -> None:
    client, keys, run_id = api
    for role in (Role.RED_TEAMER, Role.SAFETY_REVIEWER, Role.ADMIN):
        headers = auth(keys, role)
        listing = client.get("/v1/redteam/runs", headers=headers)
        assert listing.status_code == 200
        assert listing.json()["data"][0]["id"] == run_id
    headers = auth(keys, Role.RED_TEAMER)
    detail = client.get(f"/v1/redteam/runs/{run_id}", headers=headers).json()
    assert detail["status"] == "completed" and detail["summary"]["totals"]["asr"]["n"] == 2
    assert detail["spec"]["name"] == "api"
    page = client.get(f"/v1/redteam/runs/{run_id}/attempts", headers=headers, params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["has_more"] is True
    rest = client.get(
        f"/v1/redteam/runs/{run_id}/attempts", headers=headers, params={"after": page["data"][-1]["seq"]}
    ).json()
    assert rest["has_more"] is False and len(rest["data"]) == detail["planned"] - 2
    assert all(a["rationales"] for a in page["data"])
    report = client.get(f"/v1/redteam/runs/{run_id}/report", headers=headers)
    assert (
        report.status_code == 200 and "text/html" in report.headers["content-type"] and "<svg" in report.text
    )
    diff = client.get("/v1/redteam/diff", headers=headers, params={"a": run_id, "b": run_id}).json()
    assert diff["new_failures"] == [] and diff["fixed"] == []


def test_runs_refused_to_other_roles(api: tuple[TestClient, KeyStore, str]) -> None:
    client, keys, run_id = api
    assert client.get("/v1/redteam/runs").status_code == 401
    for role in (Role.CLIENT, Role.ANNOTATOR):
        response = client.get(f"/v1/redteam/runs/{run_id}", headers=auth(keys, role))
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_error"


def test_unknown_run_is_404(api: tuple[TestClient, KeyStore, str]) -> None:
    client, keys, _ = api
    response = client.get("/v1/redteam/runs/rt-nope", headers=auth(keys, Role.ADMIN))
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
