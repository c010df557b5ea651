"""Fixtures for the privacy tests: a key ring, an audit log and a conversation store on a moved clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from bastion.app import create_app
from bastion.auth.keys import KeyInfo, KeyStore, Role
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.privacy.audit import AuditLog
from bastion.privacy.conversations import ConversationStore
from bastion.privacy.crypto import KeyRing, new_key
from bastion.privacy.service import Privacy
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


class PrivacyClient(TestClient):
    """A client of the whole app (echo chat models, list moderation) on a moved clock."""

    admin_key: str
    keys: KeyStore
    privacy: Privacy
    clock: Clock

    def key(self, role: Role = Role.CLIENT, user_id: str | None = None) -> tuple[str, KeyInfo]:
        """A new key (secret, info), for a new user unless `user_id` is given."""
        return self.keys.create(role, f"test {role.value}", user_id=user_id)

    def as_(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    def chat(self, secret: str, *contents: str, **body: Any) -> Any:
        """A chat completion with the given user turns (answers echo); waits until it is stored."""
        messages: list[dict[str, str]] = []
        for i, content in enumerate(contents):
            if i:
                messages.append({"role": "assistant", "content": contents[i - 1]})
            messages.append({"role": "user", "content": content})
        response = self.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": messages, **body},
            headers=self.as_(secret),
        )
        assert response.status_code == 200, response.text
        self.flush()
        return response.json()

    def flush(self) -> None:
        self.privacy.flush()


@pytest.fixture
def make_api(
    make_settings: Callable[..., Settings], database: Database, clock: Clock
) -> Iterator[Callable[..., PrivacyClient]]:
    """Build app clients on the test database; keyword arguments are privacy settings."""
    from tests.gateway.helpers import ECHO_MODELS, TEST_MODERATION

    opened: list[PrivacyClient] = []

    def make(**privacy: Any) -> PrivacyClient:
        settings = make_settings(
            moderation=TEST_MODERATION, llm=ECHO_MODELS, privacy={"purge_interval_s": 0, **privacy}
        )
        app = create_app(settings, database=database, clock=clock)
        keys = KeyStore(database, app.state.privacy.audit)
        admin, _ = keys.create(Role.ADMIN, "privacy admin")
        api = PrivacyClient(app, headers={"Authorization": f"Bearer {admin}"})
        api.__enter__()
        api.admin_key, api.keys, api.privacy, api.clock = admin, keys, app.state.privacy, clock
        opened.append(api)
        return api

    yield make
    for api in opened:
        api.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., PrivacyClient]) -> PrivacyClient:
    return make_api()
