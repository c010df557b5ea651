"""Request schema of `POST /v1/chat/completions` (OpenAI's contract; unknown fields pass through)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import InvalidRequest
from bastion.core.records import Message


class ChatMessageIn(BaseModel):
    """A message as clients send it: content is a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def to_message(self, index: int) -> Message:
        """The domain message; text parts are joined, other parts refused."""
        content = self.content
        if isinstance(content, list):
            texts: list[str] = []
            for part in content:
                if part.get("type") not in ("text", "input_text") or not isinstance(part.get("text"), str):
                    raise InvalidRequest(
                        f"messages[{index}] has a {part.get('type')!r} part; only text parts are supported.",
                        param=f"messages.{index}.content",
                        code="unsupported_content_type",
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        return Message(
            role=self.role,
            content=content,
            name=self.name,
            tool_call_id=self.tool_call_id,
            tool_calls=self.tool_calls,
        )


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; fields Bastion does not interpret go to `openai` upstreams."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="A configured chat model (GET /v1/models), or 'default'.")
    messages: list[ChatMessageIn] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    store: bool = Field(
        True,
        description="Store this conversation (encrypted, yours to list, export and delete). false: a "
        "temporary chat, never used for training and purged 30 days after its last message. Not forwarded "
        "upstream.",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def stop_list(self) -> list[str]:
        """`stop` as a list (at most 4, as OpenAI allows)."""
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4:
            raise InvalidRequest("'stop' takes at most 4 sequences.", param="stop")
        return [s for s in stops if s]

    def extras(self) -> dict[str, Any]:
        """Fields outside the ones above, passed through to OpenAI-compatible upstreams.

        OpenAI's own `moderation` option is not forwarded: Bastion's policy does the moderating.
        `max_completion_tokens` keeps its name upstream when the client used it.
        """
        extra = {k: v for k, v in (self.model_extra or {}).items() if k != "moderation"}
        if self.max_completion_tokens is not None:
            extra["max_completion_tokens"] = self.max_completion_tokens
        return extra
