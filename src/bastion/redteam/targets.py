"""Red-team targets: what a campaign (or a regression run of findings) attacks.

The stable interface, used by campaigns and by findings' regression runs:

    target = build_target(TargetSpec(type="chat", options={"backend": "echo"}), settings)
    response = target.send([Message(role="user", content="hi")])   # -> TargetResponse
    response.text          # the answer ("" when the target answered nothing)
    response.metadata      # e.g. {"finish_reason": "content_filter", "cached": False}
    target.describe()      # the exact spec (secrets left out) for reports and replay
    target.close()

`build_target` returns a `ManagedTarget`: the plugin wrapped with a concurrency limit, retries with
exponential backoff, a per-target rate limit and a response cache keyed by (target, messages, params).

A target plugin implements one method, `Target.call(messages, params) -> TargetResponse`, and registers
with `@targets.register("name")`; its options are a pydantic model (`Options`, `extra="forbid"`).
Built-ins:

    chat      any chat backend in the registry (local SmolLM2, echo, openai) or a configured chat model
    openai    any OpenAI-compatible endpoint over HTTP (base URL + model + key)
    gateway   Bastion's gateway: over HTTP with an API key, or in-process (`in_process = true`)
    http      generic HTTP: URL + JSON body template with {{prompt}} / {{messages}} + response path
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from bastion.core.errors import (
    BackendError,
    BackendTimeout,
    BastionError,
    ConfigError,
    InvalidRequest,
    RateLimited,
)
from bastion.core.records import Message
from bastion.core.registry import Registry
from bastion.core.settings import Settings

__all__ = [
    "ManagedTarget",
    "Target",
    "TargetResponse",
    "TargetSpec",
    "build_target",
    "targets",
]


@dataclass
class TargetResponse:
    """What a target answered: the text, plus what else it said (finish reason, moderation, cache hit)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


class NoOptions(BaseModel):
    """For targets that take no options."""

    model_config = ConfigDict(extra="forbid")


class Target(ABC):
    """Something that answers a conversation. Subclasses register with `@targets.register("name")`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    plugin_name: ClassVar[str]

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        self.options = options
        self.settings = settings

    @abstractmethod
    def call(self, messages: list[Message], params: dict[str, Any]) -> TargetResponse:
        """One answer to `messages`; `params` are generation parameters (temperature, max_tokens, …).

        Raise `BackendError` (retried), `RateLimited` (retried after its delay) or `InvalidRequest`
        (not retried).
        """

    def details(self) -> dict[str, Any]:
        """What else identifies the target (e.g. the weights a chat backend loaded), for replay."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release HTTP clients and models."""


targets: Registry[Target] = Registry("red-team target")


