"""SQLAlchemy tables. API schemas live apart, in each capability's `schemas.py`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every database (SQLite drops the offset; this restores it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use bastion.db.tables.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base for every Bastion table."""


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the key itself is shown once, when created."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The user the key belongs to (migration 0004); a key created without one gets its own user.
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_api_keys_role", "role"), Index("ix_api_keys_user_id", "user_id"))


class UsageEvent(Base):
    """One gateway request: who, which model, how long, how many tokens, what moderation decided.

    No message content is stored here (conversations belong to the privacy capability).
    """

    __tablename__ = "usage_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    key_id: Mapped[str] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(64))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    upstream_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Input and output moderation together (null on rows written before it was recorded).
    moderation_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    input_categories: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    output_categories: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    input_scores: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    output_scores: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # The stored conversation this request belongs to (set by the privacy sink; cleared by the purge).
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_usage_events_created_at", "created_at"),
        Index("ix_usage_events_key_id", "key_id", "created_at"),
        Index("ix_usage_events_conversation_id", "conversation_id"),
    )


class DataKey(Base):
    """A user's data key (AES-256), wrapped by the master key; deleting the row crypto-shreds the user."""

    __tablename__ = "data_keys"

    user_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ConversationRow(Base):
    """A stored conversation: metadata only; its messages are encrypted with the owner's data key."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(256))
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    training_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    temporary: Mapped[bool] = mapped_column(Boolean, default=False)
    # HMAC (owner's key) of the messages so far: the next request of the same chat continues it.
    head_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_conversations_owner_id", "owner_id", "updated_at"),
        Index("ix_conversations_deleted_at", "deleted_at"),
        Index("ix_conversations_head_digest", "owner_id", "head_digest"),
    )


class ConversationMessageRow(Base):
    """One message of a conversation: AES-GCM ciphertext bound to the message id; never plaintext."""

    __tablename__ = "conversation_messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the usage event's id

    __table_args__ = (Index("ix_conversation_messages_conversation", "conversation_id", "position"),)


class AuditEventRow(Base):
    """One audit event, a leaf of the audit Merkle tree; personal details are encrypted."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    subject: Mapped[str | None] = mapped_column(String(256), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    leaf_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_events_action", "action", "created_at"),)


class AuditCheckpointRow(Base):
    """A signed tree head (Ed25519) over the first `tree_size` audit events."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    signature: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(String(64))


class Organization(Base):
    """An organisation: users belong to one. Enterprise organisations are opted out of training by default."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(32))
    training_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class User(Base):
    """A user: holds API keys (an account) or is an end user of a client key (`parent_id` set, known to
    Bastion only by an HMAC of the request's `user` field)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), ForeignKey("organizations.id"))
    parent_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("users.id"), nullable=True)
    external_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    training_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_users_org_id", "org_id"),
        UniqueConstraint("parent_id", "external_hash", name="uq_users_parent_external"),
    )


class TrainingExportRow(Base):
    """One training export: who made it, where it went, and whether a purge has invalidated part of it."""

    __tablename__ = "training_exports"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(256))
    path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    conversations: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    invalidated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    purged: Mapped[int] = mapped_column(Integer, default=0)


class TrainingExportItemRow(Base):
    """The manifest of an export: each conversation it included and the hash of what was exported."""

    __tablename__ = "training_export_items"

    export_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("training_exports.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_training_export_items_conversation", "conversation_id"),)


# --- red team: campaigns (migration 0005) ---


class RedteamRunRow(Base):
    """One red-team campaign run: its exact spec (for replay), progress and summary."""

    __tablename__ = "redteam_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="running")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    planned: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="cli")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_redteam_runs_created", "created_at"),)


class RedteamAttemptRow(Base):
    """One attempt of a run: the conversation sent, the answer and every scorer's score and rationale.

    `key` is the attempt's place in the run's deterministic plan; (run_id, key) is unique, so a resumed
    run neither loses nor repeats an attempt.
    """

    __tablename__ = "redteam_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("redteam_runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    probe: Mapped[str] = mapped_column(String(64))
    converter: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64))
    intent: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    conversation: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    rationales: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ux_redteam_attempts_run_key", "run_id", "key", unique=True),
        Index("ix_redteam_attempts_run_verdict", "run_id", "verdict"),
    )


# --- red team: findings (migration 0006) ---


class FindingRow(Base):
    """A red-team finding: a harmful behaviour someone found, and where it stands on the way to a fix."""

    __tablename__ = "redteam_findings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reporter: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="human")
    category: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="new")
    summary: Mapped[str] = mapped_column(String(500))
    target: Mapped[str] = mapped_column(String(200), default="")
    reproduction: Mapped[str] = mapped_column(Text, default="")
    conversation: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_redteam_findings_status", "status", "updated_at"),
        Index("ix_redteam_findings_owner", "owner", "created_at"),
    )


class FindingEventRow(Base):
    """One step of a finding's history: submission, a triage decision or a regression verdict."""

    __tablename__ = "redteam_finding_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    finding_id: Mapped[str] = mapped_column(String(32), ForeignKey("redteam_findings.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_redteam_finding_events_finding", "finding_id", "id"),)


class FindingCommentRow(Base):
    """A comment on a finding, by its reporter or a reviewer."""

    __tablename__ = "redteam_finding_comments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    finding_id: Mapped[str] = mapped_column(String(32), ForeignKey("redteam_findings.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    author: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_redteam_finding_comments_finding", "finding_id", "created_at"),)
