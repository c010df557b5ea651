"""Findings through the API on SQLite and PostgreSQL: the lifecycle, the workflow's rules, roles, audit."""

from __future__ import annotations

from typing import Any

from bastion.auth.keys import Role
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.redteam.findings import audit_log_for
from tests.redteam import findings_support
from tests.redteam.findings_support import FindingsClient, finding_body

api = findings_support.api
findings_settings = findings_support.findings_settings

URL = "/v1/redteam/findings"


def triage(api: FindingsClient, key: str, finding_id: str, status: str, reason: str | None = None) -> Any:
    body: dict[str, Any] = {"status": status}
    if reason is not None:
        body["reason"] = reason
    return api.post(f"{URL}/{finding_id}/triage", json=body, headers=api.as_(key))


def test_a_finding_goes_from_submission_to_verified(
    api: FindingsClient, database: Database, findings_settings: Settings
) -> None:
    expert, expert_id = api.key(Role.RED_TEAMER)
    reviewer, reviewer_id = api.key(Role.SAFETY_REVIEWER)

    created = api.post(URL, json=finding_body(), headers=api.as_(expert))
    assert created.status_code == 201, created.text
    finding = created.json()
    fid = finding["id"]
    assert finding["status"] == "new" and finding["reporter"] == expert_id
    assert finding["category"] == "illicit/violent" and finding["severity"] == "critical"
    assert finding["conversation"][0]["role"] == "user" and finding["target"] == "echo"

    for status in ("confirmed", "mitigated", "verified"):
        moved = triage(api, reviewer, fid, status, reason=f"step to {status}")
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == status

    # The expert still sees it, now verified, with the whole history.
    detail = api.get(f"{URL}/{fid}", headers=api.as_(expert))
    assert detail.status_code == 200
    body = detail.json()
    assert body["status"] == "verified"
    steps = [(e["action"], e["from_status"], e["to_status"], e["actor"]) for e in body["history"]]
    assert steps == [
        ("submit", None, "new", expert_id),
        ("triage", "new", "confirmed", reviewer_id),
        ("triage", "confirmed", "mitigated", reviewer_id),
        ("triage", "mitigated", "verified", reviewer_id),
    ]
    seqs = [e["audit_seq"] for e in body["history"]]
    assert all(isinstance(s, int) for s in seqs) and seqs == sorted(seqs)

    # Each step is in the audit log, and the log verifies.
    audit = audit_log_for(findings_settings, database)
    events = {e.seq: e for e in audit.events()}
    assert [events[s].action for s in seqs] == [
        "redteam.finding.submit",
        "redteam.finding.triage",
        "redteam.finding.triage",
        "redteam.finding.triage",
    ]
    last = events[seqs[-1]]
    assert last.actor == reviewer_id and last.target == f"finding:{fid}"
    assert last.details["from"] == "mitigated" and last.details["to"] == "verified"
    report = audit.verify()
    assert report.ok, report.problem
    assert report.tree_size >= 4


