"""The chat backend interface and its registry.

A backend implements one method, `generate(request) -> ChatResult`. Backends that can stream also
override `stream(request)`, an iterator of `ChatDelta`; the default streams the whole answer as one delta.
Options are a pydantic model on the class (`Options`, `extra="forbid"`); heavy frameworks load inside
`__init__` or on first use, never at import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bastion.core.errors import ConfigError
from bastion.core.records import Message
from bastion.core.registry import Registry
from bastion.core.settings import Settings


class NoOptions(BaseModel):
    """For backends that take no options."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ChatRequest:
    """What a backend is asked to do: OpenAI's parameters, already validated."""

    messages: list[Message]
    model: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    timeout: float = 120.0


@dataclass
class ChatChoice:
    """One generated answer."""

    content: str | None
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] | None = None
    index: int = 0


@dataclass
class ChatResult:
    """A backend's complete answer with token counts."""

    choices: list[ChatChoice]
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatDelta:
    """A piece of a streamed answer for choice `index`; `finish_reason` set on the choice's last piece.

    A delta with `usage` set (prompt, completion tokens) and nothing else may close the stream.
    """

    index: int = 0
    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None


class ChatBackend(ABC):
    """Generates chat answers. Subclasses register with `@chat_backends.register("name")`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    plugin_name: ClassVar[str]
    supports_tools: ClassVar[bool] = False

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        self.options = options
        self.settings = settings

    @abstractmethod
    def generate(self, request: ChatRequest) -> ChatResult:
        """The whole answer (every choice) to `request`."""

    def stream(self, request: ChatRequest) -> Iterator[ChatDelta]:
        """The answer as deltas; by default one delta per choice, then the usage."""
        result = self.generate(request)
        for choice in result.choices:
            yield ChatDelta(choice.index, choice.content or "", choice.tool_calls, choice.finish_reason)
        yield ChatDelta(usage=(result.prompt_tokens, result.completion_tokens))

    def describe(self) -> dict[str, Any]:
        """The backend and its options (secrets left out), for reports."""
        return {"backend": self.plugin_name, "options": self.options.model_dump(mode="json")}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release threads, models and HTTP clients."""


chat_backends: Registry[ChatBackend] = Registry("chat backend")


def create_chat_backend(name: str, options: dict[str, Any], settings: Settings) -> ChatBackend:
    """Instantiate the chat backend `name`, validating its options."""
    cls = chat_backends.get(name)
    try:
        validated = cls.Options.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid option {where!r} for chat backend {name!r}: {first['msg']}") from exc
    return cls(validated, settings)
