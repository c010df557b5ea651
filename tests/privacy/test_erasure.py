"""Erasing a user (an admin erasing an account, or an app erasing one of its end users): conversations
removed everywhere, keys revoked, data keys destroyed (crypto-shredding), the audit log still verifies."""

from __future__ import annotations

from typer.testing import CliRunner

from bastion.auth.keys import Role
from bastion.db.session import Database
from bastion.privacy.cli import privacy_app

from .conftest import PrivacyClient, scan_database


def test_an_admin_erases_an_account_and_its_end_users(api: PrivacyClient, database: Database) -> None:
    secret, key = api.key()
    api.chat(secret, "account data, marmot")
    api.chat(secret, "end user data, vicuna", user="eu-9")
    ids = [c["id"] for c in api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]]
    ids += [
        c["id"]
        for c in api.get("/v1/conversations", params={"user": "eu-9"}, headers=api.as_(secret)).json()["data"]
    ]
    other, _ = api.key()
    api.chat(other, "someone else, kept")
    client, _ = api.key(Role.CLIENT)
    assert api.delete(f"/v1/users/{key.user_id}", headers=api.as_(client)).status_code == 403
    erased = api.delete(f"/v1/users/{key.user_id}")
    assert erased.status_code == 200, erased.text
    assert erased.json() == {
        "id": key.user_id,
        "object": "user.deleted",
        "deleted": True,
        "conversations": 2,
        "end_users": 1,
        "keys_revoked": 1,
        "data_keys_shredded": 2,
    }
    assert api.get("/v1/conversations", headers=api.as_(secret)).status_code == 401  # the key is revoked
    # The user id (random, not personal) is left only as the subject of audit events.
    assert {hit[0] for hit in scan_database(database, str(key.user_id))} == {"audit_events"}
    assert scan_database(database, *ids, "marmot", "vicuna") == []
    assert api.get("/v1/conversations", headers=api.as_(other)).json()["data"]
    assert api.delete(f"/v1/users/{key.user_id}").status_code == 404
    assert "user.delete" in [e.action for e in api.privacy.audit.events()]
    assert api.privacy.audit.verify().ok


def test_an_app_erases_one_of_its_end_users(api: PrivacyClient, database: Database) -> None:
    secret, _ = api.key()
    api.chat(secret, "erase me, bonobo", user="eu-1")
    api.chat(secret, "keep me, tamarin", user="eu-2")
    assert api.delete("/v1/me", headers=api.as_(secret)).status_code == 400  # an account is the admin's
    erased = api.delete("/v1/me", params={"user": "eu-1"}, headers=api.as_(secret))
    assert erased.status_code == 200 and erased.json()["conversations"] == 1
    assert scan_database(database, "bonobo") == []
    assert api.get("/v1/conversations", params={"user": "eu-1"}, headers=api.as_(secret)).json()["data"] == []
    kept = api.get("/v1/conversations", params={"user": "eu-2"}, headers=api.as_(secret)).json()["data"]
    assert len(kept) == 1
    assert api.delete("/v1/me", params={"user": "never-seen"}, headers=api.as_(secret)).status_code == 404
    assert api.get("/v1/me", headers=api.as_(secret)).status_code == 200  # the account itself is intact


def test_cli_delete_user_needs_confirmation(api: PrivacyClient, database: Database, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secret, key = api.key()
    api.chat(secret, "cli erasure, quokka")
    monkeypatch.setenv("BASTION_DATABASE_URL", database.url)
    runner = CliRunner()
    refused = runner.invoke(privacy_app, ["delete-user", str(key.user_id)])
    assert refused.exit_code == 1 and "--yes" in refused.output
    done = runner.invoke(privacy_app, ["delete-user", str(key.user_id), "--yes"])
    assert done.exit_code == 0, done.output
    assert "1 conversations" in done.output
    assert scan_database(database, "quokka") == []
    missing = runner.invoke(privacy_app, ["delete-user", "usr_nope", "--yes"])
    assert missing.exit_code == 1 and "no user" in missing.output
