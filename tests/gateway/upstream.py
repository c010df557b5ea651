"""A tiny OpenAI-compatible upstream for tests: behaviour chosen by the requested model name.

ok        answers "upstream says: <last user message>" (streams word by word); with tools, calls one
harmful   answers the harmful reply
fail500   answers 500 in OpenAI's error envelope
bad400    answers 400 in OpenAI's error envelope
slow      waits 3 s before answering
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.gateway.helpers import HARMFUL_REPLY


def upstream_app() -> FastAPI:
    """The upstream app; every request body is kept in `app.state.bodies`, headers in `.headers`."""
    app = FastAPI()
    app.state.bodies = []
    app.state.headers = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        app.state.bodies.append(body)
        app.state.headers.append(dict(request.headers))
        model = body["model"]
        if model == "fail500":
            return JSONResponse({"error": {"message": "upstream exploded", "type": "server_error"}}, 500)
        if model == "bad400":
            return JSONResponse(
                {
                    "error": {
                        "message": "temperature is too hot",
                        "type": "invalid_request_error",
                        "param": "temperature",
                        "code": None,
                    }
                },
                400,
            )
        if model == "slow":
            await asyncio.sleep(3)
        last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        text = HARMFUL_REPLY if model == "harmful" else f"upstream says: {last}"
        tool_calls = None
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            tool_calls = [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"q": 1}'}}
            ]
            text = None
        usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
        base = {"id": "chatcmpl-up", "created": 1, "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            finish = "tool_calls" if tool_calls else "stop"
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

        def events() -> Iterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                payload = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(payload)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            if tool_calls:
                call = tool_calls[0]
                yield chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": 1}'}}]})
                yield chunk({}, "tool_calls")
            else:
                for word in (text or "").split(" "):
                    yield chunk({"content": word + " "})
                yield chunk({}, "stop")
            last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
