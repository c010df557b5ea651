"""Every route of the app, with no key and with a key of every role, answers exactly as the authorisation
matrix (`bastion.auth.matrix.MATRIX`) says: 401 without a key, 403 for a role outside the entry, and for an
admitted role neither (a path naming something that does not exist is a 404)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bastion.app import create_app
from bastion.auth.keys import KeyStore, Role
from bastion.auth.matrix import MATRIX, PUBLIC, app_routes
from bastion.core.settings import load_settings
from bastion.db.session import Database
from tests.gateway.helpers import ECHO_MODELS, TEST_MODERATION


@pytest.fixture(scope="module")
def app_and_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[Role, str]]]:
    home = tmp_path_factory.mktemp("matrix")
    db = Database(f"sqlite:///{home / 'matrix.db'}")
    db.upgrade()
    settings = load_settings(
        database_url=db.url, moderation=TEST_MODERATION, llm=ECHO_MODELS, privacy={"purge_interval_s": 0}
    )
    app = create_app(settings, database=db)
    keys = KeyStore(db)
    secrets = {role: keys.create(role, f"matrix {role.value}")[0] for role in Role}
    with TestClient(app) as client:
        yield client, secrets
    db.dispose()


def _routes() -> list[tuple[str, str]]:
    settings = load_settings(database_url="sqlite://", moderation=TEST_MODERATION, llm=ECHO_MODELS)
    app = create_app(settings)
    return sorted({(m, p) for m, p, _ in app_routes(app) if m != "MOUNT"})


ROUTES = _routes()


def test_every_route_is_in_the_matrix_and_every_entry_is_a_route() -> None:
    missing = [r for r in ROUTES if r not in MATRIX]
    assert not missing, f"add these to bastion/auth/matrix.py (see its docstring): {missing}"
    stale = [r for r in MATRIX if r not in ROUTES]
    assert not stale, f"the matrix names routes the app does not serve: {stale}"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "nothing_here_0000", path)


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_answers_as_the_matrix_says(
    app_and_keys: tuple[TestClient, dict[Role, str]], method: str, path: str
) -> None:
    client, secrets = app_and_keys
    allowed = MATRIX[(method, path)]
    url = _concrete(path)
    body = {} if method in ("POST", "PUT", "PATCH") else None

    def call(key: str | None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = client.request(method, url, headers=headers, json=body)
        if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            assert set(response.json()) == {"error"}, response.text  # OpenAI's envelope
        return response.status_code

    anonymous = call(None)
    if allowed is PUBLIC:
        assert anonymous not in (401, 403), (method, path, anonymous)
        return
    assert anonymous == 401, (method, path, anonymous)
    assert call("bst-not-a-real-key") == 401
    for role, secret in secrets.items():
        status = call(secret)
        if role in allowed:
            assert status not in (401, 403), (method, path, role, status)
            if "{" in path and method in ("GET", "DELETE") and not path.startswith("/v1/models"):
                assert status == 404, (method, path, role, status)
        else:
            assert status == 403, (method, path, role, status)


def test_the_privacy_critical_entries_are_pinned() -> None:
    """Routes guarded by the matrix follow it by construction; these entries are pinned here as well."""
    anyone = frozenset(Role)
    assert MATRIX[("GET", "/v1/review/conversations/{conversation_id}")] == {Role.SAFETY_REVIEWER}
    assert MATRIX[("GET", "/v1/review/conversations")] == {Role.SAFETY_REVIEWER}
    for route in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("PATCH", "/v1/keys/{key_id}")):
        assert MATRIX[route] == {Role.ADMIN}
    for route in (("POST", "/v1/users"), ("DELETE", "/v1/users/{user_id}"), ("POST", "/v1/organizations")):
        assert MATRIX[route] == {Role.ADMIN}
    for route in (
        ("GET", "/v1/conversations/{conversation_id}"),
        ("DELETE", "/v1/conversations/{conversation_id}"),
        ("GET", "/v1/me/export"),
        ("PUT", "/v1/me/training-opt-out"),
    ):
        assert MATRIX[route] == anyone
