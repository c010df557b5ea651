"""Key management for admins: `GET/POST /v1/keys`, `DELETE /v1/keys/{id}`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from bastion.auth.deps import require_roles
from bastion.auth.keys import KeyStore, Principal
from bastion.auth.schemas import KeyCreate, KeyCreated, KeyOut

router = APIRouter(tags=["keys"])
Admin = Annotated[Principal, Depends(require_roles())]


def _store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.keys
    return store


@router.get("/v1/keys", response_model=list[KeyOut])
def list_keys(request: Request, _admin: Admin) -> list[KeyOut]:
    """Every active key."""
    return [KeyOut(**asdict(info)) for info in _store(request).list()]


@router.post("/v1/keys", response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, request: Request, _admin: Admin) -> KeyCreated:
    """A new key with a role; the secret is in the response only."""
    secret, info = _store(request).create(body.role, body.name)
    return KeyCreated(key=secret, **asdict(info))


@router.delete("/v1/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: str, request: Request, _admin: Admin) -> KeyOut:
    """Revoke a key; it stops working at once."""
    return KeyOut(**asdict(_store(request).revoke(key_id)))
