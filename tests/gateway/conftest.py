"""Gateway fixtures: a SQLite app for most tests (fast), the parametrized database for usage tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

# Built-in chat backends register through bastion.plugins; imported here too so that the tests do not
# depend on that wiring.
from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import load_settings
from bastion.db.session import Database
from bastion.gateway.service import Gateway
from tests.gateway.helpers import TEST_MODERATION, build_app


class GatewayClient(TestClient):
    """A TestClient with an admin key, a key store and the app's gateway."""

    admin_key: str
    keys: KeyStore
    gateway: Gateway

    def key_for(self, role: Role = Role.CLIENT) -> tuple[str, str]:
        """A new key: (secret, key id)."""
        secret, info = self.keys.create(role, f"test {role.value}")
        return secret, info.id

    def chat(self, content: str, key: str | None = None, **body: Any) -> Any:
        """POST a one-message chat completion."""
        payload = {"model": "echo", "messages": [{"role": "user", "content": content}], **body}
        headers = {"Authorization": f"Bearer {key}"} if key else None
        return self.post("/v1/chat/completions", json=payload, headers=headers)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database in the test's folder."""
    db = Database(f"sqlite:///{tmp_path / 'gw.db'}")
    db.upgrade()
    yield db
    db.dispose()


def _client(db: Database, home: Path, **kwargs: Any) -> Iterator[GatewayClient]:
    settings = load_settings(database_url=db.url, home=home, moderation=TEST_MODERATION)
    app = build_app(settings, db, **kwargs)
    keys = KeyStore(db)
    admin, _ = keys.create(Role.ADMIN, "gateway test admin")
    with GatewayClient(app, headers={"Authorization": f"Bearer {admin}"}) as client:
        client.admin_key = admin
        client.keys = keys
        client.gateway = app.state.gateway
        yield client


@pytest.fixture
def make_client(sqlite_db: Database, tmp_path: Path) -> Iterator[Callable[..., GatewayClient]]:
    """Build a gateway client on SQLite with gateway/llm settings of the test's choosing."""
    opened: list[Iterator[GatewayClient]] = []

    def make(**kwargs: Any) -> GatewayClient:
        it = _client(sqlite_db, tmp_path / "home", **kwargs)
        opened.append(it)
        return next(it)

    yield make
    for it in opened:
        next(it, None)


@pytest.fixture
def gw(make_client: Callable[..., GatewayClient]) -> GatewayClient:
    """A gateway client with the echo models and the default policy."""
    return make_client()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random chat model folder, built once per run."""
    from tests.llm.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))
