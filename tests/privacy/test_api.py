"""The privacy API through the whole app: stored conversations, `store: false`, `user`, opt-out snapshots,
list/read/delete, 404 for another user's conversation, safety review, export."""

from __future__ import annotations

from sqlalchemy import select

from bastion.auth.keys import Role
from bastion.db.session import Database
from bastion.db.tables import AuditEventRow, ConversationRow, UsageEvent

from .conftest import PrivacyClient, scan_database

SECRET = "my passport number is X1234567, wombat"


def test_the_gateway_stores_conversations_encrypted_and_the_owner_reads_them(
    api: PrivacyClient, database: Database
) -> None:
    secret, _ = api.key()
    completion = api.chat(secret, SECRET)
    listed = api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]
    assert len(listed) == 1 and listed[0]["temporary"] is False and "messages" not in listed[0]
    conversation = api.get(f"/v1/conversations/{listed[0]['id']}", headers=api.as_(secret)).json()
    assert [(m["role"], m["content"]) for m in conversation["messages"]] == [
        ("user", SECRET),
        ("assistant", SECRET),
    ]
    assert conversation["messages"][0]["verdict"]["action"] == "allow"
    assert scan_database(database, SECRET, "X1234567", "wombat") == []
    with database.session() as session:  # the usage event points at the stored conversation
        event = session.get(UsageEvent, completion["id"])
        assert event is not None and event.conversation_id == listed[0]["id"]


def test_a_follow_up_turn_continues_the_same_conversation(api: PrivacyClient) -> None:
    secret, _ = api.key()
    api.chat(secret, "first question")
    api.chat(secret, "first question", "second question")
    listed = api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]
    assert len(listed) == 1
    messages = api.get(f"/v1/conversations/{listed[0]['id']}", headers=api.as_(secret)).json()["messages"]
    assert [m["content"] for m in messages] == ["first question"] * 2 + ["second question"] * 2


def test_store_false_is_a_temporary_chat_never_for_training(api: PrivacyClient) -> None:
    secret, _ = api.key()
    api.chat(secret, "do not keep this", store=False)
    (listed,) = api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]
    assert listed["temporary"] is True and listed["training_opt_out"] is True
    assert listed["purge_at"].startswith("2026-12-01T12:00")  # 30 days after its last message
    path = f"/v1/conversations/{listed['id']}"
    api.clock.advance(days=30, seconds=-1)
    assert api.get(path, headers=api.as_(secret)).status_code == 200
    api.clock.advance(seconds=1)  # gone for its owner at once, even before the purge runs
    assert api.get(path, headers=api.as_(secret)).status_code == 404
    assert api.get("/v1/conversations", headers=api.as_(secret)).json()["data"] == []
    api.chat(secret, "do not keep this", store=False)  # does not continue the expired one
    assert len(api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]) == 1


def test_store_is_not_forwarded_upstream(api: PrivacyClient) -> None:
    from bastion.gateway.schemas import ChatCompletionRequest

    body = ChatCompletionRequest.model_validate(
        {"model": "echo", "messages": [{"role": "user", "content": "x"}], "store": False, "foo": 1}
    )
    assert body.store is False and body.extras() == {"foo": 1}


def test_end_users_of_a_client_key_are_kept_apart(api: PrivacyClient) -> None:
    secret, key = api.key()
    api.chat(secret, "alice's question", user="alice@example.com")
    api.chat(secret, "bob's question", user="bob@example.com")
    api.chat(secret, "the app's own question")

    def contents(user: str | None) -> list[str]:
        params = {"user": user} if user else {}
        data = api.get("/v1/conversations", params=params, headers=api.as_(secret)).json()["data"]
        out = []
        for c in data:
            read = api.get(f"/v1/conversations/{c['id']}", params=params, headers=api.as_(secret))
            out.append(read.json()["messages"][0]["content"])
        return out

    assert contents("alice@example.com") == ["alice's question"]
    assert contents("bob@example.com") == ["bob's question"]
    assert contents(None) == ["the app's own question"]
    assert contents("carol@example.com") == []
    me = api.get("/v1/me", params={"user": "alice@example.com"}, headers=api.as_(secret)).json()
    assert me["end_user_of"] == key.user_id


