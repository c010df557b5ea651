"""`POST /v1/chat/completions`, `GET /v1/models` and `GET /v1/models/{id}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from bastion.auth.matrix import Caller
from bastion.core.errors import ModelNotFound
from bastion.gateway.schemas import ChatCompletionRequest
from bastion.gateway.service import Gateway

router = APIRouter(tags=["gateway"])


def gateway_of(request: Request) -> Gateway:
    """The app's gateway (made by `create_app`)."""
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.post("/v1/chat/completions")
def create_chat_completion(body: ChatCompletionRequest, request: Request, caller: Caller) -> Response:
    """OpenAI's chat completions, with input and output moderated by the caller's policy.

    A blocked turn answers 200 with `finish_reason: "content_filter"` and the policy's refusal; the
    extension field `bastion_moderation` names the flagged categories and the action taken. The
    `Server-Timing` header gives the milliseconds spent in moderation and upstream (a stream's: its input
    moderation only, as its headers leave before the answer).
    """
    gateway = gateway_of(request)
    turn = gateway.prepare(body, caller)
    if body.stream:
        events = gateway.open_stream(turn)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "Server-Timing": gateway.server_timing(turn),
            },
        )
    completion = gateway.complete(turn)
    return JSONResponse(completion, headers={"Server-Timing": gateway.server_timing(turn)})


@router.get("/v1/models")
def list_models(request: Request, _caller: Caller) -> dict[str, Any]:
    """The configured chat models, in OpenAI's list shape."""
    return {"object": "list", "data": gateway_of(request).models.listing()}


@router.get("/v1/models/{model_id:path}")
def retrieve_model(model_id: str, request: Request, _caller: Caller) -> dict[str, Any]:
    """One configured chat model."""
    for entry in gateway_of(request).models.listing():
        if entry["id"] == model_id:
            return entry
    raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
