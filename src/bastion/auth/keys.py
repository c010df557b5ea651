"""API keys: created with a role, stored as SHA-256 only, shown once, revocable."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select

from bastion.core.audit import AuditTrail, NoAudit
from bastion.core.errors import AuthenticationError, InvalidRequest, NotFound
from bastion.db.accounts import Accounts
from bastion.db.session import Database
from bastion.db.tables import ApiKey, User, utcnow

KEY_PREFIX = "bst-"
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Role(StrEnum):
    """What a key may do. `admin` may do everything."""

    ADMIN = "admin"
    SAFETY_REVIEWER = "safety_reviewer"
    ANNOTATOR = "annotator"
    RED_TEAMER = "red_teamer"
    CLIENT = "client"


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never the secret itself."""

    id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    user_id: str | None = None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            row.id,
            row.name,
            Role(row.role),
            row.prefix,
            row.created_at,
            row.last_used_at,
            row.revoked_at,
            row.user_id,
        )


@dataclass(frozen=True)
class Principal:
    """The caller of a request: the key's id and role (a synthetic admin when auth is off)."""

    key_id: str
    role: Role


def hash_key(secret: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a plain SHA-256 suffices."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_role(value: str) -> Role:
    """A `Role` from its name, or InvalidRequest listing the valid ones."""
    try:
        return Role(value)
    except ValueError:
        raise InvalidRequest(
            f"unknown role {value!r}; expected one of: {', '.join(r.value for r in Role)}", param="role"
        ) from None


class KeyStore:
    """Creates, lists, revokes and checks API keys. Every key belongs to a user (`bastion.db.accounts`);
    creating, revoking and changing the role of a key are audit events."""

    def __init__(self, db: Database, audit: AuditTrail | None = None) -> None:
        self.db = db
        self.audit: AuditTrail = audit or NoAudit()

    def create(
        self, role: Role | str, name: str = "", *, user_id: str | None = None, actor: str = "system"
    ) -> tuple[str, KeyInfo]:
        """A new key: returns (secret, info). The secret is not stored and cannot be shown again.

        Without `user_id` the key gets a new user of its own in the default organisation."""
        role = parse_role(role) if isinstance(role, str) else role
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        label = name or f"{role.value} key"
        if user_id is None:
            user_id = Accounts(self.db).create_user(name=label).id
        row = ApiKey(
            id="key_" + secrets.token_hex(8),
            name=label,
            role=role.value,
            prefix=secret[: len(KEY_PREFIX) + 6],
            key_hash=hash_key(secret),
            created_at=utcnow(),
            user_id=user_id,
        )
        with self.db.session() as session:
            owner = session.get(User, user_id)
            if owner is None or owner.parent_id is not None:
                raise NotFound(
                    f"no account {user_id!r} to give the key to; `bastion privacy users list` shows them",
                    param="user_id",
                )
            session.add(row)
        self.audit.append(
            actor,
            "key.create",
            row.id,
            details={"role": role.value},
            personal={"name": label},
            subject=user_id,
        )
        return secret, KeyInfo.of(row)

    def set_role(self, key_id: str, role: Role | str, *, actor: str = "system") -> KeyInfo:
        """Change a key's role (an audit event)."""
        role = parse_role(role) if isinstance(role, str) else role
        with self.db.session() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(
                    f"no API key with id {key_id!r}; `bastion keys list` shows the ids", param="key_id"
                )
            before = row.role
            row.role = role.value
            info = KeyInfo.of(row)
        if before != role.value:
            self.audit.append(actor, "key.role_change", key_id, details={"from": before, "to": role.value})
        return info

    def list(self, include_revoked: bool = False) -> list[KeyInfo]:
        """Every key, oldest first."""
        with self.db.session() as session:
            query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return [KeyInfo.of(row) for row in session.scalars(query)]

    def revoke(self, key_id: str, *, actor: str = "system") -> KeyInfo:
        """Revoke a key by id; revoking twice is harmless."""
        with self.db.session() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(
                    f"no API key with id {key_id!r}; `bastion keys list` shows the ids", param="key_id"
                )
            revoked = row.revoked_at is None
            if revoked:
                row.revoked_at = utcnow()
            info = KeyInfo.of(row)
        if revoked:
            self.audit.append(actor, "key.revoke", key_id, subject=info.user_id)
        return info

    def has_active_admin(self) -> bool:
        """Whether any unrevoked admin key exists."""
        with self.db.session() as session:
            query = select(ApiKey.id).where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None))
            return session.scalars(query.limit(1)).first() is not None

    def authenticate(self, secret: str) -> Principal:
        """The principal a presented key belongs to; AuthenticationError if unknown or revoked."""
        digest = hash_key(secret)
        with self.db.session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
            if row is None or row.revoked_at is not None:
                raise AuthenticationError(
                    "Incorrect API key provided. Create one with `bastion keys create --role client`."
                )
            now = utcnow()
            # Recorded at minute resolution: a write on every request would cost more than the request.
            if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
                row.last_used_at = now
            return Principal(row.id, Role(row.role))