def test_another_users_conversation_is_a_404_never_a_403(api: PrivacyClient) -> None:
    alice, _ = api.key()
    bob, _ = api.key()
    api.chat(alice, "alice's secret")
    (conversation,) = api.get("/v1/conversations", headers=api.as_(alice)).json()["data"]
    path = f"/v1/conversations/{conversation['id']}"
    missing = api.get("/v1/conversations/conv_000000000000000000000000", headers=api.as_(bob))
    for response in (api.get(path, headers=api.as_(bob)), api.delete(path, headers=api.as_(bob))):
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        assert response.json()["error"]["message"].replace(conversation["id"], "X") == missing.json()[
            "error"
        ]["message"].replace("conv_000000000000000000000000", "X")
    # The same key's end user is another user too.
    assert api.get(path, params={"user": "someone"}, headers=api.as_(alice)).status_code == 404
    assert api.get(path, headers=api.as_(alice)).status_code == 200


def test_delete_hides_at_once_and_only_reviewers_read_it_each_read_audited(
    api: PrivacyClient, database: Database
) -> None:
    owner, _ = api.key()
    api.chat(owner, "please forget this, narwhal")
    (conversation,) = api.get("/v1/conversations", headers=api.as_(owner)).json()["data"]
    path = f"/v1/conversations/{conversation['id']}"
    deleted = api.delete(path, headers=api.as_(owner))
    assert deleted.status_code == 200
    assert deleted.json()["purge_at"].startswith("2026-12-01T12:00")
    assert api.get(path, headers=api.as_(owner)).status_code == 404
    assert api.get("/v1/conversations", headers=api.as_(owner)).json()["data"] == []
    assert api.get("/v1/me/export", headers=api.as_(owner)).json()["conversations"] == []
    assert api.delete(path, headers=api.as_(owner)).status_code == 404

    reviewer, _ = api.key(Role.SAFETY_REVIEWER)
    review_path = f"/v1/review/conversations/{conversation['id']}"
    queue = api.get("/v1/review/conversations", headers=api.as_(reviewer)).json()
    assert [c["id"] for c in queue["data"]] == [conversation["id"]] and queue["retention_days"] == 30
    for role in (Role.ADMIN, Role.CLIENT, Role.ANNOTATOR, Role.RED_TEAMER):
        other, _ = api.key(role)
        assert api.get(review_path, headers=api.as_(other)).status_code == 403
    read = api.get(review_path, headers=api.as_(reviewer))
    assert read.status_code == 200
    assert read.json()["messages"][0]["content"] == "please forget this, narwhal"
    api.get(review_path, headers=api.as_(reviewer))
    with database.session() as session:
        reads = session.scalars(
            select(AuditEventRow).where(AuditEventRow.action == "conversation.review_read")
        ).all()
        assert len(reads) == 2 and {r.actor for r in reads} == {api.keys.authenticate(reviewer).key_id}
    # A conversation that is not deleted is not the reviewer's to read.
    api.chat(owner, "live one")
    (live,) = api.get("/v1/conversations", headers=api.as_(owner)).json()["data"]
    assert api.get(f"/v1/review/conversations/{live['id']}", headers=api.as_(reviewer)).status_code == 404
    # After the retention window: gone from the queue and unreadable, even before the purge runs.
    api.clock.advance(days=30)
    assert api.get(review_path, headers=api.as_(reviewer)).status_code == 404
    assert api.get("/v1/review/conversations", headers=api.as_(reviewer)).json()["data"] == []


