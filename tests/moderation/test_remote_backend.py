"""The `openai` remote backend against a real HTTP server started in the test."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.core.errors import BackendError, BackendTimeout, ConfigError
from bastion.core.settings import BackendSpec, load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import ModerationBackend, create_backend, moderation_backends
from bastion.moderation.backends.remote import RemoteBackend

KEY = "sk-test-remote"


@dataclass
class Behaviour:
    """What the fake remote does next; the test changes it between calls."""

    fail_status: int | None = None  # answer this status ...
    fail_times: int = 0  # ... this many times (then succeed)
    retry_after: str | None = None
    sleep: float = 0.0
    bad_body: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def scores_for(text: str) -> dict[str, float]:
    """Deterministic, OpenAI-shaped scores: 'violence' rises with the word 'fight', plus foreign keys."""
    scores = dict.fromkeys(CATEGORY_KEYS, 0.01)
    scores["violence"] = 0.9 if "fight" in text else 0.02
    del scores["sexual/minors"]  # a remote that omits a category
    scores["made-up/category"] = 0.99  # and one that adds an unknown key
    return scores


def make_app(behaviour: Behaviour) -> Starlette:
    async def moderations(request: Request) -> JSONResponse:
        body = await request.json()
        behaviour.requests.append(body)
        behaviour.headers.append(dict(request.headers))
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "Incorrect API key provided", "type": "x"}}, 401)
        if behaviour.sleep:
            await asyncio.sleep(behaviour.sleep)
        if behaviour.fail_status and behaviour.fail_times > 0:
            behaviour.fail_times -= 1
            headers = {"retry-after": behaviour.retry_after} if behaviour.retry_after else None
            return JSONResponse({"error": {"message": "upstream trouble"}}, behaviour.fail_status, headers)
        if behaviour.bad_body:
            return JSONResponse({"id": "x"})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = [
            {"flagged": False, "categories": {}, "category_scores": scores_for(text)} for text in inputs
        ]
        return JSONResponse({"id": "modr-1", "model": body.get("model", "m"), "results": results})

    return Starlette(routes=[Route("/v1/moderations", moderations, methods=["POST"])])


class Server:
    """uvicorn in a thread on a socket bound to a free loopback port."""

    def __init__(self, app: Starlette) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", ws="none", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "test server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    with Server(make_app(behaviour)) as server:
        yield f"http://127.0.0.1:{server.port}/v1", behaviour


@pytest.fixture
def behaviour(remote: tuple[str, Behaviour]) -> Behaviour:
    b = remote[1]
    b.fail_status, b.fail_times, b.retry_after, b.sleep, b.bad_body = None, 0, None, 0.0, False
    b.requests.clear()
    b.headers.clear()
    return b


@pytest.fixture
def base_url(remote: tuple[str, Behaviour]) -> str:
    return remote[0]


def make(**options: Any) -> ModerationBackend:
    options.setdefault("backoff", 0.01)
    return create_backend(BackendSpec(plugin="openai", options=options), load_settings())


def test_registered() -> None:
    assert moderation_backends.get("openai") is RemoteBackend


def test_scores_map_back_in_batches(base_url: str, behaviour: Behaviour) -> None:
    backend = make(base_url=base_url, api_key=KEY, batch_size=2, model="omni-moderation-latest")
    texts = ["hello", "let's fight", "calm", "fight fight", "bye"]
    results = backend.score(texts)
    assert [r.scores["violence"] for r in results] == [0.02, 0.9, 0.02, 0.9, 0.02]
    for r in results:
        assert set(r.scores) == set(CATEGORY_KEYS)  # unknown keys dropped
        assert r.scores["sexual/minors"] == 0.0  # missing keys count 0
        assert r.scores["hate"] == pytest.approx(0.01)
    assert [req["input"] for req in behaviour.requests] == [texts[0:2], texts[2:4], texts[4:5]]
    assert all(req["model"] == "omni-moderation-latest" for req in behaviour.requests)
    backend.close()


def test_model_is_omitted_when_unset(base_url: str, behaviour: Behaviour) -> None:
    make(base_url=base_url + "/", api_key=KEY).score(["x"])
    assert "model" not in behaviour.requests[0]


def test_key_from_environment(base_url: str, behaviour: Behaviour, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_MOD_KEY", KEY)
    make(base_url=base_url, api_key_env="REMOTE_MOD_KEY").score(["x"])
    assert behaviour.headers[0]["authorization"] == f"Bearer {KEY}"
    monkeypatch.delenv("REMOTE_MOD_KEY")
    with pytest.raises(ConfigError, match="REMOTE_MOD_KEY"):
        make(base_url=base_url, api_key_env="REMOTE_MOD_KEY")


def test_key_is_masked_in_describe(base_url: str) -> None:
    info = make(base_url=base_url, api_key=KEY).describe()
    assert KEY not in str(info)
    assert info["url"] == base_url + "/moderations"


def test_refused_key(base_url: str, behaviour: Behaviour) -> None:
    backend = make(base_url=base_url, api_key="sk-wrong", max_retries=3)
    with pytest.raises(BackendError, match="refused the remote API key") as info:
        backend.score(["x"])
    assert "Incorrect API key" in info.value.message
    assert len(behaviour.requests) == 1  # 401 is not retried


def test_retries_5xx_then_succeeds(base_url: str, behaviour: Behaviour) -> None:
    behaviour.fail_status, behaviour.fail_times = 503, 2
    (result,) = make(base_url=base_url, api_key=KEY, max_retries=2).score(["fight"])
    assert result.scores["violence"] == 0.9
    assert len(behaviour.requests) == 3


def test_5xx_after_retries_is_a_backend_error_naming_the_url(base_url: str, behaviour: Behaviour) -> None:
    behaviour.fail_status, behaviour.fail_times = 500, 10
    with pytest.raises(BackendError, match=r"127\.0\.0\.1.*HTTP 500.*upstream trouble"):
        make(base_url=base_url, api_key=KEY, max_retries=1).score(["x"])
    assert len(behaviour.requests) == 2


def test_429_honours_retry_after(base_url: str, behaviour: Behaviour) -> None:
    behaviour.fail_status, behaviour.fail_times, behaviour.retry_after = 429, 1, "0.3"
    start = time.monotonic()
    make(base_url=base_url, api_key=KEY, max_retries=1).score(["x"])
    assert time.monotonic() - start >= 0.3
    assert len(behaviour.requests) == 2


def test_other_4xx_is_not_retried(base_url: str, behaviour: Behaviour) -> None:
    behaviour.fail_status, behaviour.fail_times = 400, 5
    with pytest.raises(BackendError, match="HTTP 400"):
        make(base_url=base_url, api_key=KEY, max_retries=3).score(["x"])
    assert len(behaviour.requests) == 1


def test_timeout(base_url: str, behaviour: Behaviour) -> None:
    behaviour.sleep = 1.0
    with pytest.raises(BackendTimeout, match="timeout"):
        make(base_url=base_url, api_key=KEY, timeout=0.2).score(["x"])


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"  # nothing listens here any more
    start = time.monotonic()
    with pytest.raises(BackendError, match=f"cannot reach {url}/moderations") as info:
        make(base_url=url, max_retries=2, backoff=0.1).score(["x"])
    assert not isinstance(info.value, BackendTimeout)
    assert time.monotonic() - start >= 0.3  # backed off 0.1 + 0.2 between the three tries


def test_malformed_answer(base_url: str, behaviour: Behaviour) -> None:
    behaviour.bad_body = True
    with pytest.raises(BackendError, match="results"):
        make(base_url=base_url, api_key=KEY).score(["x"])


def test_invalid_options() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        make(base_url="http://127.0.0.1:1/v1", batch_size=0)
    with pytest.raises(ConfigError, match="http"):
        make(base_url="127.0.0.1:1/v1")
