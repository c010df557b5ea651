"""Contract tests over every registered chat backend: options forbid unknown keys, docs, the interface."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from bastion.llm.base import ChatBackend, chat_backends

BUILTINS = {"echo", "local", "openai"}


def test_builtins_are_registered() -> None:
    assert set(chat_backends.names()) >= BUILTINS


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_backend_contract(name: str) -> None:
    cls = chat_backends.get(name)
    assert issubclass(cls, ChatBackend)
    assert cls.plugin_name == name
    assert (cls.__doc__ or "").strip(), "the docstring's first line is the description"
    assert issubclass(cls.Options, BaseModel)
    assert cls.Options.model_config.get("extra") == "forbid"
    with pytest.raises(ValidationError):
        cls.Options.model_validate({"surely_not_an_option": 1, **_required(name)})
    for field in cls.Options.model_fields.values():
        assert field.description, f"{name}: every option has a description"
    assert "generate" not in getattr(cls, "__abstractmethods__", set())


def _required(name: str) -> dict[str, str]:
    return {"base_url": "http://127.0.0.1:1/v1"} if name == "openai" else {}