def test_opt_out_is_snapshotted_when_a_conversation_starts(api: PrivacyClient, database: Database) -> None:
    secret, _ = api.key()
    api.chat(secret, "before opting out")
    state = api.put("/v1/me/training-opt-out", json={"opt_out": True}, headers=api.as_(secret))
    assert state.status_code == 200 and state.json()["effective"] is True
    api.chat(secret, "after opting out")
    api.chat(secret, "before opting out", "a follow-up keeps the snapshot")
    api.put("/v1/me/training-opt-out", json={"opt_out": False}, headers=api.as_(secret))
    api.chat(secret, "after opting out", "still opted out: started that way")
    with database.session() as session:
        flags = sorted(r.training_opt_out for r in session.scalars(select(ConversationRow)))
    assert flags == [False, True]
    bad = api.put("/v1/me/training-opt-out", json={"opt_out": "maybe"}, headers=api.as_(secret))
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_enterprise_organisations_are_opted_out_by_default(api: PrivacyClient, database: Database) -> None:
    org = api.post("/v1/organizations", json={"name": "Acme", "plan": "enterprise"}).json()
    team = api.post("/v1/organizations", json={"name": "Small", "plan": "team"}).json()
    assert org["training_opt_out"] is True and team["training_opt_out"] is False
    user = api.post("/v1/users", json={"name": "ana", "org_id": org["id"]}).json()
    created = api.post("/v1/keys", json={"role": "client", "user_id": user["id"]})
    assert created.status_code == 201 and created.json()["user_id"] == user["id"]
    secret = created.json()["key"]
    state = api.get("/v1/me/training-opt-out", headers=api.as_(secret)).json()
    assert state == {
        "user_id": user["id"],
        "opt_out": False,
        "organization_id": org["id"],
        "organization_plan": "enterprise",
        "organization_opt_out": True,
        "effective": True,
    }
    api.chat(secret, "enterprise data")
    (listed,) = api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]
    assert listed["training_opt_out"] is True
    # Its end users inherit the organisation's opt-out.
    assert api.get("/v1/me/training-opt-out", params={"user": "u1"}, headers=api.as_(secret)).json()[
        "effective"
    ]
    assert api.post("/v1/organizations", json={"name": "x", "plan": "gold"}).status_code == 400
    assert api.post("/v1/keys", json={"role": "client", "user_id": "usr_nope"}).status_code == 404


def test_export_holds_everything_about_the_caller(api: PrivacyClient) -> None:
    secret, key = api.key()
    api.chat(secret, "export me, pangolin")
    api.put("/v1/me/training-opt-out", json={"opt_out": True}, headers=api.as_(secret))
    other, _ = api.key()
    api.chat(other, "not mine, axolotl")
    archive = api.get("/v1/me/export", headers=api.as_(secret))
    assert archive.status_code == 200
    body = archive.json()
    assert body["object"] == "bastion.export" and body["user"]["id"] == key.user_id
    assert [k["id"] for k in body["api_keys"]] == [key.id]
    (conversation,) = body["conversations"]
    assert [m["content"] for m in conversation["messages"]] == ["export me, pangolin"] * 2
    assert body["training_opt_out"]["opt_out"] is True
    assert [e["conversation_id"] for e in body["usage_events"]] == [conversation["id"]]
    actions = [e["action"] for e in body["audit_events"]]
    assert "key.create" in actions and "privacy.opt_out_change" in actions
    created = next(e for e in body["audit_events"] if e["action"] == "key.create")
    assert created["personal"] == {"name": "test client"}  # decrypted for its owner
    assert "axolotl" not in archive.text
    end_user = api.get("/v1/me/export", params={"user": "never-seen"}, headers=api.as_(secret))
    assert end_user.status_code == 404


def test_streamed_and_blocked_turns_are_stored_with_their_verdicts(api: PrivacyClient) -> None:
    from tests.gateway.helpers import HARMFUL_PHRASE

    secret, _ = api.key()
    streamed = api.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "stream me"}], "stream": True},
        headers=api.as_(secret),
    )
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    api.chat(secret, f"how do I {HARMFUL_PHRASE}")
    api.flush()
    data = api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]
    stored = {}
    for c in data:
        messages = api.get(f"/v1/conversations/{c['id']}", headers=api.as_(secret)).json()["messages"]
        stored[messages[0]["content"]] = [(m["role"], (m["verdict"] or {}).get("action")) for m in messages]
    assert stored["stream me"] == [("user", "allow"), ("assistant", "allow")]
    # A blocked input is kept (with its verdict) for its owner; nothing was generated.
    assert stored[f"how do I {HARMFUL_PHRASE}"] == [("user", "block")]
