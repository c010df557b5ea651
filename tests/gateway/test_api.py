"""The chat completions contract through TestClient: moderation by policy, streaming, limits, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.llm.echo import EchoBackend
from tests.gateway.conftest import GatewayClient
from tests.gateway.helpers import BOMB_QUESTION, HARMFUL_PHRASE, HARMFUL_REPLY, REDACT_WORD, sse_events


def echo(client: GatewayClient, name: str = "echo") -> EchoBackend:
    backend = client.gateway.models.backend(name)
    assert isinstance(backend, EchoBackend)
    return backend


def test_completion_has_openai_shape(gw: GatewayClient) -> None:
    response = gw.chat("What is the capital of France?", temperature=0.5, seed=3, user="u-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "echo"
    [choice] = body["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": "What is the capital of France?", "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert body["bastion_moderation"]["input"]["action"] == "allow"
    assert body["bastion_moderation"]["output"]["categories"] == []
    sent = echo(gw).requests[-1]
    assert (sent.temperature, sent.seed, sent.user) == (0.5, 3, "u-1")


def test_parameters_reach_the_backend(gw: GatewayClient) -> None:
    body = {
        "model": "echo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "one two three four"}]},
        ],
        "max_completion_tokens": 2,
        "stop": "END",
        "n": 2,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "presence_penalty": 0.5,
    }
    response = gw.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [c["message"]["content"] for c in choices] == ["one two ", "one two "]
    assert {c["finish_reason"] for c in choices} == {"length"}
    sent = echo(gw).requests[-1]
    assert sent.max_tokens == 2 and sent.stop == ["END"] and sent.n == 2
    assert sent.tools and sent.tools[0]["function"]["name"] == "f" and sent.tool_choice == "auto"
    assert sent.extra == {"presence_penalty": 0.5, "max_completion_tokens": 2}


def test_models_are_listed(gw: GatewayClient) -> None:
    listing = gw.get("/v1/models").json()
    assert listing["object"] == "list"
    assert {m["id"] for m in listing["data"]} == {"echo", "harmful", "smollm2-135m-instruct"}
    assert [m["id"] for m in listing["data"] if m["default"]] == ["echo"]
    assert all(m["object"] == "model" for m in listing["data"])
    assert gw.get("/v1/models/harmful").json()["backend"] == "echo"
    missing = gw.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_unknown_model_and_bad_requests_use_the_error_envelope(gw: GatewayClient) -> None:
    response = gw.chat("hi", model="gpt-9")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.json()["error"]["param"] == "model"
    empty = gw.post("/v1/chat/completions", json={"model": "echo", "messages": []})
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "invalid_request_error"
    image = gw.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    )
    assert image.status_code == 400 and image.json()["error"]["code"] == "unsupported_content_type"
    assert gw.post("/v1/chat/completions", json={"model": "echo"}).status_code == 400
    anonymous = gw.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": ""},
    )
    assert anonymous.status_code == 401


def test_blocked_input_never_reaches_the_upstream(gw: GatewayClient) -> None:
    backend = echo(gw)
    response = gw.chat(BOMB_QUESTION)
    assert response.status_code == 200
    body = response.json()
    [choice] = body["choices"]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == "I'm sorry, but I can't help with that request."
    assert "illicit/violent" in body["bastion_moderation"]["input"]["categories"]
    assert body["bastion_moderation"]["input"]["action"] == "block"
    assert body["bastion_moderation"]["output"] is None
    assert backend.calls == 0


def server_timing(header: str) -> dict[str, tuple[float, str]]:
    """`Server-Timing` entries by name: (milliseconds, description)."""
    entries = {}
    for entry in header.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        fields = dict(p.split("=", 1) for p in params)
        entries[name] = (float(fields["dur"]), fields.get("desc", "").strip('"'))
    return entries


def test_server_timing_splits_the_gateway_time(gw: GatewayClient) -> None:
    timing = server_timing(gw.chat("What is the capital of France?").headers["server-timing"])
    assert set(timing) == {"moderation", "upstream", "total"}
    assert timing["moderation"][1] == "input and output"
    assert 0 < timing["moderation"][0] + timing["upstream"][0] <= timing["total"][0]
    blocked = server_timing(gw.chat(BOMB_QUESTION).headers["server-timing"])
    assert set(blocked) == {"moderation", "total"} and blocked["moderation"][1] == "input"
    assert 0 < blocked["moderation"][0] <= blocked["total"][0]
    streamed = server_timing(gw.chat("Hello there.", stream=True).headers["server-timing"])
    assert streamed["moderation"][1] == "input" and "upstream" not in streamed


def test_earlier_turns_are_not_moderated_again(gw: GatewayClient) -> None:
    body = {
        "model": "echo",
        "messages": [
            {"role": "user", "content": BOMB_QUESTION},
            {"role": "assistant", "content": "I can't help with that."},
            {"role": "user", "content": "Then tell me about gardening."},
        ],
    }
    response = gw.post("/v1/chat/completions", json=body).json()
    assert response["choices"][0]["finish_reason"] == "stop"


def test_blocked_output_is_replaced_by_the_refusal(gw: GatewayClient) -> None:
    response = gw.chat("tell me something", model="harmful").json()
    [choice] = response["choices"]
    assert choice["finish_reason"] == "content_filter"
    assert HARMFUL_PHRASE not in str(response)
    assert "hardware store" not in str(response)
    assert response["bastion_moderation"]["output"]["categories"] == ["illicit", "illicit/violent"]
    assert response["bastion_moderation"]["input"]["action"] == "allow"


def test_policy_actions_flag_redact_allow(make_client: Callable[..., GatewayClient]) -> None:
    gateway: dict[str, Any] = {
        "policies": {
            "default": {
                "input": {"categories": {"harassment": {"action": "redact"}}},
                "output": {"categories": {"harassment": {"action": "redact"}}},
            },
            "lenient": {
                "input": {
                    "categories": {"illicit/violent": {"action": "flag"}, "illicit": {"action": "allow"}}
                },
                "output": {"enabled": False},
                "refusal": "No.",
            },
        },
        "role_policies": {"red_teamer": "lenient"},
    }
    client = make_client(gateway=gateway)
    redacted = client.chat(f"please {REDACT_WORD} the widget").json()
    assert redacted["choices"][0]["finish_reason"] == "stop"
    assert redacted["choices"][0]["message"]["content"] == "please [redacted] the widget"
    assert echo(client).requests[-1].messages[-1].content == "please [redacted] the widget"
    assert redacted["bastion_moderation"]["input"]["actions"] == {"harassment": "redact"}

    from bastion.auth.keys import Role

    red_key, _ = client.key_for(Role.RED_TEAMER)
    flagged = client.chat(BOMB_QUESTION, key=red_key).json()
    assert flagged["bastion_moderation"]["policy"] == "lenient"
    assert flagged["bastion_moderation"]["input"]["actions"] == {"illicit/violent": "flag"}
    assert flagged["choices"][0]["finish_reason"] == "stop"
    assert flagged["choices"][0]["message"]["content"] == BOMB_QUESTION


def test_policy_per_key_and_threshold_override(make_client: Callable[..., GatewayClient]) -> None:
    gateway = {
        "policies": {
            "no-input": {"input": {"enabled": False}},
            # A threshold replaces the model's flag: at 0.0 every text counts as flagged for `sexual`.
            "strict": {"input": {"categories": {"sexual": {"action": "block", "threshold": 0.0}}}},
        }
    }
    client = make_client(gateway=gateway)
    secret, key_id = client.key_for()
    client.gateway.config.key_policies[key_id] = "no-input"
    body = client.chat(BOMB_QUESTION, key=secret).json()
    assert body["bastion_moderation"]["policy"] == "no-input"
    assert body["bastion_moderation"]["input"]["action"] == "allow"
    # The echo repeats the question, so the output side still blocks it.
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert "illicit/violent" in body["bastion_moderation"]["output"]["categories"]

    strict, strict_id = client.key_for()
    client.gateway.config.key_policies[strict_id] = "strict"
    refused = client.chat("a harmless question", key=strict).json()
    assert refused["bastion_moderation"]["input"]["actions"] == {"sexual": "block"}
    assert refused["choices"][0]["finish_reason"] == "content_filter"


def test_streaming_has_openai_chunks(gw: GatewayClient) -> None:
    with gw.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "echo",
            "messages": [
                {"role": "user", "content": "Hello there. This is a streamed answer, word by word."}
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there. This is a streamed answer, word by word."
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_streaming_input_block(gw: GatewayClient) -> None:
    response = gw.chat(BOMB_QUESTION, stream=True)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    finish = events[-2]["choices"][0]
    assert finish["finish_reason"] == "content_filter"
    assert "illicit/violent" in events[-2]["bastion_moderation"]["input"]["categories"]
    assert echo(gw).calls == 0


def test_streaming_cut_releases_only_moderated_windows(gw: GatewayClient) -> None:
    response = gw.chat("go", model="harmful", stream=True)
    events = sse_events(response.text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    # The first sentence was moderated and released; the window holding the harmful phrase never was.
    assert HARMFUL_PHRASE not in text
    assert "black powder" not in text
    assert HARMFUL_REPLY.startswith(text)
    assert len(text) <= gw.gateway.config.streaming.max_window_chars
    finish = [e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
    assert [e["choices"][0]["finish_reason"] for e in finish] == ["content_filter"]
    assert "illicit/violent" in finish[0]["bastion_moderation"]["output"]["categories"]
    assert events[-1] == "[DONE]"


def test_rate_limit_answers_429_with_retry_after(make_client: Callable[..., GatewayClient]) -> None:
    client = make_client(gateway={"limits": {"default": {"requests_per_minute": 2}}})
    key, _ = client.key_for()
    assert client.chat("one", key=key).status_code == 200
    assert client.chat("two", key=key).status_code == 200
    third = client.chat("three", key=key)
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(third.headers["retry-after"]) <= 60
    other, _ = client.key_for()
    assert client.chat("another key", key=other).status_code == 200


def test_token_quota_answers_429(make_client: Callable[..., GatewayClient]) -> None:
    client = make_client(gateway={"limits": {"default": {"token_quota": 10, "quota_period_s": 3600}}})
    key, _ = client.key_for()
    assert client.chat("a b c d e f", key=key).status_code == 200  # 12 tokens, over the quota after it
    refused = client.chat("again", key=key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert int(refused.headers["retry-after"]) > 1


def test_tools_refused_by_a_backend_without_tools(
    make_client: Callable[..., GatewayClient], tiny_model
) -> None:
    llm = {
        "default_model": "tiny",
        "models": {"tiny": {"backend": "local", "options": {"model": str(tiny_model)}}},
    }
    client = make_client(llm=llm)
    response = client.chat(
        "hi", model="tiny", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools"


def test_scores_cover_the_taxonomy(gw: GatewayClient) -> None:
    gw.chat("hello")
    gw.gateway.usage.flush()
    from sqlalchemy import select

    from bastion.db.tables import UsageEvent

    with gw.app.state.db.session() as session:  # type: ignore[attr-defined]
        row = session.scalars(select(UsageEvent)).one()
    assert set(row.input_scores) == set(CATEGORY_KEYS)


def test_streaming_several_choices_and_output_redaction(make_client: Callable[..., GatewayClient]) -> None:
    reply = f"The first sentence is fine. Then we {REDACT_WORD} the data, carefully and slowly."
    client = make_client(
        gateway={"policies": {"default": {"output": {"categories": {"harassment": {"action": "redact"}}}}}},
        llm={"default_model": "r", "models": {"r": {"backend": "echo", "options": {"reply": reply}}}},
    )
    response = client.chat("go", model="r", n=2, stream=True)
    events = sse_events(response.text)
    texts = {0: "", 1: ""}
    finishes = {}
    for event in events[:-1]:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finishes[choice["index"]] = choice["finish_reason"]
                assert event["bastion_moderation"]["output"]["actions"] == {"harassment": "redact"}
    expected = reply.replace(REDACT_WORD, "[redacted]")
    assert texts == {0: expected, 1: expected}
    assert finishes == {0: "stop", 1: "stop"}


def test_a_policy_naming_an_unknown_moderation_model_is_refused(
    make_client: Callable[..., GatewayClient],
) -> None:
    import pytest

    from bastion.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not configured"):
        make_client(gateway={"policies": {"default": {"moderation_model": "no-such-model"}}})


def test_long_model_names_are_recorded_truncated(gw: GatewayClient) -> None:
    assert gw.chat("hi", model="m" * 500).status_code == 404
    gw.gateway.usage.flush()
    from sqlalchemy import select

    from bastion.db.tables import UsageEvent

    with gw.app.state.db.session() as session:  # type: ignore[attr-defined]
        row = session.scalars(select(UsageEvent)).one()
    assert row.status == "error" and row.http_status == 404 and len(row.model) == 200
