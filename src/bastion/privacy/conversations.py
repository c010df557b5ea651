"""The conversation store: message content encrypted with the owner's data key, soft delete, purge.

No column holds plaintext content: each message is AES-GCM ciphertext bound to its message id. A deleted
conversation is hidden from its owner at once, readable only by safety reviewers (each read audited), and
purged `retention_days` later; a temporary chat (`store: false`) is purged `temporary_days` after its last
message. The purge removes a conversation everywhere: its rows and ciphertexts, the usage events' reference
to it, its entries in training-export manifests (and its lines in the export files still on disk), and
whatever a registered purge hook derived from it. Times come from an injected clock.

The gateway hands every answered exchange to `StoringSink`, which writes it from a background thread,
together with the exchanges queued meanwhile (one transaction per batch).
Chat requests are stateless (each repeats the history), so an exchange continues the owner's conversation
whose stored messages are a prefix of the request's: each conversation keeps an HMAC (under the owner's
data key) of its messages so far, and the training opt-out in force is snapshotted when it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from bastion.core.errors import InvalidRequest, NotFound
from bastion.core.records import Conversation, Message
from bastion.db.accounts import Accounts
from bastion.db.session import Database
from bastion.db.tables import (
    ConversationMessageRow,
    ConversationRow,
    TrainingExportItemRow,
    TrainingExportRow,
    UsageEvent,
    utcnow,
)
from bastion.privacy.audit import AuditLog
from bastion.privacy.crypto import KeyRing, derive_mac_key, mac_hex, seal
from bastion.privacy.settings import PrivacySettings

logger = logging.getLogger("bastion.privacy.conversations")
_CONVERSATIONS = cast(Table, ConversationRow.__table__)
_MESSAGES = cast(Table, ConversationMessageRow.__table__)
_USAGE = cast(Table, UsageEvent.__table__)

# The sink's statements, built once (Core, with bound parameters): it runs them for every exchange.
_C = _CONVERSATIONS.c
_CONTINUABLE = select(_C.id, _C.head_digest).where(
    _C.owner_id == bindparam("owner"),
    _C.deleted_at.is_(None),  # live: not deleted, and not a temporary chat past its window
    or_(_C.temporary.is_(False), _C.updated_at > bindparam("cutoff")),
    _C.temporary == bindparam("temporary"),
    _C.head_digest.in_(bindparam("digests", expanding=True)),
)
_MESSAGE_COUNT = select(func.count()).where(_MESSAGES.c.conversation_id == bindparam("conversation"))
_ADD_CONVERSATION = insert(_CONVERSATIONS)
_ADD_MESSAGES = insert(_MESSAGES)
_MOVE_HEAD = (
    update(_CONVERSATIONS)
    .where(_C.id == bindparam("conversation"))
    .values(head_digest=bindparam("head"), updated_at=bindparam("now"))
)
_SET_HEAD = (
    update(_CONVERSATIONS).where(_C.id == bindparam("conversation")).values(head_digest=bindparam("head"))
)
_LINK_USAGE = (
    update(_USAGE)
    .where(_USAGE.c.id == bindparam("request"))
    .values(conversation_id=bindparam("conversation"))
)

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
    usage_refs: int = 0
    export_items: int = 0
    exports_invalidated: list[str] = field(default_factory=list)
    derived: int = 0


PurgeHook = Callable[[Session, Sequence[str]], int]
PURGE_HOOKS: list[PurgeHook] = []
"""Capabilities that derive data from conversations (feedback items, caches) register a hook here:
`hook(session, conversation_ids) -> rows removed`, called inside the purge's transaction."""


def register_purge_hook(hook: PurgeHook) -> PurgeHook:
    """Register `hook` to run in every purge (usable as a decorator)."""
    if hook not in PURGE_HOOKS:
        PURGE_HOOKS.append(hook)
    return hook


