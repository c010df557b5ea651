"""The official `openai` SDK against real servers: Bastion's gateway, and Bastion in front of an upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import load_settings
from bastion.db.session import Database
from bastion.llm.echo import EchoBackend
from tests.conftest import LiveServer, free_port
from tests.gateway.helpers import BOMB_QUESTION, HARMFUL_PHRASE, TEST_MODERATION, build_app
from tests.gateway.upstream import upstream_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[LiveServer, Any]]:
    app = upstream_app()
    with LiveServer(app) as server:
        yield server, app


@pytest.fixture(scope="module")
def inner_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A second Bastion gateway (echo models), used as an `openai` upstream by the first."""
    home = tmp_path_factory.mktemp("inner-home")
    db = Database(f"sqlite:///{home / 'inner.db'}")
    db.upgrade()
    settings = load_settings(database_url=db.url, home=home, moderation=TEST_MODERATION)
    key, _ = KeyStore(db).create(Role.CLIENT, "outer gateway")
    with LiveServer(build_app(settings, db)) as server:
        yield server, key
    db.dispose()


@pytest.fixture(scope="module")
def gateway_server(
    upstream: tuple[LiveServer, Any],
    inner_gateway: tuple[LiveServer, str],
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, str, Any]]:
    up, _ = upstream
    inner, inner_key = inner_gateway
    home = tmp_path_factory.mktemp("gw-home")
    db = Database(f"sqlite:///{home / 'gw.db'}")
    db.upgrade()
    settings = load_settings(database_url=db.url, home=home, moderation=TEST_MODERATION)

    def remote(model: str, **options: Any) -> dict[str, Any]:
        base = {"base_url": f"{up.url}/v1", "model": model, "api_key": "sk-upstream"}
        return {"backend": "openai", "options": {**base, **options}}

    llm = {
        "default_model": "echo",
        "models": {
            "echo": {"backend": "echo"},
            "up": remote("ok"),
            "up-harmful": remote("harmful"),
            "up-500": remote("fail500"),
            "up-400": remote("bad400"),
            "up-slow": remote("slow", timeout_s=0.5),
            "up-down": {"backend": "openai", "options": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}},
            "bastion-echo": {
                "backend": "openai",
                "options": {"base_url": f"{inner.url}/v1", "api_key": inner_key, "model": "echo"},
            },
            "tiny": {"backend": "local", "options": {"model": str(tiny_model)}},
        },
    }
    app = build_app(settings, db, llm=llm)
    key, _ = KeyStore(db).create(Role.CLIENT, "sdk")
    with LiveServer(app) as server:
        yield server, key, app
    db.dispose()


@pytest.fixture
def sdk(gateway_server: tuple[LiveServer, str, Any]) -> Iterator[openai.OpenAI]:
    server, key, _ = gateway_server
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30) as client:
        yield client


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_sdk_completion_and_models(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="echo", messages=user("Hello, gateway!"))
    assert completion.choices[0].message.content == "Hello, gateway!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 4
    extension = (completion.model_extra or {})["bastion_moderation"]
    assert extension["input"]["action"] == "allow"
    assert {m.id for m in sdk.models.list()} >= {"echo", "up"}


