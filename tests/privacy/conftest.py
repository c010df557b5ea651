"""Fixtures for the privacy tests: a key ring, an audit log and a conversation store on a moved clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, select

from bastion.db.session import Database
from bastion.privacy.audit import AuditLog
from bastion.privacy.conversations import ConversationStore
from bastion.privacy.crypto import KeyRing, new_key
from bastion.privacy.settings import PrivacySettings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keyring(database: Database) -> KeyRing:
    return KeyRing(database, new_key())


@pytest.fixture
def audit(database: Database, keyring: KeyRing, clock: Clock) -> AuditLog:
    return AuditLog(database, keyring, Ed25519PrivateKey.generate(), clock=clock)


@pytest.fixture
def store(database: Database, keyring: KeyRing, audit: AuditLog, clock: Clock) -> ConversationStore:
    return ConversationStore(database, keyring, PrivacySettings(), audit=audit, clock=clock)


def scan_database(db: Database, *needles: str) -> list[tuple[str, str, str]]:
    """Every (table, column, needle) where a needle appears in any row of any table of the database."""
    metadata = MetaData()
    metadata.reflect(db.engine)
    hits: list[tuple[str, str, str]] = []
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in row._mapping.items():
                    text = _as_text(value)
                    hits += [(table.name, str(column), n) for n in needles if n in text]
    return hits


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    return str(value)
