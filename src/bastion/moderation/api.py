"""`POST /v1/moderations` and `GET /v1/moderations/models`."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from bastion.auth.deps import ANY_ROLE, require_roles
from bastion.auth.keys import Principal
from bastion.core.errors import InvalidRequest, PayloadTooLarge
from bastion.core.settings import ModerationLimits
from bastion.moderation.card import model_cards
from bastion.moderation.schemas import (
    ImagePart,
    ModelCards,
    ModelInfo,
    ModerationRequest,
    ModerationResponse,
    TextPart,
)
from bastion.moderation.service import ModerationService

router = APIRouter(tags=["moderation"])
Caller = Annotated[Principal, Depends(require_roles(*ANY_ROLE))]


def texts_of(request: ModerationRequest, limits: ModerationLimits) -> list[str]:
    """The texts to score, in order; refuses images, empty arrays and inputs over the limits."""
    raw = request.input
    items: list[str | TextPart | ImagePart] = [raw] if isinstance(raw, str) else list(raw)
    if not items:
        raise InvalidRequest("'input' must not be an empty array.", param="input", code="empty_input")
    if len(items) > limits.max_items:
        raise InvalidRequest(
            f"'input' has {len(items)} items; the limit is {limits.max_items} per request. "
            "Split it into batches.",
            param="input",
            code="too_many_items",
        )
    texts: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, ImagePart):
            raise InvalidRequest(
                "Image inputs are not supported yet by Bastion's moderation models; send text parts only.",
                param=f"input.{index}",
                code="unsupported_input_type",
            )
        text = item.text if isinstance(item, TextPart) else item
        if len(text) > limits.max_chars_per_item:
            raise PayloadTooLarge(
                f"input[{index}] has {len(text)} characters; the limit is {limits.max_chars_per_item}.",
                param=f"input.{index}",
            )
        texts.append(text)
    return texts


def service_of(request: Request) -> ModerationService:
    """The app's moderation service."""
    service: ModerationService = request.app.state.moderation
    return service


@router.post("/v1/moderations", response_model=ModerationResponse, response_model_exclude_none=True)
def create_moderation(body: ModerationRequest, request: Request, _caller: Caller) -> ModerationResponse:
    """Classify text on the 13 harm categories, exactly as OpenAI's endpoint does."""
    service = service_of(request)
    texts = texts_of(body, service.settings.moderation.limits)
    model, results = service.moderate(texts, model=body.model, explain=body.explain)
    return ModerationResponse(id="modr-" + secrets.token_hex(12), model=model, results=results)


@router.get("/v1/moderations/models", response_model=list[ModelInfo])
def list_moderation_models(request: Request, _caller: Caller) -> list[ModelInfo]:
    """The configured moderation models (aliases not repeated)."""
    moderation = service_of(request).settings.moderation
    return [
        ModelInfo(
            id=name,
            description=spec.description,
            backends=[b.plugin for b in spec.backends],
            default=name == moderation.default_model,
        )
        for name, spec in sorted(moderation.models.items())
    ]


@router.get("/v1/moderations/models/{model_id}/card", response_model=ModelCards)
def get_model_card(model_id: str, request: Request, _caller: Caller) -> ModelCards:
    """The model card of each of the model's backends (its data, held-out metrics per category and
    language, thresholds, known limits) as JSON, Markdown and HTML; a backend without one has nulls."""
    service = service_of(request)
    model = service.model(model_id)
    return ModelCards.model_validate(
        {
            "model": model.name,
            "backends": model_cards(model.backends),
        }
    )