def test_sdk_streaming(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="echo",
        messages=user("Streaming works. It arrives in windows, sentence by sentence."),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming works. It arrives in windows, sentence by sentence."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9


def test_sdk_sees_the_refusal(sdk: openai.OpenAI, gateway_server: tuple[LiveServer, str, Any]) -> None:
    _, _, app = gateway_server
    echo = app.state.gateway.models.backend("echo")
    assert isinstance(echo, EchoBackend)
    calls = echo.calls
    completion = sdk.chat.completions.create(model="echo", messages=user(BOMB_QUESTION))
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content == "I'm sorry, but I can't help with that request."
    assert "illicit/violent" in (completion.model_extra or {})["bastion_moderation"]["input"]["categories"]
    assert echo.calls == calls  # the upstream was never asked
    stream = sdk.chat.completions.create(model="echo", messages=user(BOMB_QUESTION), stream=True)
    finishes = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
    assert finishes == ["content_filter"]
    assert echo.calls == calls


def test_openai_backend_passes_parameters_and_key(
    sdk: openai.OpenAI, upstream: tuple[LiveServer, Any]
) -> None:
    _, app = upstream
    completion = sdk.chat.completions.create(
        model="up", messages=user("hi"), temperature=0.3, max_tokens=5, seed=9, stop=["x"], user="u1"
    )
    assert completion.choices[0].message.content == "upstream says: hi"
    assert completion.usage is not None and completion.usage.prompt_tokens == 7
    body = app.state.bodies[-1]
    assert body["model"] == "ok"
    assert (body["temperature"], body["max_tokens"], body["seed"], body["stop"], body["user"]) == (
        0.3,
        5,
        9,
        ["x"],
        "u1",
    )
    assert app.state.headers[-1]["authorization"] == "Bearer sk-upstream"


def test_openai_backend_streams_and_passes_tools(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="up", messages=user("stream me"), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip() == "upstream says: stream me"
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    completion = sdk.chat.completions.create(model="up", messages=user("use a tool"), tools=tools)
    calls = completion.choices[0].message.tool_calls
    assert (
        calls and calls[0].function.name == "lookup" and completion.choices[0].finish_reason == "tool_calls"
    )
    streamed = list(sdk.chat.completions.create(model="up", messages=user("tool"), tools=tools, stream=True))
    deltas = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function and deltas[0].function.name == "lookup"
    assert "".join((d.function.arguments or "") for d in deltas if d.function) == '{"q": 1}'


def test_openai_backend_output_is_moderated(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="up-harmful", messages=user("go"))
    assert completion.choices[0].finish_reason == "content_filter"
    assert HARMFUL_PHRASE not in (completion.choices[0].message.content or "")
    stream = sdk.chat.completions.create(model="up-harmful", messages=user("go"), stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert HARMFUL_PHRASE not in text and "black powder" not in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "content_filter"
    ]


@pytest.mark.parametrize(
    ("model", "status", "error_type", "needle"),
    [
        ("up-500", 502, "api_error", "upstream exploded"),
        ("up-down", 502, "api_error", "unreachable"),
        ("up-slow", 504, "api_error", "did not answer in time"),
        ("up-400", 400, "invalid_request_error", "temperature is too hot"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_become_openai_errors(
    sdk: openai.OpenAI, model: str, status: int, error_type: str, needle: str, stream: bool
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        result = sdk.chat.completions.create(model=model, messages=user("hi"), stream=stream)
        if stream:
            list(result)  # type: ignore[arg-type]
    error = caught.value
    assert error.status_code == status
    body = error.body
    assert isinstance(body, dict)
    assert body["type"] == error_type and needle in body["message"]


def test_missing_key_and_unknown_model(
    sdk: openai.OpenAI, gateway_server: tuple[LiveServer, str, Any]
) -> None:
    server, _, _ = gateway_server
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bst-wrong", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="echo", messages=user("hi"))
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-9", messages=user("hi"))
    assert caught.value.code == "model_not_found"


def test_usage_reaches_the_database(gateway_server: tuple[LiveServer, str, Any], tmp_path: Path) -> None:
    _, _, app = gateway_server
    app.state.gateway.usage.flush()
    from sqlalchemy import func, select

    from bastion.db.tables import UsageEvent

    with app.state.db.session() as session:
        assert session.scalar(select(func.count()).select_from(UsageEvent)) > 0


def test_bastion_behind_bastion(sdk: openai.OpenAI) -> None:
    """The `openai` backend against a second real Bastion gateway, streaming and not."""
    completion = sdk.chat.completions.create(model="bastion-echo", messages=user("relay this"))
    assert completion.choices[0].message.content == "relay this"
    stream = sdk.chat.completions.create(
        model="bastion-echo", messages=user("Relay this stream. Two sentences."), stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "Relay this stream. Two sentences."
    )


def test_local_backend_through_the_sdk(sdk: openai.OpenAI) -> None:
    """The `local` backend (a tiny random model) behind the gateway, streaming and not."""
    completion = sdk.chat.completions.create(
        model="tiny", messages=user("Hello there"), max_tokens=6, temperature=0, seed=1
    )
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 6
    streamed = list(
        sdk.chat.completions.create(
            model="tiny",
            messages=user("Hello there"),
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == completion.choices[0].message.content
    assert streamed[-1].usage is not None
    assert streamed[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_openai_moderation_field_when_asked(sdk: openai.OpenAI) -> None:
    """A request with OpenAI's `moderation` option gets OpenAI's `moderation` field back, typed by the SDK."""
    plain = sdk.chat.completions.create(model="echo", messages=user("hello"))
    assert plain.moderation is None
    asked = sdk.chat.completions.create(
        model="echo", messages=user("hello"), moderation={"model": "omni-moderation-latest"}
    )
    assert asked.moderation is not None
    assert asked.moderation.input.type == "moderation_results"
    assert asked.moderation.input.model == "test-lists"
    assert asked.moderation.input.results[0].flagged is False
    assert asked.moderation.output.type == "moderation_results"
    blocked = sdk.chat.completions.create(
        model="echo", messages=user(BOMB_QUESTION), moderation={"model": "omni-moderation-latest"}
    )
    assert blocked.moderation is not None
    assert blocked.moderation.input.type == "moderation_results"
    assert blocked.moderation.input.results[0].categories["illicit/violent"] is True
    assert blocked.moderation.output.type == "error"
    chunks = list(
        sdk.chat.completions.create(
            model="echo",
            messages=user("Hi there."),
            stream=True,
            moderation={"model": "omni-moderation-latest"},
        )
    )
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final[0].moderation is not None and final[0].moderation.output.type == "moderation_results"