def _chunks(ids: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


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


@dataclass(frozen=True)
class StoredMessage:
    """A decrypted message with its content-free verdict summary."""

    role: str
    content: str
    verdict: dict[str, Any] | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "role": self.role,
            "content": self.content,
            "verdict": self.verdict,
            "created_at": self.created_at.isoformat(),
        }


Infos = list[ConversationInfo]
Messages = list[StoredMessage]


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

    def _live(self) -> Any:
        """Not deleted, and not a temporary chat past its window (gone at once, before the purge runs)."""
        cutoff = self.clock() - timedelta(days=self.settings.temporary_days)
        return and_(
            ConversationRow.deleted_at.is_(None),
            or_(ConversationRow.temporary.is_(False), ConversationRow.updated_at > cutoff),
        )

    def _owned(self, session: Any, conversation_id: str, owner_id: str) -> ConversationRow:
        row = session.get(ConversationRow, conversation_id)
        expired = (
            row is not None
            and row.temporary
            and row.updated_at <= self.clock() - timedelta(days=self.settings.temporary_days)
        )
        if row is None or row.owner_id != owner_id or row.deleted_at is not None or expired:
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
        row = self._new_row(owner_id, model, self.clock(), key_id, training_opt_out, temporary)
        with self.db.session() as session:
            session.add(row)
        return _info(row)

    @staticmethod
    def _new_row(
        owner_id: str,
        model: str,
        now: datetime,
        key_id: str | None,
        training_opt_out: bool,
        temporary: bool,
    ) -> ConversationRow:
        return ConversationRow(
            id="conv_" + secrets.token_hex(12),
            owner_id=owner_id,
            key_id=key_id,
            model=model[:200],
            created_at=now,
            updated_at=now,
            training_opt_out=training_opt_out or temporary,
            temporary=temporary,
        )

    def append(
        self,
        conversation_id: str,
        owner_id: str,
        role: str,
        content: str,
        *,
        verdict: dict[str, Any] | None = None,
        request_id: str | None = None,
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
                    request_id=request_id,
                )
            )
            conversation.updated_at = now
        return message_id

    # -- the gateway's exchanges ----------------------------------------------------------------------

    @staticmethod
    def _chain(mac_key: bytes, turns: Sequence[tuple[str, str]], previous: str = "") -> list[str]:
        """HMAC chain over (role, content), continuing from `previous`: entry i covers turns[: i + 1]."""
        digests: list[str] = []
        for role, content in turns:
            previous = mac_hex(mac_key, f"{previous}\x00{role}\x00{content}")
            digests.append(previous)
        return digests

    def record_exchange(
        self,
        owner_id: str,
        model: str,
        turns: Sequence[tuple[str, str]],
        answers: Sequence[str],
        *,
        key_id: str | None = None,
        temporary: bool = False,
        opt_out: Callable[[], bool] = lambda: False,
        input_verdict: dict[str, Any] | None = None,
        output_verdict: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> str:
        """Store one request's messages and answers: continue the conversation whose stored messages are
        a prefix of `turns`, else start one (snapshotting `opt_out()`). Returns the conversation id.
        One transaction (see `store_exchange`)."""
        data_key = self.keyring.data_key(owner_id, create=True)
        with self.db.session() as session:
            return self.store_exchange(
                session,
                owner_id,
                data_key,
                model,
                turns,
                answers,
                key_id=key_id,
                temporary=temporary,
                opt_out=opt_out,
                input_verdict=input_verdict,
                output_verdict=output_verdict,
                request_id=request_id,
            )

    def store_exchange(
        self,
        session: Session,
        owner_id: str,
        data_key: bytes,
        model: str,
        turns: Sequence[tuple[str, str]],
        answers: Sequence[str],
        *,
        key_id: str | None = None,
        temporary: bool = False,
        opt_out: Callable[[], bool] = lambda: False,
        input_verdict: dict[str, Any] | None = None,
        output_verdict: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> str:
        """`record_exchange` inside the caller's transaction, with the owner's data key already fetched
        (the gateway's sink stores a batch of exchanges in one transaction this way)."""
        connection = session.connection()
        mac_key = derive_mac_key(data_key)
        digests = self._chain(mac_key, turns)
        now = self.clock()
        conversation_id: str | None = None
        start = count = 0
        if digests:
            cutoff = now - timedelta(days=self.settings.temporary_days)
            candidates = connection.execute(
                _CONTINUABLE,
                {"owner": owner_id, "cutoff": cutoff, "temporary": temporary, "digests": digests},
            ).all()
            position = {digest: i for i, digest in enumerate(digests)}
            found = [(position[head], cid) for cid, head in candidates if head is not None]
            if found:
                index, conversation_id = max(found)
                start = index + 1
                count = connection.execute(_MESSAGE_COUNT, {"conversation": conversation_id}).scalar() or 0
        new = [
            (role, content, input_verdict if role != "assistant" else None) for role, content in turns[start:]
        ]
        new += [("assistant", answer, output_verdict) for answer in answers]
        heads = self._chain(mac_key, [("assistant", a) for a in answers], digests[-1] if digests else "")
        head = heads[-1] if heads else (digests[-1] if digests else None)
        # Core statements, not ORM objects: the sink writes many exchanges per transaction.
        if conversation_id is None:
            row = self._new_row(owner_id, model, now, key_id, opt_out(), temporary)
            conversation_id = row.id
            connection.execute(
                _ADD_CONVERSATION,
                [
                    {
                        "id": row.id,
                        "owner_id": row.owner_id,
                        "key_id": row.key_id,
                        "model": row.model,
                        "created_at": now,
                        "updated_at": now,
                        "training_opt_out": row.training_opt_out,
                        "temporary": row.temporary,
                        "head_digest": head,
                    }
                ],
            )
        elif new:
            connection.execute(_MOVE_HEAD, {"conversation": conversation_id, "head": head, "now": now})
        else:
            connection.execute(_SET_HEAD, {"conversation": conversation_id, "head": head})
        rows = []
        for offset, (role, content, verdict) in enumerate(new):
            if role not in ROLES:
                raise InvalidRequest(f"unknown message role {role!r}; expected one of {', '.join(ROLES)}")
            message_id = "msg_" + secrets.token_hex(12)
            nonce, ciphertext = seal(data_key, content.encode(), f"message:{message_id}")
            rows.append(
                {
                    "id": message_id,
                    "conversation_id": conversation_id,
                    "position": count + offset,
                    "role": role,
                    "ciphertext": ciphertext,
                    "nonce": nonce,
                    "verdict": verdict_summary(verdict),
                    "created_at": now,
                    "request_id": request_id,
                }
            )
        if rows:
            connection.execute(_ADD_MESSAGES, rows)
        return conversation_id

    # -- reading --------------------------------------------------------------------------------------

    def list(self, owner_id: str) -> Infos:
        """The owner's conversations that are not deleted, newest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(ConversationRow)
                .where(ConversationRow.owner_id == owner_id, self._live())
                .order_by(ConversationRow.updated_at.desc())
            ).all()
            return [_info(r) for r in rows]

    def info(self, conversation_id: str, owner_id: str) -> ConversationInfo:
        """The metadata of one of the owner's conversations (NotFound otherwise)."""
        with self.db.session() as session:
            return _info(self._owned(session, conversation_id, owner_id))

    def _decrypt(self, owner_id: str, conversation_id: str) -> Messages:
        with self.db.session() as session:
            messages = session.scalars(
                select(ConversationMessageRow)
                .where(ConversationMessageRow.conversation_id == conversation_id)
                .order_by(ConversationMessageRow.position)
            ).all()
        return [
            StoredMessage(
                role=m.role,
                content=self.keyring.decrypt(owner_id, m.nonce, m.ciphertext, f"message:{m.id}").decode(),
                verdict=m.verdict,
                created_at=m.created_at,
            )
            for m in messages
        ]

    def messages(self, conversation_id: str, owner_id: str) -> Messages:
        """The decrypted messages of one of the owner's conversations, with verdicts."""
        self.info(conversation_id, owner_id)
        return self._decrypt(owner_id, conversation_id)

    def read(self, conversation_id: str, owner_id: str) -> Conversation:
        """The decrypted conversation; NotFound for a missing, deleted or someone else's conversation."""
        info = self.info(conversation_id, owner_id)
        decoded = [Message(role=m.role, content=m.content) for m in self._decrypt(owner_id, conversation_id)]
        return Conversation(id=conversation_id, model=info.model, messages=decoded)

    def delete(self, conversation_id: str, owner_id: str, *, actor: str | None = None) -> None:
        """Soft-delete: hidden from the owner at once, purged after the retention window."""
        with self.db.session() as session:
            row = self._owned(session, conversation_id, owner_id)
            row.deleted_at = self.clock()
        if self.audit is not None:
            self.audit.append(
                actor or owner_id,
                "conversation.delete",
                pseudonym("conversation", conversation_id),
                details={"retention_days": self.settings.retention_days},
                subject=owner_id,
            )

    # -- safety review of deleted conversations -------------------------------------------------------

    def purge_due(self, info: ConversationInfo) -> datetime:
        """When the purge removes this conversation."""
        if info.deleted_at is not None:
            deleted = info.deleted_at + timedelta(days=self.settings.retention_days)
            if info.temporary:
                return min(deleted, info.updated_at + timedelta(days=self.settings.temporary_days))
            return deleted
        return info.updated_at + timedelta(days=self.settings.temporary_days)

    def review_info(self, conversation_id: str) -> ConversationInfo:
        """Any conversation's metadata, deleted or not (for the service itself, not for callers)."""
        with self.db.session() as session:
            row = session.get(ConversationRow, conversation_id)
            if row is None:
                raise NotFound(f"no conversation {conversation_id!r}", param="conversation_id")
            return _info(row)

    def review_queue(self) -> Infos:
        """Deleted conversations still inside the retention window, oldest deletion first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(ConversationRow)
                .where(ConversationRow.deleted_at.is_not(None))
                .order_by(ConversationRow.deleted_at)
            ).all()
            return [_info(r) for r in rows]

    def review_read(self, conversation_id: str, reviewer: str) -> tuple[ConversationInfo, Messages]:
        """A deleted conversation for a safety reviewer; the read is an audit event. Only deleted
        conversations inside the retention window are readable this way (NotFound otherwise)."""
        with self.db.session() as session:
            row = session.get(ConversationRow, conversation_id)
            if row is None or row.deleted_at is None:
                raise NotFound(f"no deleted conversation {conversation_id!r}", param="conversation_id")
            info = _info(row)
        if self.purge_due(info) <= self.clock():
            raise NotFound(f"no deleted conversation {conversation_id!r}", param="conversation_id")
        if self.audit is not None:
            self.audit.append(
                reviewer,
                "conversation.review_read",
                pseudonym("conversation", conversation_id),
                details={"deleted_at": info.deleted_at.isoformat() if info.deleted_at else None},
                subject=info.owner_id,
            )
        return info, self._decrypt(info.owner_id, conversation_id)

    # -- purge ----------------------------------------------------------------------------------------

    def purge(self, now: datetime | None = None) -> PurgeReport:
        """Remove every conversation deleted more than `retention_days` ago and every temporary chat
        whose last message is more than `temporary_days` old, everywhere: rows and ciphertexts, usage
        events' references, training-export manifests and files, and what purge hooks derived."""
        now = now or self.clock()
        deleted_before = now - timedelta(days=self.settings.retention_days)
        temporary_before = now - timedelta(days=self.settings.temporary_days)
        due = or_(
            and_(ConversationRow.deleted_at.is_not(None), ConversationRow.deleted_at <= deleted_before),
            and_(ConversationRow.temporary.is_(True), ConversationRow.updated_at <= temporary_before),
        )
        return self.remove(due, now, reason="retention")

    def remove(self, where: Any, now: datetime, *, reason: str) -> PurgeReport:
        """Remove the conversations matching `where` everywhere, now (the purge, and user deletion)."""
        messages = usage_refs = export_items = derived = 0
        invalidated: dict[str, int] = {}
        files: list[tuple[str, str]] = []
        with self.db.session() as session:
            ids = list(session.scalars(select(ConversationRow.id).where(where)))
            for chunk in _chunks(ids):
                result = session.execute(
                    delete(ConversationMessageRow).where(ConversationMessageRow.conversation_id.in_(chunk))
                )
                messages += int(getattr(result, "rowcount", 0) or 0)
                # The usage event stays (metrics, abuse), unlinked and without the end user's identifier.
                result = session.execute(
                    update(UsageEvent)
                    .where(UsageEvent.conversation_id.in_(chunk))
                    .values(conversation_id=None, user=None)
                )
                usage_refs += int(getattr(result, "rowcount", 0) or 0)
                for export_id in session.scalars(
                    select(TrainingExportItemRow.export_id).where(
                        TrainingExportItemRow.conversation_id.in_(chunk)
                    )
                ):
                    invalidated[export_id] = invalidated.get(export_id, 0) + 1
                result = session.execute(
                    delete(TrainingExportItemRow).where(TrainingExportItemRow.conversation_id.in_(chunk))
                )
                export_items += int(getattr(result, "rowcount", 0) or 0)
                for hook in PURGE_HOOKS:
                    derived += hook(session, chunk)
                session.execute(delete(ConversationRow).where(ConversationRow.id.in_(chunk)))
            for export_id, count in invalidated.items():
                export = session.get(TrainingExportRow, export_id)
                if export is not None:
                    export.invalidated_at = now
                    export.purged += count
                    if export.path:
                        files.append((export_id, export.path))
        for export_id, path in files:
            digest = _drop_from_export_file(Path(path), set(ids))
            if digest is not None:
                with self.db.session() as session:
                    export = session.get(TrainingExportRow, export_id)
                    if export is not None:
                        export.sha256 = digest
        report = PurgeReport(
            conversations=len(ids),
            messages=messages,
            now=now,
            usage_refs=usage_refs,
            export_items=export_items,
            exports_invalidated=sorted(invalidated),
            derived=derived,
        )
        if self.audit is not None and ids:
            self.audit.append(
                "system",
                "conversation.purge",
                "conversations",
                details={
                    "conversations": len(ids),
                    "messages": messages,
                    "usage_refs": usage_refs,
                    "export_items": export_items,
                    "exports_invalidated": report.exports_invalidated,
                    "derived": derived,
                    "now": now.isoformat(),
                    "reason": reason,
                },
            )
        return report


def _drop_from_export_file(path: Path, purged: set[str]) -> str | None:
    """Rewrite a JSONL training export without the purged conversations; the new file's SHA-256.
    A file that is gone or unreadable is left alone (its export stays marked invalidated)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            kept.append(line)
            continue
        if record.get("conversation_id") not in purged:
            kept.append(line)
    data = "".join(line + "\n" for line in kept).encode()
    tmp = path.with_name(path.name + ".purging")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


OwnerResolver = Callable[[str, str | None], str]


class StoringSink:
    """The gateway's `ConversationSink` backed by the store, writing from a background thread: it waits
    `linger_s` after an exchange for more to arrive, then stores them together (one transaction, each
    owner and data key looked up once).

    The owner is the user the key belongs to, or, when the request names an end user (`user`), that end
    user of the key's account. An exchange with `store` false is a temporary chat (never for training,
    purged `temporary_days` after its last message). `flush()` waits until everything queued is stored.
    """

    def __init__(
        self,
        store: ConversationStore,
        accounts: Accounts,
        *,
        usage_flush: Callable[[], None] | None = None,
        background: bool = True,
        max_batch: int = 64,
        linger_s: float = 0.05,
    ) -> None:
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.store = store
        self.accounts = accounts
        self.usage_flush = usage_flush
        self.background = background
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def owner_for(self, key_id: str, user: str | None, *, create: bool = True) -> str | None:
        """The user id that owns a key's conversations (an end user's when `user` is given)."""
        account = self.accounts.user_for_key(key_id)
        if not user:
            return account.id
        digest = self.store.keyring.mac(account.id, "end-user\x00" + user)
        if create:
            return self.accounts.end_user(account.id, digest).id
        found = self.accounts.find_end_user(account.id, digest)
        return found.id if found is not None else None

    def record(self, exchange: Any) -> None:
        """Queue the exchange (or store it now when not in the background)."""
        if not self.background:
            self._store(exchange)
            return
        with self._lock:
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bastion-conversations", daemon=True)
                self._thread.start()
        self._queue.put(exchange)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not None and self.linger_s > 0:
                time.sleep(self.linger_s)  # gather what arrives meanwhile: one transaction for them all
            while len(batch) < self.max_batch and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                exchanges = [e for e in batch if e is not None]
                if exchanges:
                    self._store_many(exchanges)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:
                return

    def _store(self, exchange: Any) -> None:
        """Store the exchange encrypted; failures are logged, never raised into the request."""
        self._store_many([exchange])

    def _store_many(self, exchanges: Sequence[Any]) -> None:
        """Store exchanges encrypted, in one transaction (each in its own if that fails); failures are
        logged, never raised into the request. Owners, data keys and opt-outs are looked up once per batch."""
        owners: dict[tuple[str, str | None], str] = {}
        data_keys: dict[str, bytes] = {}
        ready: list[tuple[Any, str, bytes, list[tuple[str, str]], list[str]]] = []
        for exchange in exchanges:
            try:
                turns = [(m.role, m.content) for m in exchange.messages if m.content]
                answers = [a for a in exchange.answers if a]
                if not turns and not answers:
                    continue
                who = (exchange.key_id, exchange.user)
                if who not in owners:
                    owner = self.owner_for(exchange.key_id, exchange.user)
                    assert owner is not None
                    owners[who] = owner
                owner = owners[who]
                if owner not in data_keys:
                    data_keys[owner] = self.store.keyring.data_key(owner, create=True)
                ready.append((exchange, owner, data_keys[owner], turns, answers))
            except Exception:
                logger.exception("could not store conversation of request %s", exchange.request_id)
        if not ready:
            return
        if self.usage_flush is not None:
            self.usage_flush()  # the usage events were queued first: link them once they are written
        opt_outs: dict[str, bool] = {}

        def opt_out(owner: str) -> Callable[[], bool]:
            def snapshot() -> bool:
                if owner not in opt_outs:
                    opt_outs[owner] = self.accounts.effective_opt_out(owner)
                return opt_outs[owner]

            return snapshot

        def write(session: Session, item: tuple[Any, str, bytes, list[tuple[str, str]], list[str]]) -> None:
            exchange, owner, data_key, turns, answers = item
            conversation_id = self.store.store_exchange(
                session,
                owner,
                data_key,
                exchange.model,
                turns,
                answers,
                key_id=exchange.key_id,
                temporary=not bool(getattr(exchange, "store", True)),
                opt_out=opt_out(owner),
                input_verdict=exchange.input,
                output_verdict=exchange.output,
                request_id=exchange.request_id,
            )
            session.connection().execute(
                _LINK_USAGE, {"request": exchange.request_id, "conversation": conversation_id}
            )

        if len(ready) > 1:
            try:
                with self.store.db.session() as session:
                    for item in ready:
                        write(session, item)
                return
            except Exception:
                logger.warning(
                    "could not store %d conversations together; storing them one by one", len(ready)
                )
        for item in ready:
            try:
                with self.store.db.session() as session:
                    write(session, item)
            except Exception:
                logger.exception("could not store conversation of request %s", item[0].request_id)

    def flush(self) -> None:
        """Wait until every queued exchange is stored."""
        self._queue.join()

    def close(self) -> None:
        """Store what is queued and stop the writer."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)
