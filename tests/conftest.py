"""Shared fixtures: isolated state, a database per test on SQLite and on PostgreSQL, apps and clients."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports settings or transformers: offline, and no user configuration.
# The test home only holds caches keyed by content hashes (the ONNX graph, converted models, embeddings),
# so it persists between runs under .cache/ to spare rebuilding them; every database is per test.
REPO = Path(__file__).resolve().parent.parent
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["BASTION_HOME"] = str(REPO / ".cache" / "test-home")
os.environ.pop("BASTION_CONFIG", None)
os.environ.pop("BASTION_DATABASE_URL", None)
os.environ.setdefault("BASTION_DATA_DIR", str(REPO.parent / "shared" / "data"))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bastion.app import create_app  # noqa: E402
from bastion.auth.keys import KeyStore, Role  # noqa: E402
from bastion.core.settings import Settings, load_settings  # noqa: E402
from bastion.db.session import Database  # noqa: E402
from bastion.moderation.service import ModerationService  # noqa: E402

POSTGRES_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new schema in PostgreSQL (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    if POSTGRES_URL == "none":
        pytest.skip("BASTION_TEST_POSTGRES_URL=none: the PostgreSQL pass was turned off explicitly")
    schema = "bastion_test_" + secrets.token_hex(6)
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # a clear failure, not a silent skip: CI must run this pass
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc}); start it or set "
            "BASTION_TEST_POSTGRES_URL=none",
            pytrace=False,
        )
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The test database, migrated to head."""
    db = Database(database_url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    """Build settings for the test database; keyword overrides win (as the command line does)."""

    def build(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"database_url": database_url}
        base.update(overrides)
        return load_settings(**base)

    return build


@pytest.fixture(scope="session")
def embedded_service() -> Iterator[ModerationService]:
    """One moderation service with the shipped default model, shared by the whole run (loads once)."""
    service = ModerationService(load_settings())
    service.model()
    yield service
    service.close()


class ApiClient(TestClient):
    """A TestClient that knows an admin key and can mint keys of other roles."""

    admin_key: str
    keys: KeyStore

    def key_for(self, role: Role) -> str:
        secret, _ = self.keys.create(role, f"test {role.value}")
        return secret

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(
    make_settings: Callable[..., Settings], database: Database, embedded_service: ModerationService
) -> Iterator[ApiClient]:
    """An app on the test database with the real default model; requests carry an admin key."""
    settings = make_settings(moderation={"preload": False})
    app = create_app(settings, database=database, moderation=embedded_service)
    keys = KeyStore(database)
    admin_key, _ = keys.create(Role.ADMIN, "test admin")
    with ApiClient(app, headers={"Authorization": f"Bearer {admin_key}"}) as api:
        api.admin_key = admin_key
        api.keys = keys
        yield api


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server(
    make_settings: Callable[..., Settings], database: Database, embedded_service: ModerationService
) -> Iterator[tuple[LiveServer, str]]:
    """A real HTTP server with the default model; yields (server, admin key)."""
    settings = make_settings(moderation={"preload": False})
    app = create_app(settings, database=database, moderation=embedded_service)
    admin_key, _ = KeyStore(database).create(Role.ADMIN, "live admin")
    with LiveServer(app) as server:
        yield server, admin_key


CHROMIUM = os.environ.get("BASTION_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium driven by Playwright (no downloaded browsers) per test module."""
    import shutil

    from playwright.sync_api import sync_playwright

    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium, or set "
            "BASTION_TEST_CHROMIUM",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