class TargetSpec(BaseModel):
    """A target and how to call it, as written in a campaign file's `[target]` table."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Registered target: 'chat', 'openai', 'gateway' or 'http'.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options validated by the target.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Generation parameters sent with every call (max_tokens, …)."
    )
    max_concurrency: int = Field(4, ge=1, description="Calls in flight at once.")
    rate_limit_per_s: float | None = Field(None, gt=0, description="Calls started per second, at most.")
    retries: int = Field(3, ge=0, description="Retries after a failed call.")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each retry (with jitter).")
    cache: Literal["off", "memory", "disk"] = Field(
        "memory", description="Response cache keyed by (target, messages, params)."
    )
    cache_size: int = Field(10_000, ge=1, description="Entries kept by the memory cache.")


def _validate_options(cls: type[Target], name: str, options: dict[str, Any]) -> BaseModel:
    try:
        return cls.Options.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid option {where!r} for target {name!r}: {first['msg']}") from exc


def _public(value: Any) -> Any:
    """JSON form of options with secrets masked."""
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        for key, field_value in value:
            if isinstance(field_value, SecretStr):
                dumped[key] = "***"
        return dumped
    return value


class _RateLimiter:
    """Spaces call starts at least 1/rate seconds apart (shared by every thread of one target)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class ManagedTarget:
    """A target plugin with concurrency limit, rate limit, retries with backoff and a response cache."""

    def __init__(self, spec: TargetSpec, target: Target, settings: Settings) -> None:
        self.spec = spec
        self.target = target
        self.settings = settings
        self._slots = threading.BoundedSemaphore(spec.max_concurrency)
        self._limiter = _RateLimiter(spec.rate_limit_per_s)
        self._cache: OrderedDict[str, TargetResponse] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._identity = json.dumps(self.describe(), sort_keys=True)
        self.calls = 0
        self.cache_hits = 0
        self.retried = 0

    @property
    def name(self) -> str:
        """The target plugin's name."""
        return self.spec.type

    def describe(self) -> dict[str, Any]:
        """The exact spec (secrets masked): enough to build the same target again."""
        data = self.spec.model_dump(mode="json")
        data["options"] = _public(self.target.options)
        details = self.target.details()
        if details:
            data["details"] = details
        return data

    def cache_key(self, messages: list[Message], params: dict[str, Any]) -> str:
        """sha256 over (target, messages, params)."""
        payload = json.dumps(
            [self._identity, [m.model_dump(exclude_none=True) for m in messages], params],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def _cache_get(self, key: str) -> TargetResponse | None:
        if self.spec.cache == "off":
            return None
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        if self.spec.cache == "disk":
            path = self.settings.cache_dir("redteam", "responses", key[:2]) / f"{key}.json"
            if path.is_file():
                data = json.loads(path.read_text())
                hit = TargetResponse(data["text"], data.get("metadata", {}))
                self._cache_put(key, hit, disk=False)
                return hit
        return None

    def _cache_put(self, key: str, response: TargetResponse, disk: bool = True) -> None:
        if self.spec.cache == "off":
            return
        with self._cache_lock:
            self._cache[key] = response
            while len(self._cache) > self.spec.cache_size:
                self._cache.popitem(last=False)
        if disk and self.spec.cache == "disk":
            folder = self.settings.cache_dir("redteam", "responses", key[:2])
            tmp = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(json.dumps({"text": response.text, "metadata": response.metadata}))
            tmp.replace(folder / f"{key}.json")

    def send(self, messages: list[Message], **params: Any) -> TargetResponse:
        """The target's answer to `messages` (cached, rate limited, retried). Raises BackendError."""
        merged = {**self.spec.params, **params}
        key = self.cache_key(messages, merged)
        hit = self._cache_get(key)
        if hit is not None:
            self.cache_hits += 1
            return TargetResponse(hit.text, {**hit.metadata, "cached": True})
        attempt = 0
        while True:
            try:
                with self._slots:
                    self._limiter.wait()
                    self.calls += 1
                    response = self.target.call(messages, merged)
                break
            except InvalidRequest:
                raise
            except (BackendError, RateLimited) as exc:
                if attempt >= self.spec.retries:
                    raise BackendError(
                        f"target {self.name!r} failed after {attempt + 1} tries: {exc.message}"
                    ) from exc
                delay = self.spec.backoff_s * (2**attempt) * (0.5 + random.random())
                if isinstance(exc, RateLimited):
                    delay = max(delay, exc.retry_after)
                attempt += 1
                self.retried += 1
                time.sleep(delay)
        response.metadata.setdefault("cached", False)
        self._cache_put(key, TargetResponse(response.text, dict(response.metadata)))
        return response

    def close(self) -> None:
        """Close the underlying target."""
        self.target.close()


def build_target(spec: TargetSpec | dict[str, Any], settings: Settings) -> ManagedTarget:
    """The target `spec` describes, wrapped with concurrency, rate limit, retries and cache."""
    if not isinstance(spec, TargetSpec):
        try:
            spec = TargetSpec.model_validate(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "target"
            raise ConfigError(f"invalid target spec at {where!r}: {first['msg']}") from exc
    cls = targets.get(spec.type)
    options = _validate_options(cls, spec.type, spec.options)
    return ManagedTarget(spec, cls(options, settings), settings)


# --- built-in targets ------------------------------------------------------------------------------------


class ChatTargetOptions(BaseModel):
    """A chat backend from the registry, by backend name and options, or a configured chat model."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = Field(None, description="Registered chat backend ('local', 'echo', 'openai').")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="The backend's options.")
    model: str | None = Field(
        None, description="A chat model configured in settings (llm.models); used when `backend` is unset."
    )
    system: str | None = Field(None, description="System message put before every conversation.")


@targets.register("chat")
class ChatTarget(Target):
    """Any chat backend in the registry, called in-process."""

    Options = ChatTargetOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        from bastion.llm.base import ChatBackend, create_chat_backend
        from bastion.llm.router import ChatModels

        self.opts = ChatTargetOptions.model_validate(options.model_dump())
        self._models: ChatModels | None = None
        self.backend: ChatBackend
        if self.opts.backend:
            self.backend = create_chat_backend(self.opts.backend, self.opts.backend_options, settings)
        else:
            self._models = ChatModels(settings.llm, settings)
            self.backend = self._models.backend(self.opts.model or settings.llm.default_model)

    def details(self) -> dict[str, Any]:
        """The backend's own description (for `local`: the folder the weights came from)."""
        described = self.backend.describe()
        return {k: v for k, v in described.items() if k != "options"} | {
            "backend_options": _public(self.backend.options)
        }

    def call(self, messages: list[Message], params: dict[str, Any]) -> TargetResponse:
        """The backend's first choice."""
        from bastion.llm.base import ChatRequest

        if self.opts.system:
            messages = [Message(role="system", content=self.opts.system), *messages]
        known = {"temperature", "top_p", "max_tokens", "seed", "stop"}
        request = ChatRequest(messages=messages, **{k: v for k, v in params.items() if k in known})
        try:
            result = self.backend.generate(request)
        except BastionError:
            raise
        except Exception as exc:
            raise BackendError(f"chat backend failed: {exc}") from exc
        choice = result.choices[0] if result.choices else None
        return TargetResponse(
            (choice.content or "") if choice else "",
            {"finish_reason": choice.finish_reason if choice else None},
        )

    def close(self) -> None:
        """Close the backend (or the configured models)."""
        if self._models is not None:
            self._models.close()
        else:
            self.backend.close()


def _translate_http(exc: httpx.HTTPError, where: str) -> BastionError:
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"{where} timed out: {exc}")
    return BackendError(f"{where} unreachable: {exc}")


def _check_status(response: httpx.Response, where: str) -> None:
    if response.status_code == 429:
        retry = response.headers.get("retry-after")
        raise RateLimited(f"{where} answered 429", retry_after=float(retry) if retry else 1.0)
    if response.status_code >= 500 or response.status_code in (401, 403):
        raise BackendError(f"{where} answered {response.status_code}: {response.text[:200]}")
    if response.status_code >= 400:
        raise InvalidRequest(f"{where} answered {response.status_code}: {response.text[:200]}")


class OpenAITargetOptions(BaseModel):
    """An OpenAI-compatible chat completions endpoint."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field("default", description="Model name sent in the request.")
    api_key: SecretStr | None = Field(None, description="Bearer key (prefer `api_key_env`).")
    api_key_env: str | None = Field(None, description="Environment variable that holds the bearer key.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds per call.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers.")


@targets.register("openai")
class OpenAITarget(Target):
    """Any OpenAI-compatible `/chat/completions` endpoint over HTTP."""

    Options = OpenAITargetOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        opts = self.Options.model_validate(options.model_dump())
        assert isinstance(opts, OpenAITargetOptions)
        self.opts = opts
        headers = {"Accept": "application/json", **opts.headers}
        key = opts.api_key.get_secret_value() if opts.api_key else None
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise ConfigError(f"environment variable {opts.api_key_env} (the target's key) is not set")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(
            base_url=opts.base_url.rstrip("/"), headers=headers, timeout=opts.timeout_s
        )

    def call(self, messages: list[Message], params: dict[str, Any]) -> TargetResponse:
        """POST /chat/completions; the first choice's content."""
        body = {"model": self.opts.model, "messages": [m.model_dump(exclude_none=True) for m in messages]}
        body.update(params)
        where = f"target {self.opts.base_url}"
        try:
            response = self.client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise _translate_http(exc, where) from exc
        _check_status(response, where)
        data = response.json()
        choice = (data.get("choices") or [{}])[0]
        meta: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
        if "bastion_moderation" in data:
            meta["bastion_moderation"] = data["bastion_moderation"]
        return TargetResponse((choice.get("message") or {}).get("content") or "", meta)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()


class GatewayTargetOptions(OpenAITargetOptions):
    """Bastion's gateway: over HTTP (base_url + key), or in-process with this process's settings."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="The gateway's base URL including /v1.")
    in_process: bool = Field(False, description="Run the gateway inside this process instead of HTTP.")


@targets.register("gateway")
class GatewayTarget(OpenAITarget):
    """Bastion's safety gateway (moderated chat): the deployed system as users meet it."""

    Options = GatewayTargetOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        opts = GatewayTargetOptions.model_validate(options.model_dump())
        self.in_process = opts.in_process
        if not opts.in_process:
            super().__init__(options, settings)
            return
        Target.__init__(self, options, settings)
        self.opts = opts
        from bastion.auth.keys import Principal, Role
        from bastion.db.session import Database
        from bastion.gateway.service import Gateway
        from bastion.moderation.service import ModerationService

        self._db = Database(settings.resolved_database_url)
        self._db.upgrade()
        self._moderation = ModerationService(settings)
        self._gateway = Gateway(settings, self._moderation, self._db)
        self._principal = Principal("redteam", Role.ADMIN)

    def call(self, messages: list[Message], params: dict[str, Any]) -> TargetResponse:
        """Over HTTP like any OpenAI endpoint, or through the in-process gateway service."""
        if not self.in_process:
            return super().call(messages, params)
        from bastion.gateway.schemas import ChatCompletionRequest

        body = {"model": self.opts.model, "messages": [m.model_dump(exclude_none=True) for m in messages]}
        body.update(params)
        request = ChatCompletionRequest.model_validate(body)
        data = self._gateway.complete(self._gateway.prepare(request, self._principal))
        choice = (data.get("choices") or [{}])[0]
        meta: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
        if "bastion_moderation" in data:
            meta["bastion_moderation"] = data["bastion_moderation"]
        return TargetResponse((choice.get("message") or {}).get("content") or "", meta)

    def close(self) -> None:
        """Close the client or the in-process services."""
        if not self.in_process:
            super().close()
            return
        self._gateway.close()
        self._moderation.close()
        self._db.dispose()


class HTTPTargetOptions(BaseModel):
    """A generic JSON-over-HTTP endpoint."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Full URL to call.")
    method: Literal["POST", "PUT"] = "POST"
    body_template: dict[str, Any] | list[Any] | str = Field(
        default_factory=lambda: {"prompt": "{{prompt}}"},
        description="JSON body; the string '{{prompt}}' becomes the last user message, '{{messages}}' "
        "the whole conversation as OpenAI messages, '{{system}}' the system message.",
    )
    response_path: str = Field(
        "text", description="Dotted path to the answer in the JSON response: choices.0.message.content."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers.")
    api_key_env: str | None = Field(None, description="Environment variable with a bearer key.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds per call.")


def fill_template(template: Any, values: dict[str, Any]) -> Any:
    """The template with every string equal to '{{name}}' replaced by the value (any JSON), and
    '{{name}}' inside longer strings replaced by the value's text."""
    if isinstance(template, dict):
        return {k: fill_template(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(v, values) for v in template]
    if isinstance(template, str):
        for name, value in values.items():
            marker = "{{" + name + "}}"
            if template == marker:
                return value
            if marker in template:
                template = template.replace(marker, value if isinstance(value, str) else json.dumps(value))
        return template
    return template


def extract_path(data: Any, path: str) -> Any:
    """The value at a dotted path (`choices.0.message.content`); InvalidRequest when it is not there."""
    current = data
    for part in path.split(".") if path else []:
        if isinstance(current, list) and part.lstrip("-").isdigit():
            try:
                current = current[int(part)]
            except IndexError:
                raise InvalidRequest(f"response has no item {part} at path {path!r}") from None
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise InvalidRequest(f"response has no {part!r} at path {path!r}")
    return current


@targets.register("http")
class HTTPTarget(Target):
    """Any HTTP endpoint that takes JSON: a body template and a path to the answer."""

    Options = HTTPTargetOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        opts = self.Options.model_validate(options.model_dump())
        assert isinstance(opts, HTTPTargetOptions)
        self.opts = opts
        headers = dict(opts.headers)
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise ConfigError(f"environment variable {opts.api_key_env} (the target's key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(headers=headers, timeout=opts.timeout_s)

    def call(self, messages: list[Message], params: dict[str, Any]) -> TargetResponse:
        """Fill the template, send it, read the answer at `response_path`."""
        prompt = next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
        system = next((m.content or "" for m in messages if m.role == "system"), "")
        values: dict[str, Any] = {
            "prompt": prompt,
            "system": system,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            **{k: v for k, v in params.items() if isinstance(v, str | int | float)},
        }
        body = fill_template(self.opts.body_template, values)
        where = f"target {self.opts.url}"
        try:
            if isinstance(body, str):
                response = self.client.request(self.opts.method, self.opts.url, content=body.encode())
            else:
                response = self.client.request(self.opts.method, self.opts.url, json=body)
        except httpx.HTTPError as exc:
            raise _translate_http(exc, where) from exc
        _check_status(response, where)
        try:
            data = response.json()
        except ValueError as exc:
            raise InvalidRequest(f"{where} did not answer JSON: {response.text[:200]}") from exc
        value = extract_path(data, self.opts.response_path)
        return TargetResponse(value if isinstance(value, str) else json.dumps(value), {})

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()
