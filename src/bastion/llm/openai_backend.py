"""The `openai` chat backend: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenAI) over httpx.

Parameters, tools and tool_choice are passed through; streams are relayed delta by delta. Upstream
failures are translated once, here: unreachable or 5xx → BackendError (502), timeout → BackendTimeout
(504), 400/404/422 → InvalidRequest with the upstream's message, 429 → RateLimited with its Retry-After,
401/403 → BackendError (the gateway's upstream key is wrong, not the caller's).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bastion.core.errors import BackendError, BackendTimeout, BastionError, InvalidRequest, RateLimited
from bastion.core.settings import Settings
from bastion.llm.base import ChatBackend, ChatChoice, ChatDelta, ChatRequest, ChatResult, chat_backends


class OpenAIOptions(BaseModel):
    """Where the upstream is and how to call it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:11434/v1.")
    api_key: SecretStr | None = Field(None, description="Bearer key for the upstream, if it needs one.")
    model: str | None = Field(None, description="Upstream model name; by default the public name.")
    timeout_s: float | None = Field(None, gt=0, description="Overrides the gateway's upstream timeout.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to open the connection.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers for every call.")


def _upstream_message(response: httpx.Response) -> tuple[str, str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase, None, None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or response.reason_phrase), error.get("param"), error.get("code")
    if isinstance(error, str):
        return error, None, None
    return json.dumps(body)[:300], None, None


@chat_backends.register("openai")
class OpenAIBackend(ChatBackend):
    """An OpenAI-compatible upstream, by base URL and key."""

    Options = OpenAIOptions
    supports_tools = True

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        self.opts = OpenAIOptions.model_validate(options.model_dump())
        headers = {"Accept": "application/json", **self.opts.headers}
        if self.opts.api_key is not None:
            headers["Authorization"] = f"Bearer {self.opts.api_key.get_secret_value()}"
        self.client = httpx.Client(base_url=self.opts.base_url.rstrip("/") + "/", headers=headers)

    def describe(self) -> dict[str, Any]:
        """Backend, base URL and upstream model; never the key."""
        return {"backend": self.plugin_name, "base_url": self.opts.base_url, "model": self.opts.model}

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = dict(request.extra)
        body["model"] = self.opts.model or request.model
        body["messages"] = [m.model_dump(exclude_none=True) for m in request.messages]
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "user": request.user,
            "tools": request.tools,
            "tool_choice": request.tool_choice,
        }
        if "max_completion_tokens" in body:  # the client's own name for the limit wins
            optional.pop("max_tokens")
        body.update({k: v for k, v in optional.items() if v is not None})
        if request.stop:
            body["stop"] = request.stop
        if request.n != 1:
            body["n"] = request.n
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _timeout(self, request: ChatRequest) -> httpx.Timeout:
        total = self.opts.timeout_s or request.timeout
        return httpx.Timeout(total, connect=min(self.opts.connect_timeout_s, total))

    def _raise_for(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        message, param, code = _upstream_message(response)
        where = f"upstream {self.opts.base_url}"
        if status == 429:
            retry = response.headers.get("retry-after", "1")
            try:
                retry_after = float(retry)
            except ValueError:
                retry_after = 1.0
            raise RateLimited(f"{where} is rate limiting: {message}", retry_after=retry_after)
        if status in (400, 404, 413, 422):
            raise InvalidRequest(f"{where} refused the request: {message}", param=param, code=code)
        if status in (401, 403):
            raise BackendError(
                f"{where} refused the gateway's credentials ({status}): {message}. "
                "Check the api_key option of this model."
            )
        raise BackendError(f"{where} failed with HTTP {status}: {message}")

    def _translate(self, exc: httpx.HTTPError) -> BastionError:
        where = f"upstream {self.opts.base_url}"
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(f"{where} did not answer in time ({type(exc).__name__}).")
        if isinstance(exc, httpx.ConnectError):
            return BackendError(f"{where} is unreachable: {exc}. Is the server running?")
        return BackendError(f"{where} failed: {type(exc).__name__}: {exc}")

    def generate(self, request: ChatRequest) -> ChatResult:
        """One call to `/chat/completions`."""
        try:
            response = self.client.post(
                "chat/completions", json=self._body(request, False), timeout=self._timeout(request)
            )
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        self._raise_for(response)
        try:
            body = response.json()
            choices = [
                ChatChoice(
                    content=c["message"].get("content"),
                    finish_reason=c.get("finish_reason") or "stop",
                    tool_calls=c["message"].get("tool_calls"),
                    index=int(c.get("index", i)),
                )
                for i, c in enumerate(body["choices"])
            ]
            usage = body.get("usage") or {}
        except (ValueError, KeyError, TypeError) as exc:
            where = self.opts.base_url
            raise BackendError(f"upstream {where} sent an answer that is not a completion") from exc
        return ChatResult(choices, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    def stream(self, request: ChatRequest) -> Iterator[ChatDelta]:
        """Relays the upstream's server-sent events as deltas."""
        try:
            with self.client.stream(
                "POST", "chat/completions", json=self._body(request, True), timeout=self._timeout(request)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield from self._deltas(data)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc

    def _deltas(self, data: str) -> Iterator[ChatDelta]:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise BackendError(f"upstream {self.opts.base_url} sent a malformed event: {data[:200]}") from exc
        if "error" in chunk:
            message = chunk["error"].get("message") if isinstance(chunk["error"], dict) else chunk["error"]
            raise BackendError(f"upstream {self.opts.base_url} failed mid-stream: {message}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            yield ChatDelta(
                index=int(choice.get("index", 0)),
                content=delta.get("content") or "",
                tool_calls=delta.get("tool_calls"),
                finish_reason=choice.get("finish_reason"),
            )
        usage = chunk.get("usage")
        if usage:
            counts = (int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
            yield ChatDelta(usage=counts)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()
