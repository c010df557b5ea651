"""The `echo` chat backend, a test double: repeats the last user message, or answers a canned reply.

Used by tests and benchmarks, for example as "an upstream that returns harmful text".
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.settings import Settings
from bastion.llm.base import ChatBackend, ChatChoice, ChatDelta, ChatRequest, ChatResult, chat_backends


class EchoOptions(BaseModel):
    """Options of the echo test double."""

    model_config = ConfigDict(extra="forbid")

    reply: str | None = Field(None, description="Canned answer; by default the last user message is echoed.")
    delay_s: float = Field(0.0, ge=0, description="Seconds to wait before answering (and between deltas).")
    chunk_words: int = Field(1, ge=1, description="Words per streamed delta.")


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


@chat_backends.register("echo")
class EchoBackend(ChatBackend):
    """Test double: answers the last user message (or `reply`); counts its calls in `calls`."""

    Options = EchoOptions
    supports_tools = True

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        self.opts = EchoOptions.model_validate(options.model_dump())
        self.calls = 0
        self.requests: list[ChatRequest] = []
        self._lock = threading.Lock()

    def _answer(self, request: ChatRequest) -> str:
        with self._lock:
            self.calls += 1
            self.requests.append(request)
        if self.opts.reply is not None:
            return self.opts.reply
        for message in reversed(request.messages):
            if message.role == "user":
                return message.content or ""
        return ""

    @staticmethod
    def _tokens(text: str) -> int:
        return len(text.split())

    def generate(self, request: ChatRequest) -> ChatResult:
        """The echoed answer, truncated to `max_tokens` words."""
        text = self._answer(request)
        if self.opts.delay_s:
            time.sleep(self.opts.delay_s)
        words = _words(text)
        finish = "stop"
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, finish = words[: request.max_tokens], "length"
        answer = "".join(words)
        prompt = sum(self._tokens(m.content or "") for m in request.messages)
        choices = [ChatChoice(answer, finish, index=i) for i in range(request.n)]
        return ChatResult(choices, prompt, self._tokens(answer) * request.n)

    def stream(self, request: ChatRequest) -> Iterator[ChatDelta]:
        """The echoed answer, `chunk_words` words per delta."""
        result = self.generate(request)
        for choice in result.choices:
            words = _words(choice.content or "")
            step = self.opts.chunk_words
            for start in range(0, len(words), step):
                if self.opts.delay_s:
                    time.sleep(self.opts.delay_s)
                yield ChatDelta(choice.index, "".join(words[start : start + step]))
            yield ChatDelta(choice.index, finish_reason=choice.finish_reason)
        yield ChatDelta(usage=(result.prompt_tokens, result.completion_tokens))
