"""Property-based API fuzzing: schemathesis walks every operation of `/openapi.json` in-process (ASGI).

Positive and negative cases, a bounded and derandomized number per operation. No response may be a
5xx (`not_a_server_error`), every 4xx must be OpenAI's error envelope, and every status, content type and
body must be the one the schema documents.

Schemathesis' own pytest integration (`schema.parametrize()` / `from_fixture`) is not used: its lazy
loader sets `request.node._nodeid`, which pytest 9 no longer has. Each operation's documented
Hypothesis strategy (`APIOperation.as_strategy`) drives a plain `@given` test instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bastion.app import create_app
from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import Settings, load_settings
from bastion.db.session import Database
from bastion.moderation.service import ModerationService

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 60
ENVELOPE_FIELDS = {"message", "type", "param", "code"}


def openai_error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is `{"error": {"message", "type", "param", "code"}}` with a non-empty message."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except Exception as exc:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.text[:300]!r}") from exc
    assert isinstance(body, dict) and set(body) == {"error"}, f"not an OpenAI error envelope: {body!r}"
    error = body["error"]
    assert isinstance(error, dict) and set(error) == ENVELOPE_FIELDS, f"error fields: {error!r}"
    assert isinstance(error["message"], str) and error["message"], f"empty message: {error!r}"
    assert isinstance(error["type"], str) and error["type"], f"empty type: {error!r}"
    assert error["param"] is None or isinstance(error["param"], str), f"param: {error!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"code: {error!r}"
    return True


CHECKS = [
    not_a_server_error,
    openai_error_envelope,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class Api:
    """The app under test and the admin key its requests carry."""

    def __init__(self, app: Any, admin_key: str) -> None:
        self.app = app
        self.admin_key = admin_key


@pytest.fixture
def api(make_settings: Any, database: Database, embedded_service: ModerationService) -> Iterator[Api]:
    """An app on the shared default model and the test database (already migrated), and an admin key."""
    app_settings: Settings = make_settings(moderation={"preload": False})
    app = create_app(app_settings, database=database, moderation=embedded_service)
    admin_key, _ = KeyStore(database).create(Role.ADMIN, "schemathesis admin")
    yield Api(app, admin_key)


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """(METHOD, path, mode) for every operation the app documents: positive data for each, negative data
    for those with a request body (the only input that can be made invalid: path parameters are plain
    strings, and no operation takes query parameters). Building the app touches no database.
    """
    app = create_app(load_settings(database_url="sqlite://", moderation={"preload": False}))
    try:
        paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    finally:
        app.state.db.dispose()
    found = []
    for path, item in sorted(paths.items()):
        for method, spec in sorted(item.items()):
            found.append((method.upper(), path, GenerationMode.POSITIVE))
            query = [p for p in spec.get("parameters", []) if p.get("in") != "path"]
            if "requestBody" in spec or query:
                found.append((method.upper(), path, GenerationMode.NEGATIVE))
    return found


OPERATIONS = _operations()


@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {mode.value}" for m, p, mode in OPERATIONS]
)
def test_api_contract(api: Api, method: str, path: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operation = schema[path][method]
    headers = {"Authorization": f"Bearer {api.admin_key}"}

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except Exception as exc:
            exc.add_note(f"reproduce with: {case.as_curl_command(headers=headers)}")
            raise

    run()
