"""Training exports: the only way conversation data leaves for training (feedback, reward models, DPO).

`export_training()` is the library call; `bastion privacy export-training` wraps it. An export never
includes a conversation that is opted out (the flag snapshotted when it started, or the owner's opt-out in
force now), temporary, deleted or purged, nor one whose owner's key was shredded. Every export records its
manifest in the database (each conversation id and the SHA-256 of what was exported), so that a later purge
removes the conversation from the manifest, marks the export invalidated and drops its lines from the export
file if it is still on disk.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bastion.core.errors import ConfigError
from bastion.db.accounts import Accounts
from bastion.db.tables import ConversationRow, TrainingExportItemRow, TrainingExportRow
from bastion.privacy.conversations import ConversationStore
from bastion.privacy.crypto import DataKeyShredded


@dataclass(frozen=True)
class TrainingRecord:
    """One exported conversation."""

    conversation_id: str
    model: str
    messages: list[dict[str, str]]
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        """The JSONL row."""
        return {
            "conversation_id": self.conversation_id,
            "model": self.model,
            "messages": self.messages,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class TrainingExport:
    """An export and its records; `id` names its manifest in the database."""

    id: str
    created_at: datetime
    records: list[TrainingRecord] = field(default_factory=list)
    path: str | None = None
    sha256: str | None = None


def record_hash(conversation_id: str, model: str, messages: list[dict[str, str]]) -> str:
    """SHA-256 of the canonical JSON of an exported conversation."""
    canonical = json.dumps(
        {"conversation_id": conversation_id, "model": model, "messages": messages},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def eligible_conversations(store: ConversationStore, accounts: Accounts) -> list[ConversationRow]:
    """Conversations that may be used for training right now."""
    with store.db.session() as session:
        rows = session.scalars(
            select(ConversationRow)
            .where(
                ConversationRow.deleted_at.is_(None),
                ConversationRow.temporary.is_(False),
                ConversationRow.training_opt_out.is_(False),
            )
            .order_by(ConversationRow.created_at, ConversationRow.id)
        ).all()
    opted: dict[str, bool] = {}
    keep = []
    for row in rows:
        if row.owner_id not in opted:
            opted[row.owner_id] = accounts.effective_opt_out(row.owner_id)
        if not opted[row.owner_id]:
            keep.append(row)
    return keep


def export_training(
    store: ConversationStore,
    accounts: Accounts,
    *,
    actor: str,
    path: Path | None = None,
    limit: int | None = None,
) -> TrainingExport:
    """Export the conversations that may be used for training, record the manifest, audit it.

    With `path`, the records are also written there as JSONL (the file a purge will edit)."""
    records: list[TrainingRecord] = []
    for row in eligible_conversations(store, accounts):
        if limit is not None and len(records) >= limit:
            break
        try:
            stored = store.messages(row.id, row.owner_id)
        except DataKeyShredded:
            continue
        messages = [{"role": m.role, "content": m.content} for m in stored]
        if not messages:
            continue
        records.append(TrainingRecord(row.id, row.model, messages, record_hash(row.id, row.model, messages)))
    export_id = "texp_" + secrets.token_hex(10)
    now = store.clock()
    file_hash = None
    if path is not None:
        data = "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in records).encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise ConfigError(f"cannot write the training export to {path}: {exc.strerror}") from exc
        file_hash = hashlib.sha256(data).hexdigest()
    with store.db.session() as session:
        session.add(
            TrainingExportRow(
                id=export_id,
                created_at=now,
                actor=actor[:256],
                path=str(path.resolve()) if path is not None else None,
                conversations=len(records),
                sha256=file_hash,
                purged=0,
            )
        )
        session.flush()
        session.add_all(
            TrainingExportItemRow(export_id=export_id, conversation_id=r.conversation_id, sha256=r.sha256)
            for r in records
        )
    if store.audit is not None:
        store.audit.append(
            actor,
            "training.export",
            export_id,
            details={"conversations": len(records), "sha256": file_hash},
        )
    return TrainingExport(
        export_id, now, records, str(path.resolve()) if path is not None else None, file_hash
    )
