"""Fixtures for chat backend tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# Built-in chat backends register through bastion.plugins; imported here too so that the tests do not
# depend on that wiring.
from tests.llm.tiny import build_tiny_chat_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random chat model folder, built once per run."""
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))
