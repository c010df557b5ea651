"""The `openai` backend's connection handling against a real upstream server: kept-alive connections,
streams stopped early, and the environment's proxy settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import urllib3

from bastion.core.records import Message
from bastion.core.settings import load_settings
from bastion.llm.base import ChatRequest, create_chat_backend
from bastion.llm.openai_backend import OpenAIBackend, connection_pool
from tests.conftest import LiveServer
from tests.gateway.upstream import upstream_app


@pytest.fixture(scope="module")
def upstream() -> Iterator[LiveServer]:
    with LiveServer(upstream_app()) as server:
        yield server


@pytest.fixture
def backend(upstream: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBackend]:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    created = create_chat_backend("openai", {"base_url": f"{upstream.url}/v1"}, load_settings())
    assert isinstance(created, OpenAIBackend)
    yield created
    created.close()


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], model="ok", timeout=10)


def connections(backend: OpenAIBackend) -> int:
    """Connections the backend's pool for the upstream has opened so far."""
    return int(backend.pool.connection_from_url(backend.url).num_connections)


def test_sequential_calls_share_one_kept_alive_connection(backend: OpenAIBackend) -> None:
    for i in range(5):
        assert backend.generate(ask(f"question {i}")).choices[0].content == f"upstream says: question {i}"
    text = "".join(delta.content for delta in backend.stream(ask("streamed words"))).strip()
    assert text == "upstream says: streamed words"
    assert backend.generate(ask("after the stream")).choices[0].content == "upstream says: after the stream"
    assert connections(backend) == 1


def test_a_stream_stopped_early_leaves_the_backend_usable(backend: OpenAIBackend) -> None:
    stream = backend.stream(ask("one two three four five six"))
    first = next(d for d in stream if d.content)
    assert first.content
    stream.close()  # what the gateway does when it cuts a stream
    assert backend.generate(ask("next")).choices[0].content == "upstream says: next"
    text = "".join(delta.content for delta in backend.stream(ask("again"))).strip()
    assert text == "upstream says: again"


def test_the_environment_proxy_is_used_unless_no_proxy_exempts_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    through = connection_pool("https://llm.example/v1/chat/completions")
    assert isinstance(through, urllib3.ProxyManager)
    assert through.proxy is not None and through.proxy.host == "proxy.example"
    monkeypatch.setenv("NO_PROXY", "llm.example")
    direct = connection_pool("https://llm.example/v1/chat/completions")
    assert not isinstance(direct, urllib3.ProxyManager)
