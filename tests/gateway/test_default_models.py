"""The shipped defaults end to end: the embedded moderation model refuses the pipe-bomb question."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.core.settings import load_settings
from bastion.db.session import Database
from bastion.llm.echo import EchoBackend
from bastion.moderation.service import ModerationService
from tests.gateway.helpers import BOMB_QUESTION, build_app

pytestmark = pytest.mark.slow


def test_default_moderation_refuses_the_pipe_bomb_and_answers_a_greeting(
    embedded_service: ModerationService, tmp_path: Path
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'gw.db'}")
    db.upgrade()
    settings = load_settings(database_url=db.url, home=tmp_path / "home", auth="off")
    app = build_app(settings, db, moderation=embedded_service)
    with TestClient(app) as client:
        echo = app.state.gateway.models.backend("echo")
        assert isinstance(echo, EchoBackend)
        refused = client.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": BOMB_QUESTION}]},
        ).json()
        assert refused["choices"][0]["finish_reason"] == "content_filter"
        assert "illicit/violent" in refused["bastion_moderation"]["input"]["categories"]
        assert echo.calls == 0
        hello = client.post(
            "/v1/chat/completions",
            json={
                "model": "echo",
                "messages": [{"role": "user", "content": "Good morning! How are you today?"}],
            },
        ).json()
        assert hello["choices"][0]["finish_reason"] == "stop"
        assert hello["choices"][0]["message"]["content"] == "Good morning! How are you today?"
    db.dispose()