def test_invalid_transitions_are_refused(api: FindingsClient) -> None:
    reviewer, _ = api.key(Role.SAFETY_REVIEWER)
    fid = api.post(URL, json=finding_body()).json()["id"]

    for status in ("verified", "mitigated", "new"):
        refused = triage(api, reviewer, fid, status)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_transition"
        assert error["param"] == "status" and "a new finding cannot become" in error["message"]

    unknown = triage(api, reviewer, fid, "fixed")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "status"

    no_reason = triage(api, reviewer, fid, "wont_fix")
    assert no_reason.status_code == 400
    assert no_reason.json()["error"]["param"] == "reason"
    blank_reason = triage(api, reviewer, fid, "wont_fix", reason="   ")
    assert blank_reason.status_code == 400

    wont = triage(api, reviewer, fid, "wont_fix", reason="the model is retired next week")
    assert wont.status_code == 200
    assert wont.json()["status"] == "wont_fix"
    assert wont.json()["resolution"] == "the model is retired next week"
    assert triage(api, reviewer, fid, "verified").status_code == 409

    # Reconsidered, then reopened from mitigated and from verified.
    reopened = triage(api, reviewer, fid, "confirmed", reason="the model ships after all")
    assert reopened.status_code == 200 and reopened.json()["resolution"] is None
    assert triage(api, reviewer, fid, "mitigated").status_code == 200
    assert triage(api, reviewer, fid, "confirmed", reason="still reproduces").status_code == 200
    assert triage(api, reviewer, fid, "mitigated").status_code == 200
    assert triage(api, reviewer, fid, "verified").status_code == 200
    assert triage(api, reviewer, fid, "mitigated").status_code == 409
    assert triage(api, reviewer, fid, "confirmed", reason="regressed").status_code == 200

    missing = triage(api, reviewer, "fnd_doesnotexist", "confirmed")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_roles_decide_who_sees_and_does_what(api: FindingsClient) -> None:
    alice, alice_id = api.key(Role.RED_TEAMER)
    bob, _ = api.key(Role.RED_TEAMER)
    reviewer, reviewer_id = api.key(Role.SAFETY_REVIEWER)
    client, _ = api.key(Role.CLIENT)
    annotator, _ = api.key(Role.ANNOTATOR)

    fid = api.post(URL, json=finding_body(), headers=api.as_(alice)).json()["id"]
    bobs = api.post(URL, json=finding_body(severity="low"), headers=api.as_(bob)).json()["id"]

    # Bob cannot see, read or comment on Alice's finding: it does not exist for him.
    for response in (
        api.get(f"{URL}/{fid}", headers=api.as_(bob)),
        api.get(f"{URL}/{fid}/comments", headers=api.as_(bob)),
        api.post(f"{URL}/{fid}/comments", json={"body": "mine now"}, headers=api.as_(bob)),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found_error"
    assert [f["id"] for f in api.get(URL, headers=api.as_(bob)).json()["data"]] == [bobs]
    assert [f["id"] for f in api.get(URL, headers=api.as_(alice)).json()["data"]] == [fid]

    # A second key of Alice's account sees her findings; a key of another account does not.
    alice_user = next(k.user_id for k in api.keys.list() if k.id == alice_id)
    assert alice_user is not None
    alice_again, _ = api.keys.create(Role.RED_TEAMER, "alice's new key", user_id=alice_user)
    assert api.get(f"{URL}/{fid}", headers=api.as_(alice_again)).status_code == 200
    assert [f["id"] for f in api.get(URL, headers=api.as_(alice_again)).json()["data"]] == [fid]

    # Red teamers do not triage, even their own findings.
    refused = triage(api, alice, fid, "confirmed")
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"

    # Other roles have no business here.
    for key in (client, annotator):
        assert api.post(URL, json=finding_body(), headers=api.as_(key)).status_code == 403
        assert api.get(URL, headers=api.as_(key)).status_code == 403
        assert api.get(f"{URL}/{fid}", headers=api.as_(key)).status_code == 403
    assert api.get(URL, headers={"Authorization": "Bearer bst-nope"}).status_code == 401

    # Reviewers see everything; comments from the reporter and a reviewer are kept in order.
    everything = {f["id"] for f in api.get(URL, headers=api.as_(reviewer)).json()["data"]}
    assert {fid, bobs} <= everything
    first = api.post(f"{URL}/{fid}/comments", json={"body": "Also works in French."}, headers=api.as_(alice))
    assert first.status_code == 201 and first.json()["author"] == alice_id
    second = api.post(f"{URL}/{fid}/comments", json={"body": "Reproduced."}, headers=api.as_(reviewer))
    assert second.status_code == 201 and second.json()["author"] == reviewer_id
    comments = api.get(f"{URL}/{fid}/comments", headers=api.as_(alice)).json()
    assert [c["body"] for c in comments] == ["Also works in French.", "Reproduced."]
    assert api.post(f"{URL}/{fid}/comments", json={"body": ""}, headers=api.as_(alice)).status_code == 400

    # Filters.
    assert triage(api, reviewer, fid, "confirmed").status_code == 200
    confirmed = api.get(URL, params={"status": "confirmed"}, headers=api.as_(reviewer)).json()["data"]
    assert [f["id"] for f in confirmed] == [fid]
    assert api.get(URL, params={"status": "bogus"}, headers=api.as_(reviewer)).status_code == 400


def test_submissions_are_validated(api: FindingsClient) -> None:
    cases = [
        (finding_body(category="weapons"), "category"),
        (finding_body(severity="catastrophic"), "severity"),
        (finding_body(conversation=[]), "conversation"),
        (finding_body(conversation=[{"role": "assistant", "content": "hi"}]), "conversation"),
        (finding_body(summary=""), "summary"),
        ({**finding_body(), "status": "verified"}, "status"),
    ]
    for body, param in cases:
        response = api.post(URL, json=body)
        assert response.status_code == 400, (param, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert api.get(URL).json()["data"] == []
