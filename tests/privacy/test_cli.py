import json
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from bastion.db.session import Database
from bastion.db.tables import AuditEventRow, ConversationRow
from bastion.privacy.audit import AuditLog, Checkpoint, load_signing_key, verify_checkpoint
from bastion.privacy.cli import audit_app, privacy_app
from bastion.privacy.conversations import ConversationStore
from bastion.privacy.crypto import KeyRing, load_master_key
from bastion.privacy.settings import PrivacySettings

runner = CliRunner()


@pytest.fixture
def home(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BASTION_DATABASE_URL", database.url)
    monkeypatch.setenv("BASTION_HOME", str(tmp_path))
    return tmp_path


def _services(database: Database, home: Path) -> tuple[KeyRing, AuditLog, ConversationStore]:
    keyring = KeyRing(database, load_master_key(PrivacySettings(), env="development", home=home))
    audit = AuditLog(database, keyring, load_signing_key(PrivacySettings(), env="development", home=home))
    return keyring, audit, ConversationStore(database, keyring, audit=audit)


def test_audit_verify_and_checkpoint(database: Database, home: Path) -> None:
    _, audit, _ = _services(database, home)
    for i in range(3):
        audit.append("admin", "key.create", f"key{i}")
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert "3 events" in result.output
    result = runner.invoke(audit_app, ["checkpoint"])
    assert result.exit_code == 0, result.output
    head = Checkpoint(**json.loads(result.output))
    assert head.tree_size == 3 and verify_checkpoint(head, audit.public_key)

    with database.session() as s:
        s.execute(update(AuditEventRow).where(AuditEventRow.seq == 2).values(target="key9"))
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 1
    assert "audit event 2 was edited" in " ".join(result.output.split())
    result = runner.invoke(audit_app, ["verify", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert (report["ok"], report["kind"], report["seq"]) == (False, "edited", 2)


def test_purge_with_a_given_time(database: Database, home: Path) -> None:
    _, _, store = _services(database, home)
    info = store.create("alice", "echo")
    store.append(info.id, "alice", "user", "hello")
    store.delete(info.id, "alice")
    with database.session() as s:
        deleted_at = s.get(ConversationRow, info.id).deleted_at  # type: ignore[union-attr]
    assert deleted_at is not None
    early = runner.invoke(privacy_app, ["purge", "--now", "2000-01-01T00:00:00", "--json"])
    assert early.exit_code == 0, early.output
    assert json.loads(early.output)["conversations"] == 0
    later = (deleted_at.replace(year=deleted_at.year + 1)).isoformat()
    result = runner.invoke(privacy_app, ["purge", "--now", later])
    assert result.exit_code == 0, result.output
    assert "purged 1 conversations (1 messages," in result.output
    assert runner.invoke(privacy_app, ["purge", "--now", "yesterday"]).exit_code == 1


def test_rotate_key_keeps_conversations_readable(database: Database, home: Path) -> None:
    _, _, store = _services(database, home)
    info = store.create("alice", "echo")
    store.append(info.id, "alice", "user", "still readable")
    before = (home / "keys" / "master.key").read_text()
    result = runner.invoke(privacy_app, ["rotate-key"])
    assert result.exit_code == 0, result.output
    assert "re-wrapped 1 data keys" in result.output
    assert (home / "keys" / "master.key").read_text() != before
    _, audit, store = _services(database, home)
    assert store.read(info.id, "alice").messages[0].content == "still readable"
    assert audit.events()[-1].action == "privacy.rotate_master_key"
    assert audit.verify().ok


def test_verify_against_a_saved_head(database: Database, home: Path) -> None:
    _, audit, _ = _services(database, home)
    audit.append("admin", "key.create", "key1")
    saved = home / "head.json"
    saved.write_text(runner.invoke(audit_app, ["checkpoint"]).output)
    assert runner.invoke(audit_app, ["verify", "--head", str(saved)]).exit_code == 0
    (home / "bad.json").write_text("{}")
    result = runner.invoke(audit_app, ["verify", "--head", str(home / "bad.json")])
    assert result.exit_code == 1 and "audit checkpoint" in result.output


def test_orgs_users_and_keys_commands(database: Database, home: Path) -> None:
    from bastion.auth.cli import keys_app
    from bastion.core.settings import get_settings

    get_settings.cache_clear()
    try:
        org = runner.invoke(
            privacy_app, ["orgs", "create", "--name", "Acme", "--plan", "enterprise", "--json"]
        )
        assert org.exit_code == 0, org.output
        org_id = json.loads(org.output)["id"]
        assert json.loads(org.output)["training_opt_out"] is True
        user = runner.invoke(privacy_app, ["users", "create", "--org", org_id, "--name", "ana", "--json"])
        user_id = json.loads(user.output)["id"]
        key = runner.invoke(keys_app, ["create", "--role", "client", "--user", user_id, "--json"])
        assert key.exit_code == 0, key.output
        key_id = json.loads(key.output)["id"]
        assert json.loads(key.output)["user_id"] == user_id
        changed = runner.invoke(keys_app, ["set-role", key_id, "annotator", "--json"])
        assert json.loads(changed.output)["role"] == "annotator"
        opted_in = runner.invoke(privacy_app, ["orgs", "set-training", org_id, "in"])
        assert opted_in.exit_code == 0 and "opted in" in opted_in.output
        listed = runner.invoke(privacy_app, ["orgs", "list", "--json"])
        assert {o["id"]: o["training_opt_out"] for o in json.loads(listed.output)}[org_id] is False
        users = runner.invoke(privacy_app, ["users", "list", "--org", org_id, "--json"])
        assert [u["id"] for u in json.loads(users.output)] == [user_id]
        bad = runner.invoke(privacy_app, ["orgs", "create", "--name", "x", "--plan", "gold"])
        assert bad.exit_code == 1 and "unknown plan" in bad.output
        missing = runner.invoke(privacy_app, ["users", "create", "--org", "org_nope"])
        assert missing.exit_code == 1 and "no organisation" in missing.output
        _, audit, _ = _services(database, home)
        actions = [e.action for e in audit.events()]
        assert {
            "org.create",
            "user.create",
            "key.create",
            "key.role_change",
            "privacy.org_opt_out_change",
        } <= set(actions)
    finally:
        get_settings.cache_clear()
