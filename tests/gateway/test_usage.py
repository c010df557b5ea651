"""Usage events on SQLite and PostgreSQL: one per request, with moderation outcomes and no content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.db.tables import UsageEvent
from bastion.gateway.service import Gateway
from tests.gateway.helpers import BOMB_QUESTION, HARMFUL_PHRASE, TEST_MODERATION, build_app

SECRET_WORDS = "my private words about gardening"


def test_usage_events_are_recorded_without_content(
    make_settings: Callable[..., Settings], database: Database, tmp_path: Path
) -> None:
    settings = make_settings(moderation=TEST_MODERATION)
    app = build_app(settings, database, gateway={"limits": {"default": {"requests_per_minute": 3}}})
    key, info = KeyStore(database).create(Role.CLIENT, "usage test")
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:

        def chat(content: str, **extra: object) -> int:
            body = {"model": "echo", "messages": [{"role": "user", "content": content}], "user": "end-user-7"}
            return client.post("/v1/chat/completions", json={**body, **extra}).status_code

        assert chat(SECRET_WORDS) == 200
        assert chat(BOMB_QUESTION) == 200
        assert chat("tell me", model="harmful", stream=True) == 200
        assert chat("one too many") == 429
        gateway: Gateway = app.state.gateway
        gateway.usage.flush()
    with database.session() as session:
        rows = list(session.scalars(select(UsageEvent).order_by(UsageEvent.created_at)))
    assert [r.status for r in rows] == ["ok", "blocked_input", "blocked_output", "error"]
    ok, blocked_in, blocked_out, limited = rows
    assert {r.key_id for r in rows} == {info.id}
    assert ok.user == "end-user-7" and ok.model == "echo" and ok.backend == "echo" and ok.policy == "default"
    assert ok.prompt_tokens == 5 and ok.completion_tokens == 5 and ok.action == "allow"
    assert ok.latency_ms > 0 and ok.upstream_ms is not None
    assert ok.moderation_ms > 0 and ok.moderation_ms + ok.upstream_ms <= ok.latency_ms
    assert blocked_in.moderation_ms > 0 and blocked_out.moderation_ms > 0
    assert limited.moderation_ms == 0
    assert blocked_in.input_categories["illicit/violent"] == "block" and blocked_in.action == "block"
    assert blocked_in.upstream_ms is None and blocked_in.input_scores["illicit/violent"] == 1.0
    assert blocked_out.stream is True and blocked_out.output_categories["illicit/violent"] == "block"
    assert limited.http_status == 429 and limited.error_code == "rate_limit_exceeded"
    # No content anywhere in the table.
    with database.engine.connect() as conn:
        dump = str([tuple(r) for r in conn.exec_driver_sql("SELECT * FROM usage_events")])
    for text in (SECRET_WORDS, "gardening", "pipe bomb", HARMFUL_PHRASE, "hardware store"):
        assert text not in dump
