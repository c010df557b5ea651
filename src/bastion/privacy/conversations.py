"""The conversation store: message content encrypted with the owner's data key, soft delete, purge.

No column holds plaintext content: each message is AES-GCM ciphertext bound to its message id. A deleted
conversation is hidden from its owner at once and purged `retention_days` later; a temporary chat
(`store: false`) is purged `temporary_days` after its last message. Times come from an injected clock.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select

from bastion.core.errors import InvalidRequest, NotFound
from bastion.core.records import Conversation, Message
from bastion.db.session import Database
from bastion.db.tables import ConversationMessageRow, ConversationRow, utcnow
from bastion.privacy.audit import AuditLog
from bastion.privacy.crypto import KeyRing, seal
from bastion.privacy.settings import PrivacySettings

logger = logging.getLogger("bastion.privacy.conversations")

ROLES = ("system", "user", "assistant", "tool", "developer")
VERDICT_KEYS = ("action", "categories", "actions")  # the gateway's summary: no content, no spans


def pseudonym(kind: str, value: str) -> str:
    """A stable reference that does not reveal `value` (for audit targets that outlive a purge)."""
    return f"{kind}:" + hashlib.sha256(f"bastion-{kind}\x00{value}".encode()).hexdigest()[:24]


def verdict_summary(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    """Only the content-free fields of a moderation verdict summary."""
    if verdict is None:
        return None
    return {key: verdict[key] for key in VERDICT_KEYS if key in verdict}


@dataclass(frozen=True)
class ConversationInfo:
    """A conversation's metadata (no content)."""

    id: str
    owner_id: str
    model: str
    created_at: datetime
    updated_at: datetime
    training_opt_out: bool
    temporary: bool
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class PurgeReport:
    """What a purge removed."""

    conversations: int
    messages: int
    now: datetime


def _info(row: ConversationRow) -> ConversationInfo:
    return ConversationInfo(
        id=row.id,
        owner_id=row.owner_id,
        model=row.model,
        created_at=row.created_at,
        updated_at=row.updated_at,
        training_opt_out=row.training_opt_out,
        temporary=row.temporary,
        deleted_at=row.deleted_at,
    )


