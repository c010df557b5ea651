"""API keys: created with a role, stored as SHA-256 only, shown once, revocable.

Authenticated keys are remembered for `AUTH_CACHE_TTL_S` (a database query per request cost more than the
rest of auth). The cache is shared by every `KeyStore` on the same `Database`, and revoking a key or changing
its role through any of them drops its entry at once; a change made by another process (the CLI, another
API worker) takes effect within the TTL.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import weakref
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
AUTH_CACHE_TTL_S = 5.0


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


class _AuthCache:
    """Authenticated keys by hash, each until a deadline; entries of a key are dropped by its id."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped by every drop: a lookup that raced a revoke is not remembered

    def get(self, digest: str, now: float) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal, expires: float, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= 10_000:  # many keys in turn: start again rather than grow
                self._entries.clear()
            self._entries[digest] = (principal, expires)

    def drop(self, key_id: str) -> None:
        with self._lock:
            self.generation += 1
            for digest in [d for d, (p, _) in self._entries.items() if p.key_id == key_id]:
                del self._entries[digest]


_AUTH_CACHES: weakref.WeakKeyDictionary[Database, _AuthCache] = weakref.WeakKeyDictionary()
_AUTH_CACHES_LOCK = threading.Lock()


def _auth_cache(db: Database) -> _AuthCache:
    with _AUTH_CACHES_LOCK:
        cache = _AUTH_CACHES.get(db)
        if cache is None:
            cache = _AUTH_CACHES[db] = _AuthCache()
        return cache


class KeyStore:
    """Creates, lists, revokes and checks API keys. Every key belongs to a user (`bastion.db.accounts`);
    creating, revoking and changing the role of a key are audit events."""

    def __init__(
        self, db: Database, audit: AuditTrail | None = None, *, cache_ttl_s: float = AUTH_CACHE_TTL_S
    ) -> None:
        self.db = db
        self.audit: AuditTrail = audit or NoAudit()
        self.cache_ttl_s = cache_ttl_s
        self._cache = _auth_cache(db)

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
        self._cache.drop(key_id)
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
        self._cache.drop(key_id)
        if revoked:
            self.audit.append(actor, "key.revoke", key_id, subject=info.user_id)
        return info

    def has_active_admin(self) -> bool:
        """Whether any unrevoked admin key exists."""
        with self.db.session() as session:
            query = select(ApiKey.id).where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None))
            return session.scalars(query.limit(1)).first() is not None

    def cached_principal(self, secret: str) -> Principal | None:
        """The principal of a key authenticated less than `cache_ttl_s` ago (no database access)."""
        return self._cache.get(hash_key(secret), time.monotonic())

    def authenticate(self, secret: str) -> Principal:
        """The principal a presented key belongs to; AuthenticationError if unknown or revoked."""
        digest = hash_key(secret)
        if self.cache_ttl_s <= 0:
            return self._authenticate(digest)
        checked = time.monotonic()
        cached = self._cache.get(digest, checked)
        if cached is not None:
            return cached
        generation = self._cache.generation
        principal = self._authenticate(digest)
        self._cache.put(digest, principal, checked + self.cache_ttl_s, generation)
        return principal

    def _authenticate(self, digest: str) -> Principal:
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
