"""Request and response models of the key-management routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from bastion.auth.keys import Role
from bastion.core.fields import PlainText


class KeyCreate(BaseModel):
    """`POST /v1/keys` body."""

    role: Role
    name: PlainText = Field("", max_length=200)
    user_id: PlainText | None = Field(
        None, description="The account the key belongs to; default: a new user of its own."
    )


class KeyUpdate(BaseModel):
    """`PATCH /v1/keys/{id}` body."""

    role: Role


class KeyOut(BaseModel):
    """A key as listed (never the secret)."""

    id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    user_id: str | None = None


class KeyCreated(KeyOut):
    """A new key: `key` is shown this once."""

    key: str
