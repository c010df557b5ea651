"""Key management for admins: `GET/POST /v1/keys`, `DELETE/PATCH /v1/keys/{id}`. Each change is audited."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request

from bastion.auth.keys import KeyStore
from bastion.auth.matrix import Caller
from bastion.auth.schemas import KeyCreate, KeyCreated, KeyOut, KeyUpdate

router = APIRouter(tags=["keys"])


def _store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.keys
    return store


@router.get("/v1/keys", response_model=list[KeyOut])
def list_keys(request: Request, _admin: Caller) -> list[KeyOut]:
    """Every active key."""
    return [KeyOut(**asdict(info)) for info in _store(request).list()]


@router.post("/v1/keys", response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, request: Request, admin: Caller) -> KeyCreated:
    """A new key with a role, for an account (default: a new user of its own); the secret is in the
    response only."""
    secret, info = _store(request).create(body.role, body.name, user_id=body.user_id, actor=admin.key_id)
    return KeyCreated(key=secret, **asdict(info))


@router.delete("/v1/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: str, request: Request, admin: Caller) -> KeyOut:
    """Revoke a key; it stops working at once."""
    return KeyOut(**asdict(_store(request).revoke(key_id, actor=admin.key_id)))


@router.patch("/v1/keys/{key_id}", response_model=KeyOut)
def update_key(key_id: str, body: KeyUpdate, request: Request, admin: Caller) -> KeyOut:
    """Change a key's role."""
    return KeyOut(**asdict(_store(request).set_role(key_id, body.role, actor=admin.key_id)))
