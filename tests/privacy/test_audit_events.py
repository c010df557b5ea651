"""Every security-relevant action is an audit event; personal fields are encrypted with the user's key;
authentication failures are recorded but rate-limited; the log verifies after all of it."""

from __future__ import annotations

from sqlalchemy import select, update

from bastion.auth.failures import AuthFailureAudit
from bastion.auth.keys import Role
from bastion.db.session import Database
from bastion.db.tables import AuditEventRow
from bastion.privacy.training import export_training

from .conftest import PrivacyClient, scan_database


def _actions(api: PrivacyClient) -> list[str]:
    return [e.action for e in api.privacy.audit.events()]


def test_each_security_relevant_action_is_audited(api: PrivacyClient, database: Database) -> None:
    created = api.post("/v1/keys", json={"role": "client", "name": "project kestrel"}).json()
    api.patch(f"/v1/keys/{created['id']}", json={"role": "annotator"})
    secret = created["key"]
    api.put("/v1/me/training-opt-out", json={"opt_out": True}, headers=api.as_(secret))
    api.put("/v1/me/training-opt-out", json={"opt_out": False}, headers=api.as_(secret))
    api.chat(secret, "audit me")
    (conversation,) = api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]
    export_training(api.privacy.store, api.privacy.accounts, actor="test")
    api.get("/v1/me/export", headers=api.as_(secret))
    api.delete(f"/v1/conversations/{conversation['id']}", headers=api.as_(secret))
    reviewer, _ = api.key(Role.SAFETY_REVIEWER)
    api.get(f"/v1/review/conversations/{conversation['id']}", headers=api.as_(reviewer))
    org = api.post("/v1/organizations", json={"name": "Org"}).json()
    api.put(f"/v1/organizations/{org['id']}/training-opt-out", json={"opt_out": True})
    api.clock.advance(days=31)
    api.privacy.purge()
    api.delete(f"/v1/keys/{created['id']}")
    actions = _actions(api)
    for action in (
        "key.create",
        "key.role_change",
        "privacy.opt_out_change",
        "training.export",
        "privacy.export",
        "conversation.delete",
        "conversation.review_read",
        "org.create",
        "privacy.org_opt_out_change",
        "conversation.purge",
        "key.revoke",
    ):
        assert action in actions, action
    assert actions.count("privacy.opt_out_change") == 2
    events = {e.action: e for e in api.privacy.audit.events()}
    assert events["key.role_change"].details == {"from": "client", "to": "annotator"}
    assert events["key.revoke"].actor == api.keys.authenticate(api.admin_key).key_id
    # Conversation ids never appear in the log: targets are pseudonyms that outlive the purge.
    assert scan_database(database, conversation["id"]) == []
    assert api.privacy.audit.verify().ok


def test_personal_fields_are_encrypted_and_shredding_erases_them(
    api: PrivacyClient, database: Database
) -> None:
    created = api.post("/v1/keys", json={"role": "client", "name": "Dr. Jane Personal"}).json()
    hits = scan_database(database, "Jane Personal")
    assert hits and not [h for h in hits if h[0].startswith("audit")]  # in the key's row, not in the log
    event = next(e for e in api.privacy.audit.events() if e.target == created["id"])
    assert api.privacy.audit.personal(event) == {"name": "Dr. Jane Personal"}
    api.privacy.keyring.shred(created["user_id"])
    assert api.privacy.audit.personal(event) is None
    assert api.privacy.audit.verify().ok  # the tree is intact


def test_auth_failures_are_audited_and_rate_limited(api: PrivacyClient, database: Database) -> None:
    for _ in range(5):
        assert api.get("/v1/conversations", headers={"Authorization": "Bearer bst-wrong"}).status_code == 401
    assert api.get("/v1/conversations", headers={"Authorization": ""}).status_code == 401
    failures = [e for e in api.privacy.audit.events() if e.action == "auth.failure"]
    assert len(failures) == 1
    assert failures[0].details["reason"] == "invalid_api_key" and failures[0].target == "/v1/conversations"
    assert "testclient" not in str(failures[0].details)  # the address is a pseudonym


def test_auth_failure_rate_limit_per_address_and_overall() -> None:
    class Trail:
        def __init__(self) -> None:
            self.events: list[dict[str, object]] = []

        def append(self, actor: str, action: str, target: str, **kwargs: object) -> None:
            self.events.append({"action": action, **(kwargs.get("details") or {})})  # type: ignore[dict-item]

    now = [0.0]
    trail = Trail()
    limiter = AuthFailureAudit(trail, window_s=60, global_per_window=3, clock=lambda: now[0])
    assert limiter.record("10.0.0.1", "invalid_api_key", "/v1/x")
    assert not limiter.record("10.0.0.1", "invalid_api_key", "/v1/x")
    assert not limiter.record("10.0.0.1", "invalid_api_key", "/v1/x")
    assert limiter.record("10.0.0.2", "invalid_api_key", "/v1/x")
    assert limiter.record("10.0.0.3", "invalid_api_key", "/v1/x")
    assert not limiter.record("10.0.0.4", "invalid_api_key", "/v1/x")  # over the overall cap
    now[0] = 61
    assert limiter.record("10.0.0.1", "invalid_api_key", "/v1/x")
    assert trail.events[-1]["suppressed"] == 2 and trail.events[-1]["others_suppressed"] == 1
    assert len(trail.events) == 4


def test_tampering_with_an_audit_event_in_the_table_is_named(api: PrivacyClient, database: Database) -> None:
    api.post("/v1/keys", json={"role": "client"})
    api.post("/v1/keys", json={"role": "annotator"})
    with database.session() as session:
        seq = session.scalars(select(AuditEventRow.seq).where(AuditEventRow.action == "key.create")).first()
        session.execute(update(AuditEventRow).where(AuditEventRow.seq == seq).values(actor="someone-else"))
    report = api.privacy.audit.verify()
    assert not report.ok and report.kind == "edited" and report.seq == seq


def test_policy_changes_are_audited_when_the_server_starts(make_settings, database: Database) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from bastion.app import create_app
    from tests.gateway.helpers import ECHO_MODELS, TEST_MODERATION

    def start(gateway: dict[str, object]) -> list[dict[str, object]]:
        settings = make_settings(
            moderation=TEST_MODERATION, llm=ECHO_MODELS, gateway=gateway, privacy={"purge_interval_s": 0}
        )
        app = create_app(settings, database=database)
        with TestClient(app):
            pass
        return [e.details for e in app.state.privacy.audit.events() if e.action == "policy.change"]

    first = start({})
    assert len(first) == 1 and first[0]["previous"] is None
    assert len(start({})) == 1  # unchanged: nothing new
    strict = {"policies": {"strict": {"refusal": "No."}}, "role_policies": {"client": "strict"}}
    changed = start(strict)
    assert len(changed) == 2 and changed[1]["previous"] == first[0]["sha256"]
    assert changed[1]["gateway_policies"] == ["default", "strict"]
