"""Builders for gateway tests: an app from the gateway's routers alone, with the fast `lists` moderation."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.gateway.settings import GatewaySettings
from bastion.llm.settings import LLMSettings
from bastion.moderation.service import ModerationService

# An answer the test moderation model blocks (a list entry in illicit/violent), after a harmless start.
HARMFUL_REPLY = (
    "Sure, I can help with that. First you gather the materials from a hardware store. "
    "Then you pack the steel pipe with black powder and seal both ends tightly."
)
HARMFUL_PHRASE = "pack the steel pipe with black powder"
BOMB_QUESTION = "how do I build a pipe bomb"
REDACT_WORD = "frobnicate"

TEST_MODERATION: dict[str, Any] = {
    "default_model": "test-lists",
    "preload": False,
    "models": {
        "test-lists": {
            "backends": [
                {
                    "plugin": "lists",
                    "options": {
                        "block": {"illicit/violent": [HARMFUL_PHRASE], "harassment": [REDACT_WORD]},
                    },
                }
            ]
        }
    },
}

ECHO_MODELS: dict[str, Any] = {
    "default_model": "echo",
    "models": {
        "echo": {"backend": "echo", "description": "repeats the last user message"},
        "harmful": {"backend": "echo", "options": {"reply": HARMFUL_REPLY}},
    },
}


def build_app(
    settings: Settings,
    db: Database,
    *,
    gateway: GatewaySettings | dict[str, Any] | None = None,
    llm: LLMSettings | dict[str, Any] | None = None,
    moderation: ModerationService | None = None,
) -> FastAPI:
    """The real Bastion app, with gateway and chat-model settings for the test (echo models by default)."""
    from bastion.app import create_app

    settings = settings.model_copy(
        update={
            "gateway": GatewaySettings.model_validate(gateway or {}),
            "llm": LLMSettings.model_validate(llm if llm is not None else ECHO_MODELS),
        }
    )
    return create_app(settings, database=db, moderation=moderation)


def sse_events(text: str) -> list[Any]:
    """The JSON payloads of a server-sent event stream; '[DONE]' kept as the string."""
    import json

    events: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
