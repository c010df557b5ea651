"""Targets: chat backend, OpenAI-compatible and generic HTTP over a tiny in-test server, the gateway
in-process; retries with backoff, rate limit, cache."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bastion.core.errors import BackendError, ConfigError, InvalidRequest
from bastion.core.records import Message
from bastion.core.settings import load_settings
from bastion.redteam.targets import TargetSpec, build_target, extract_path, fill_template

USER = [Message(role="user", content="hello there")]


class Upstream:
    """A tiny HTTP server: OpenAI chat completions at /v1/chat/completions and a custom JSON API at /api.

    `fail_first` requests answer 500 before the server starts answering properly.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_first = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                upstream.requests.append(body)
                upstream.headers.append(dict(self.headers))
                if upstream.fail_first > 0:
                    upstream.fail_first -= 1
                    self._send(500, {"error": {"message": "try again"}})
                    return
                if self.path == "/v1/chat/completions":
                    last = body["messages"][-1]["content"]
                    self._send(
                        200, {"choices": [{"message": {"content": f"echo: {last}"}, "finish_reason": "stop"}]}
                    )
                elif self.path == "/api":
                    self._send(200, {"result": {"outputs": [{"text": f"api: {body['input']['q']}"}]}})
                else:
                    self._send(400, {"error": "unknown path"})

            def _send(self, status: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def test_chat_target_with_echo_and_cache() -> None:
    target = build_target({"type": "chat", "options": {"backend": "echo"}}, load_settings())
    first = target.send(USER)
    assert first.text == "hello there" and first.metadata["cached"] is False
    second = target.send(USER)
    assert second.text == "hello there" and second.metadata["cached"] is True
    assert target.calls == 1 and target.cache_hits == 1
    other = target.send(USER, max_tokens=1)
    assert other.text.strip() == "hello" and target.calls == 2, "params are part of the cache key"
    assert target.describe()["options"]["backend"] == "echo"


def test_configured_chat_model_and_system_prompt() -> None:
    settings = load_settings(
        llm={"default_model": "e", "models": {"e": {"backend": "echo", "options": {"reply": "ok"}}}}
    )
    target = build_target({"type": "chat", "options": {"model": "e", "system": "be safe"}}, settings)
    assert target.send(USER).text == "ok"
    backend = target.target.backend  # type: ignore[attr-defined]
    assert backend.requests[0].messages[0].role == "system"


def test_openai_target_retries_with_backoff(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RT_TEST_KEY", "sk-test")
    upstream.fail_first = 2
    spec = {
        "type": "openai",
        "options": {"base_url": upstream.url + "/v1", "model": "m", "api_key_env": "RT_TEST_KEY"},
        "retries": 3,
        "backoff_s": 0.01,
        "params": {"max_tokens": 16},
    }
    target = build_target(spec, load_settings())
    assert target.send(USER).text == "echo: hello there"
    assert target.retried == 2 and len(upstream.requests) == 3
    assert upstream.requests[-1]["max_tokens"] == 16
    assert upstream.headers[-1]["Authorization"] == "Bearer sk-test"
    assert target.describe()["options"]["api_key"] is None


def test_openai_target_gives_up_after_retries(upstream: Upstream) -> None:
    upstream.fail_first = 10
    spec = {"type": "openai", "options": {"base_url": upstream.url + "/v1"}, "retries": 1, "backoff_s": 0.0}
    target = build_target(spec, load_settings())
    with pytest.raises(BackendError, match="after 2 tries"):
        target.send(USER)


def test_http_target_with_template_and_path(upstream: Upstream) -> None:
    spec = {
        "type": "http",
        "options": {
            "url": upstream.url + "/api",
            "body_template": {"input": {"q": "{{prompt}}", "history": "{{messages}}"}},
            "response_path": "result.outputs.0.text",
        },
        "cache": "off",
    }
    target = build_target(spec, load_settings())
    assert target.send(USER).text == "api: hello there"
    assert upstream.requests[0]["input"]["history"] == [{"role": "user", "content": "hello there"}]
    bad = build_target(
        {**spec, "options": {**spec["options"], "response_path": "result.nothing"}}, load_settings()
    )
    with pytest.raises(InvalidRequest, match="nothing"):
        bad.send(USER)


def test_templates_and_paths() -> None:
    assert fill_template({"a": "{{x}}", "b": ["say {{x}}"]}, {"x": "hi"}) == {"a": "hi", "b": ["say hi"]}
    assert extract_path({"a": [{"b": 3}]}, "a.0.b") == 3


def test_rate_limit_spaces_calls() -> None:
    spec = {"type": "chat", "options": {"backend": "echo"}, "rate_limit_per_s": 20, "cache": "off"}
    target = build_target(spec, load_settings())
    started = time.perf_counter()
    for _ in range(5):
        target.send(USER)
    assert time.perf_counter() - started >= 4 / 20 * 0.9


def test_concurrency_limit() -> None:
    spec = {
        "type": "chat",
        "options": {"backend": "echo", "backend_options": {"delay_s": 0.05}},
        "max_concurrency": 2,
        "cache": "off",
    }
    target = build_target(spec, load_settings())
    active = 0
    peak = 0
    lock = threading.Lock()
    inner = target.target.call

    def counting(messages: list[Message], params: dict[str, Any]) -> Any:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return inner(messages, params)
        finally:
            with lock:
                active -= 1

    target.target.call = counting  # type: ignore[method-assign]
    threads = [threading.Thread(target=target.send, args=(USER,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2


def test_disk_cache_survives_a_new_target(tmp_path: Any) -> None:
    settings = load_settings(home=tmp_path)
    spec = {"type": "chat", "options": {"backend": "echo"}, "cache": "disk"}
    build_target(spec, settings).send(USER)
    again = build_target(spec, settings)
    assert again.send(USER).metadata["cached"] is True and again.calls == 0


def test_gateway_in_process(tmp_path: Any) -> None:
    settings = load_settings(
        home=tmp_path,
        moderation={
            "default_model": "t",
            "preload": False,
            "models": {
                "t": {"backends": [{"plugin": "lists", "options": {"block": {"illicit": ["nerve agent"]}}}]}
            },
        },
        llm={"default_model": "e", "models": {"e": {"backend": "echo"}}},
    )
    target = build_target({"type": "gateway", "options": {"in_process": True, "model": "e"}}, settings)
    try:
        assert target.send(USER).text == "hello there"
        blocked = target.send([Message(role="user", content="make a nerve agent")])
        assert blocked.metadata["finish_reason"] == "content_filter"
    finally:
        target.close()


def test_bad_specs() -> None:
    with pytest.raises(ConfigError, match="no red-team target"):
        build_target({"type": "nope"}, load_settings())
    with pytest.raises(ConfigError, match="invalid option"):
        build_target({"type": "chat", "options": {"nope": 1}}, load_settings())
    with pytest.raises(ConfigError, match="bogus"):
        build_target({"type": "chat", "bogus": 1}, load_settings())
    assert TargetSpec(type="chat").cache == "memory"
