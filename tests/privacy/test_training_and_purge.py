"""Training exports never include opted-out, temporary, deleted or purged conversations; the purge removes
a conversation everywhere (rows, ciphertexts, usage-event references, export manifests and files, derived
rows) on time and not before; the server runs it on a schedule."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bastion.db.session import Database
from bastion.db.tables import TrainingExportItemRow, TrainingExportRow, UsageEvent
from bastion.privacy import conversations
from bastion.privacy.cli import privacy_app
from bastion.privacy.training import export_training

from .conftest import PrivacyClient, scan_database


def _conversation_id(api: PrivacyClient, secret: str, **params: str) -> str:
    data = api.get("/v1/conversations", params=params, headers=api.as_(secret)).json()["data"]
    return str(data[0]["id"])


def _export(api: PrivacyClient, path: Path | None = None) -> dict[str, list[str]]:
    export = export_training(api.privacy.store, api.privacy.accounts, actor="test", path=path)
    return {r.conversation_id: [m["content"] for m in r.messages] for r in export.records}  # type: ignore[misc]


def test_training_export_excludes_opted_out_temporary_deleted_and_purged(
    api: PrivacyClient, database: Database
) -> None:
    opted_in, _ = api.key()
    api.chat(opted_in, "trainable, lemur")
    trainable = _conversation_id(api, opted_in)
    api.chat(opted_in, "temporary, tapir", store=False)
    api.chat(opted_in, "to be deleted, dingo")
    deleted = _conversation_id(api, opted_in)
    api.delete(f"/v1/conversations/{deleted}", headers=api.as_(opted_in))
    opted_out, _ = api.key()
    api.put("/v1/me/training-opt-out", json={"opt_out": True}, headers=api.as_(opted_out))
    api.chat(opted_out, "opted out, okapi")
    enterprise = api.post("/v1/organizations", json={"name": "E", "plan": "enterprise"}).json()
    user = api.post("/v1/users", json={"org_id": enterprise["id"]}).json()
    corporate = api.post("/v1/keys", json={"role": "client", "user_id": user["id"]}).json()["key"]
    api.chat(corporate, "enterprise, ermine")
    api.chat(opted_in, "end user opted out, eland", user="eu-1")
    api.put(
        "/v1/me/training-opt-out", params={"user": "eu-1"}, json={"opt_out": True}, headers=api.as_(opted_in)
    )

    exported = _export(api)
    assert exported == {trainable: ["trainable, lemur", "trainable, lemur"]}
    # Opting out later also withdraws earlier conversations from future exports.
    api.put("/v1/me/training-opt-out", json={"opt_out": True}, headers=api.as_(opted_in))
    assert _export(api) == {}
    with database.session() as session:
        assert [r.conversations for r in session.scalars(select(TrainingExportRow))] in ([1, 0], [0, 1])
        (item,) = session.scalars(select(TrainingExportItemRow)).all()
        assert item.conversation_id == trainable and len(item.sha256) == 64


def test_purge_is_not_early_is_on_time_and_leaves_no_residue_anywhere(
    api: PrivacyClient, database: Database, tmp_path: Path
) -> None:
    hits: list[Sequence[str]] = []

    def derived_hook(session: Session, ids: Sequence[str]) -> int:  # a capability's derived copies
        hits.append(list(ids))
        return len(ids)

    conversations.register_purge_hook(derived_hook)
    try:
        _purge_scenario(api, database, tmp_path, hits)
    finally:
        conversations.PURGE_HOOKS.remove(derived_hook)


def _purge_scenario(
    api: PrivacyClient, database: Database, tmp_path: Path, hits: list[Sequence[str]]
) -> None:
    secret, _ = api.key()
    completion = api.chat(secret, "delete me, quetzal", user="end-user-quetzal")
    doomed = _conversation_id(api, secret, user="end-user-quetzal")
    api.chat(secret, "keep me, capybara")
    kept = _conversation_id(api, secret)
    api.chat(secret, "temporary, gecko", store=False)
    temporary = next(
        c["id"]
        for c in api.get("/v1/conversations", headers=api.as_(secret)).json()["data"]
        if c["temporary"]
    )
    export_file = tmp_path / "train.jsonl"
    _export(api, export_file)
    assert "quetzal" in export_file.read_text() and "capybara" in export_file.read_text()
    api.delete(f"/v1/conversations/{doomed}", params={"user": "end-user-quetzal"}, headers=api.as_(secret))

    api.clock.advance(days=30, seconds=-1)
    early = api.privacy.purge()
    assert early.conversations == 0
    assert scan_database(database, doomed, temporary)  # still there, for safety review
    api.clock.advance(seconds=1)
    report = api.privacy.purge()
    assert report.conversations == 2 and report.messages == 4
    assert report.usage_refs == 2 and report.export_items == 1 and len(report.exports_invalidated) == 1
    assert sorted(hits[0]) == sorted([doomed, temporary]) and report.derived == 2

    needles = (doomed, temporary, "quetzal", "gecko", "end-user-quetzal")
    assert scan_database(database, *needles) == []  # every table, every column
    text = export_file.read_text()
    assert "quetzal" not in text and "capybara" in text
    with database.session() as session:
        export = session.scalars(select(TrainingExportRow)).one()
        assert export.invalidated_at is not None and export.purged == 1
        import hashlib

        assert export.sha256 == hashlib.sha256(export_file.read_bytes()).hexdigest()
        event = session.get(UsageEvent, completion["id"])  # usage metadata stays, unlinked
        assert event is not None and event.conversation_id is None
    messages = api.get(f"/v1/conversations/{kept}", headers=api.as_(secret)).json()["messages"]
    assert messages[0]["content"] == "keep me, capybara"
    assert api.privacy.purge().conversations == 0
    events = [json.dumps(e.details) for e in api.privacy.audit.events() if e.action == "conversation.purge"]
    assert len(events) == 1 and '"conversations": 2' in events[0]


def test_the_server_purges_on_a_schedule(make_api, database: Database) -> None:  # type: ignore[no-untyped-def]
    api = make_api(purge_interval_s=0.05)
    secret, _ = api.key()
    api.chat(secret, "scheduled, jerboa")
    doomed = _conversation_id(api, secret)
    api.delete(f"/v1/conversations/{doomed}", headers=api.as_(secret))
    time.sleep(0.3)
    assert scan_database(database, doomed)  # the schedule ran, and kept it: not due yet
    api.clock.advance(days=30)
    deadline = time.monotonic() + 10
    while scan_database(database, doomed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scan_database(database, doomed) == []


def test_cli_export_training_writes_jsonl_and_records_the_manifest(
    api: PrivacyClient, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, _ = api.key()
    api.chat(secret, "for the cli, ibex")
    monkeypatch.setenv("BASTION_DATABASE_URL", database.url)
    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(privacy_app, ["export-training", "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["conversations"] == 1 and summary["path"] == str(out.resolve())
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["messages"][0]["content"] == "for the cli, ibex"
    bad = CliRunner().invoke(
        privacy_app, ["export-training", "--output", str(tmp_path / "x"), "--limit", "0"]
    )
    assert bad.exit_code != 0
    purge = CliRunner().invoke(privacy_app, ["purge", "--now", "not-a-time"])
    assert purge.exit_code == 1 and "ISO 8601" in purge.output
