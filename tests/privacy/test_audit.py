import dataclasses
import hashlib

import pytest
from sqlalchemy import delete, insert, update

from bastion.db.session import Database
from bastion.db.tables import AuditCheckpointRow, AuditEventRow
from bastion.privacy.audit import (
    AuditLog,
    event_leaf_data,
    leaf_hash,
    merkle_root,
    verify_checkpoint,
)
from bastion.privacy.crypto import KeyRing

from .conftest import Clock, scan_database


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_merkle_root_matches_a_hand_computed_tree() -> None:
    leaves = [_h(b"\x00" + bytes([i])) for i in range(5)]
    assert leaves[0] == leaf_hash(b"\x00")
    n01 = _h(b"\x01" + leaves[0] + leaves[1])
    n23 = _h(b"\x01" + leaves[2] + leaves[3])
    assert merkle_root(leaves[:1]) == leaves[0]
    assert merkle_root(leaves[:3]) == _h(b"\x01" + n01 + leaves[2])
    assert merkle_root(leaves[:4]) == _h(b"\x01" + n01 + n23)
    assert merkle_root(leaves) == _h(b"\x01" + _h(b"\x01" + n01 + n23) + leaves[4])
    assert merkle_root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _fill(audit: AuditLog, clock: Clock, count: int = 5) -> None:
    for i in range(count):
        clock.advance(seconds=1)
        audit.append("admin", "key.create", f"key{i}", details={"role": "client", "n": i})


def _verify_fails(audit: AuditLog, kind: str, seq: int) -> None:
    report = audit.verify()
    assert not report.ok
    assert (report.kind, report.seq) == (kind, seq), report.problem
    assert report.problem and str(seq) in report.problem


def test_untouched_log_verifies(audit: AuditLog, clock: Clock) -> None:
    _fill(audit, clock)
    report = audit.verify()
    assert report.ok and report.tree_size == 5 and report.checkpoints == 5
    head = audit.head()
    assert head is not None and head.root_hash == report.root_hash


def test_edited_details_are_named(audit: AuditLog, clock: Clock, database: Database) -> None:
    _fill(audit, clock)
    with database.session() as s:
        s.execute(
            update(AuditEventRow).where(AuditEventRow.seq == 3).values(details={"role": "admin", "n": 2})
        )
    _verify_fails(audit, "edited", 3)


def test_edit_with_a_rewritten_leaf_hash_is_caught_by_the_signed_heads(
    audit: AuditLog, clock: Clock, database: Database
) -> None:
    _fill(audit, clock)
    event = audit.events()[1]
    forged = {"role": "admin", "n": 1}
    leaf = leaf_hash(
        event_leaf_data(event.seq, event.created_at, event.actor, event.action, event.target, None, forged)
    )
    with database.session() as s:
        s.execute(
            update(AuditEventRow).where(AuditEventRow.seq == 2).values(details=forged, leaf_hash=leaf.hex())
        )
    _verify_fails(audit, "edited", 2)


@pytest.mark.parametrize("seq", [2, 5])
def test_removed_events_are_named(audit: AuditLog, clock: Clock, database: Database, seq: int) -> None:
    _fill(audit, clock)
    with database.session() as s:
        s.execute(delete(AuditEventRow).where(AuditEventRow.seq == seq))
    _verify_fails(audit, "removed", seq)


def test_inserted_event_is_named_even_with_a_valid_leaf(
    audit: AuditLog, clock: Clock, database: Database
) -> None:
    _fill(audit, clock)
    when = clock.advance(seconds=1)
    leaf = leaf_hash(event_leaf_data(6, when, "admin", "key.revoke", "key0", None, {}))
    with database.session() as s:
        s.execute(
            insert(AuditEventRow).values(
                seq=6,
                created_at=when,
                actor="admin",
                action="key.revoke",
                target="key0",
                subject=None,
                details={},
                leaf_hash=leaf.hex(),
            )
        )
    _verify_fails(audit, "inserted", 6)


def test_swapped_events_are_named(audit: AuditLog, clock: Clock, database: Database) -> None:
    _fill(audit, clock)
    with database.session() as s:
        s.execute(update(AuditEventRow).where(AuditEventRow.seq == 2).values(seq=-1))
        s.execute(update(AuditEventRow).where(AuditEventRow.seq == 4).values(seq=2))
        s.execute(update(AuditEventRow).where(AuditEventRow.seq == -1).values(seq=4))
    _verify_fails(audit, "reordered", 2)


def test_checkpoint_signature_verifies_and_fails_on_a_changed_root(audit: AuditLog, clock: Clock) -> None:
    _fill(audit, clock, 3)
    head = audit.head()
    assert head is not None and head.tree_size == 3
    assert verify_checkpoint(head)
    assert verify_checkpoint(head, audit.public_key)
    changed = dataclasses.replace(head, root_hash="00" * 32)
    assert not verify_checkpoint(changed)
    assert not verify_checkpoint(dataclasses.replace(head, tree_size=2))


def test_personal_fields_are_encrypted_and_shredding_keeps_the_tree(
    audit: AuditLog, keyring: KeyRing, clock: Clock, database: Database
) -> None:
    _fill(audit, clock, 2)
    event = audit.append(
        "reviewer", "conversation.read", "conv:x", subject="alice", personal={"email": "alice@example.org"}
    )
    _fill(audit, clock, 1)
    assert audit.personal(event) == {"email": "alice@example.org"}
    assert scan_database(database, "alice@example.org") == []
    keyring.shred("alice")
    assert audit.personal(audit.events()[2]) is None
    assert audit.verify().ok


def test_a_trusted_head_catches_a_log_cut_back_with_its_checkpoints(
    audit: AuditLog, clock: Clock, database: Database
) -> None:
    _fill(audit, clock)
    trusted = audit.head()
    assert trusted is not None and audit.verify(trusted).ok
    with database.session() as s:
        s.execute(delete(AuditEventRow).where(AuditEventRow.seq == 5))
        s.execute(delete(AuditCheckpointRow).where(AuditCheckpointRow.tree_size == 5))
    assert audit.verify().ok  # indistinguishable from a log of four events without an outside head
    report = audit.verify(trusted)
    assert (report.ok, report.kind, report.seq) == (False, "removed", 5)
    forged = dataclasses.replace(trusted, root_hash="11" * 32)
    assert audit.verify(forged).kind == "signature"
