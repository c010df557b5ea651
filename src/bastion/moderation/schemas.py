"""Request and response models of `/v1/moderations` (OpenAI's contract plus marked extensions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.records import ModerationResult


class TextPart(BaseModel):
    """A text part of a multi-modal input array."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    """Where an image is (URL or data URL)."""

    url: str


class ImagePart(BaseModel):
    """An image part: accepted by the schema, refused by the service (not supported yet)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ImageURL


class ModerationRequest(BaseModel):
    """`POST /v1/moderations` body."""

    input: str | list[str] | list[TextPart | ImagePart] = Field(
        description="A string, an array of strings, or an array of text (and image) parts."
    )
    model: str | None = Field(None, description="A configured moderation model; default from settings.")
    explain: bool = Field(False, description="Bastion extension: return the spans behind flagged categories.")


class ModerationResponse(BaseModel):
    """OpenAI's moderation response."""

    id: str
    model: str
    results: list[ModerationResult]


class BackendCard(BaseModel):
    """One backend's model card: the JSON record, and it rendered (null when the backend has none, or
    when an older card cannot be rendered)."""

    backend: str
    card: dict[str, Any] | None = None
    markdown: str | None = None
    html: str | None = None


class ModelCards(BaseModel):
    """`GET /v1/moderations/models/{model}/card`: the model's backends, each with its card."""

    model: str
    backends: list[BackendCard]


class ModelInfo(BaseModel):
    """A configured moderation model, as `GET /v1/moderations/models` lists it."""

    id: str
    object: Literal["model"] = "model"
    owned_by: str = "bastion"
    description: str = ""
    backends: list[str]
    default: bool = False