class ConversationStore:
    """Create, append, list, read, delete and purge encrypted conversations."""

    def __init__(
        self,
        db: Database,
        keyring: KeyRing,
        settings: PrivacySettings | None = None,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.settings = settings or PrivacySettings()
        self.audit = audit
        self.clock = clock

    def _owned(self, session: Any, conversation_id: str, owner_id: str) -> ConversationRow:
        row = session.get(ConversationRow, conversation_id)
        if row is None or row.owner_id != owner_id or row.deleted_at is not None:
            # Another owner's conversation reads exactly like a missing one.
            raise NotFound(f"no conversation {conversation_id!r}", param="conversation_id")
        return row

    def create(
        self,
        owner_id: str,
        model: str,
        *,
        key_id: str | None = None,
        training_opt_out: bool = False,
        temporary: bool = False,
    ) -> ConversationInfo:
        """Start a conversation; the opt-out flag in force now is snapshotted onto it."""
        now = self.clock()
        row = ConversationRow(
            id="conv_" + secrets.token_hex(12),
            owner_id=owner_id,
            key_id=key_id,
            model=model[:200],
            created_at=now,
            updated_at=now,
            training_opt_out=training_opt_out or temporary,
            temporary=temporary,
        )
        with self.db.session() as session:
            session.add(row)
        return _info(row)

    def append(
        self,
        conversation_id: str,
        owner_id: str,
        role: str,
        content: str,
        *,
        verdict: dict[str, Any] | None = None,
    ) -> str:
        """Add an encrypted message; returns its id."""
        if role not in ROLES:
            raise InvalidRequest(f"unknown message role {role!r}; expected one of {', '.join(ROLES)}")
        key = self.keyring.data_key(owner_id, create=True)
        now = self.clock()
        message_id = "msg_" + secrets.token_hex(12)

        nonce, ciphertext = seal(key, content.encode(), f"message:{message_id}")
        with self.db.session() as session:
            conversation = self._owned(session, conversation_id, owner_id)
            count = len(
                session.scalars(
                    select(ConversationMessageRow.id).where(
                        ConversationMessageRow.conversation_id == conversation_id
                    )
                ).all()
            )
            session.add(
                ConversationMessageRow(
                    id=message_id,
                    conversation_id=conversation_id,
                    position=count,
                    role=role,
                    ciphertext=ciphertext,
                    nonce=nonce,
                    verdict=verdict_summary(verdict),
                    created_at=now,
                )
            )
            conversation.updated_at = now
        return message_id

    def list(self, owner_id: str) -> list[ConversationInfo]:
        """The owner's conversations that are not deleted, newest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(ConversationRow)
                .where(ConversationRow.owner_id == owner_id, ConversationRow.deleted_at.is_(None))
                .order_by(ConversationRow.updated_at.desc())
            ).all()
            return [_info(r) for r in rows]

    def read(self, conversation_id: str, owner_id: str) -> Conversation:
        """The decrypted conversation; NotFound for a missing, deleted or someone else's conversation."""
        with self.db.session() as session:
            row = self._owned(session, conversation_id, owner_id)
            messages = session.scalars(
                select(ConversationMessageRow)
                .where(ConversationMessageRow.conversation_id == conversation_id)
                .order_by(ConversationMessageRow.position)
            ).all()
            model = row.model
        decoded = [
            Message(
                role=m.role,
                content=self.keyring.decrypt(owner_id, m.nonce, m.ciphertext, f"message:{m.id}").decode(),
            )
            for m in messages
        ]
        return Conversation(id=conversation_id, model=model, messages=decoded)

    def delete(self, conversation_id: str, owner_id: str) -> None:
        """Soft-delete: hidden from the owner at once, purged after the retention window."""
        with self.db.session() as session:
            row = self._owned(session, conversation_id, owner_id)
            row.deleted_at = self.clock()
        if self.audit is not None:
            self.audit.append(
                owner_id,
                "conversation.delete",
                pseudonym("conversation", conversation_id),
                details={"retention_days": self.settings.retention_days},
            )

    def purge(self, now: datetime | None = None) -> PurgeReport:
        """Remove every conversation deleted more than `retention_days` ago and every temporary chat
        whose last message is more than `temporary_days` old: rows and ciphertexts, nothing left."""
        now = now or self.clock()
        deleted_before = now - timedelta(days=self.settings.retention_days)
        temporary_before = now - timedelta(days=self.settings.temporary_days)
        due = or_(
            and_(ConversationRow.deleted_at.is_not(None), ConversationRow.deleted_at <= deleted_before),
            and_(ConversationRow.temporary.is_(True), ConversationRow.updated_at <= temporary_before),
        )
        with self.db.session() as session:
            ids = list(session.scalars(select(ConversationRow.id).where(due)))
            messages = 0
            if ids:
                result = session.execute(
                    delete(ConversationMessageRow).where(ConversationMessageRow.conversation_id.in_(ids))
                )
                messages = int(getattr(result, "rowcount", 0) or 0)
                session.execute(delete(ConversationRow).where(ConversationRow.id.in_(ids)))
        report = PurgeReport(conversations=len(ids), messages=messages, now=now)
        if self.audit is not None and ids:
            self.audit.append(
                "system",
                "conversation.purge",
                "conversations",
                details={"conversations": len(ids), "messages": messages, "now": now.isoformat()},
            )
        return report


class StoringSink:
    """The gateway's `ConversationSink` backed by the store: one conversation per exchange.

    The owner is the key, or `key_id/user` when the request names an end user. An exchange with
    `store` false becomes a temporary chat (never for training, purged after `temporary_days`).
    """

    def __init__(self, store: ConversationStore, opt_out: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.opt_out = opt_out or (lambda _owner: False)

    def record(self, exchange: Any) -> None:
        """Store the exchange encrypted; failures are logged, never raised into the request."""
        try:
            owner = exchange.key_id if not exchange.user else f"{exchange.key_id}/{exchange.user}"
            temporary = not bool(getattr(exchange, "store", True))
            info = self.store.create(
                owner,
                exchange.model,
                key_id=exchange.key_id,
                training_opt_out=self.opt_out(owner),
                temporary=temporary,
            )
            for message in exchange.messages:
                if message.content:
                    self.store.append(info.id, owner, message.role, message.content, verdict=exchange.input)
            for answer in exchange.answers:
                if answer:
                    self.store.append(info.id, owner, "assistant", answer, verdict=exchange.output)
        except Exception:
            logger.exception("could not store conversation of request %s", exchange.request_id)
