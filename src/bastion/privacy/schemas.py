"""Request and response models of the privacy routes (conversations, `/v1/me`, review, accounts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.fields import PlainText


class MessageOut(BaseModel):
    """A stored message, decrypted for its owner (or a safety reviewer)."""

    role: str
    content: str
    verdict: dict[str, Any] | None = Field(None, description="The moderation summary: action, categories.")
    created_at: datetime


class ConversationOut(BaseModel):
    """A stored conversation; `messages` only when one conversation is read."""

    id: str
    object: Literal["conversation"] = "conversation"
    model: str
    created_at: datetime
    updated_at: datetime
    temporary: bool = Field(description="A temporary chat (`store: false`): never used for training.")
    training_opt_out: bool = Field(description="The opt-out in force when the conversation started.")
    purge_at: datetime | None = Field(None, description="When it will be purged (temporary or deleted).")
    messages: list[MessageOut] | None = None


class ConversationList(BaseModel):
    """`GET /v1/conversations`."""

    object: Literal["list"] = "list"
    data: list[ConversationOut]


class ConversationDeleted(BaseModel):
    """`DELETE /v1/conversations/{id}`: hidden at once, purged by `purge_at`."""

    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True
    purge_at: datetime


class ReviewItem(BaseModel):
    """A deleted conversation in the safety-review queue (no content)."""

    id: str
    model: str
    deleted_at: datetime
    purge_at: datetime
    temporary: bool


class ReviewList(BaseModel):
    """`GET /v1/review/conversations`."""

    object: Literal["list"] = "list"
    retention_days: int
    data: list[ReviewItem]


class ReviewConversation(ConversationOut):
    """A deleted conversation as a safety reviewer reads it (the read is audited)."""

    deleted_at: datetime


class OptOut(BaseModel):
    """The training opt-out of the caller."""

    user_id: str
    opt_out: bool = Field(description="The caller's own flag.")
    organization_id: str
    organization_plan: str
    organization_opt_out: bool
    effective: bool = Field(description="In force: the caller's, its account's or its organisation's flag.")


class OptOutSet(BaseModel):
    """`PUT /v1/me/training-opt-out` body."""

    model_config = ConfigDict(extra="forbid")

    opt_out: bool


class Me(BaseModel):
    """`GET /v1/me`: who the caller is."""

    user_id: str
    name: str
    organization_id: str
    end_user_of: str | None
    key_id: str
    role: str
    training_opt_out: OptOut


class OrgCreate(BaseModel):
    """`POST /v1/organizations` body."""

    model_config = ConfigDict(extra="forbid")

    name: PlainText = Field(min_length=1, max_length=200)
    plan: Literal["free", "team", "enterprise"] = "team"
    training_opt_out: bool | None = Field(None, description="Default: true for enterprise, else false.")


class OrgOut(BaseModel):
    """An organisation."""

    id: str
    name: str
    plan: str
    training_opt_out: bool
    created_at: datetime


class UserCreate(BaseModel):
    """`POST /v1/users` body."""

    model_config = ConfigDict(extra="forbid")

    name: PlainText = Field("", max_length=200)
    org_id: PlainText | None = Field(None, description="Default: the default organisation.")


class UserOut(BaseModel):
    """An account."""

    id: str
    org_id: str
    name: str
    training_opt_out: bool
    created_at: datetime


class UserDeleted(BaseModel):
    """A user erased: what went with it."""

    id: str
    object: Literal["user.deleted"] = "user.deleted"
    deleted: bool = True
    conversations: int
    end_users: int
    keys_revoked: int
    data_keys_shredded: int
