"""The privacy capability assembled: keys, audit log, accounts, the conversation store and the gateway's
sink, built once from the settings (by `create_app` and the CLI) on an injectable clock.

`Privacy.owner()` answers "whose data is this request about": the user a key belongs to, or the end user
of that key's account named by `user`. Everything the API serves about "me" goes through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from bastion.auth.keys import KeyInfo, KeyStore, Principal
from bastion.core.errors import NotFound
from bastion.core.settings import Settings
from bastion.db.accounts import Accounts
from bastion.db.session import Database
from bastion.db.tables import (
    ApiKey,
    AuditEventRow,
    ConversationRow,
    TrainingExportItemRow,
    UsageEvent,
    User,
    utcnow,
)
from bastion.privacy.audit import AuditLog, load_signing_key
from bastion.privacy.conversations import ConversationStore, PurgeReport, StoringSink, pseudonym
from bastion.privacy.crypto import DataKeyShredded, KeyRing, load_master_key


@dataclass
class Privacy:
    """Every privacy service over one database."""

    settings: Settings
    db: Database
    keyring: KeyRing
    audit: AuditLog
    accounts: Accounts
    store: ConversationStore
    sink: StoringSink
    clock: Callable[[], datetime]

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        *,
        clock: Callable[[], datetime] = utcnow,
        usage_flush: Callable[[], None] | None = None,
        background: bool = True,
    ) -> Privacy:
        """The services for `settings` (keys loaded or, in development, generated under `home`)."""
        privacy = settings.privacy
        keyring = KeyRing(db, load_master_key(privacy, env=settings.env, home=settings.home))
        audit = AuditLog(
            db, keyring, load_signing_key(privacy, env=settings.env, home=settings.home), clock=clock
        )
        accounts = Accounts(db, clock=clock)
        store = ConversationStore(db, keyring, privacy, audit=audit, clock=clock)
        sink = StoringSink(store, accounts, usage_flush=usage_flush, background=background)
        return cls(settings, db, keyring, audit, accounts, store, sink, clock)

    # -- whose data -----------------------------------------------------------------------------------

    def owner(self, principal: Principal, user: str | None = None, *, create: bool = False) -> str | None:
        """The caller's user id (None: an end user Bastion has never seen, and `create` is false)."""
        return self.sink.owner_for(principal.key_id, user, create=create)

    def require_owner(self, principal: Principal, user: str | None = None) -> str:
        """The caller's user id; NotFound for an end user Bastion has never seen."""
        owner = self.owner(principal, user)
        if owner is None:
            raise NotFound("no data is stored about this user", param="user")
        return owner

    # -- training opt-out -----------------------------------------------------------------------------

    def opt_out_state(self, user_id: str) -> dict[str, Any]:
        """The user's own flag, its organisation's, and the one in force."""
        user = self.accounts.user(user_id)
        org = self.accounts.org(user.org_id)
        return {
            "user_id": user.id,
            "opt_out": user.training_opt_out,
            "organization_id": org.id,
            "organization_plan": org.plan,
            "organization_opt_out": org.training_opt_out,
            "effective": self.accounts.effective_opt_out(user.id),
        }

    def set_opt_out(self, user_id: str, value: bool, *, actor: str) -> dict[str, Any]:
        """Set the user's own opt-out flag (an audit event); new conversations snapshot it."""
        before = self.accounts.user(user_id).training_opt_out
        self.accounts.set_user_opt_out(user_id, value)
        self.audit.append(
            actor,
            "privacy.opt_out_change",
            pseudonym("user", user_id),
            details={"from": before, "to": value},
            subject=user_id,
        )
        return self.opt_out_state(user_id)

    def set_org_opt_out(self, org_id: str, value: bool, *, actor: str) -> None:
        """Set an organisation's opt-out flag (an audit event)."""
        org = self.accounts.org(org_id)
        self.accounts.set_org_opt_out(org_id, value)
        self.audit.append(
            actor,
            "privacy.org_opt_out_change",
            org_id,
            details={"from": org.training_opt_out, "to": value},
        )

    # -- export of everything about a user ------------------------------------------------------------

    def export_user(self, user_id: str, *, actor: str) -> dict[str, Any]:
        """Everything stored about the user, as one JSON-ready archive (an audit event)."""
        user = self.accounts.user(user_id)
        conversations = []
        with self.db.session() as session:
            rows = session.scalars(
                select(ConversationRow)
                .where(ConversationRow.owner_id == user_id, ConversationRow.deleted_at.is_(None))
                .order_by(ConversationRow.created_at)
            ).all()
            keys = session.scalars(select(ApiKey).where(ApiKey.user_id == user_id)).all()
            key_ids = [k.id for k in keys]
            conversation_ids = [r.id for r in rows]
            usage = (
                session.scalars(
                    select(UsageEvent)
                    .where(UsageEvent.conversation_id.in_(conversation_ids))
                    .order_by(UsageEvent.created_at)
                ).all()
                if conversation_ids
                else []
            )
            if user.parent_id is None and key_ids:
                usage = list(usage) + list(
                    session.scalars(
                        select(UsageEvent)
                        .where(UsageEvent.key_id.in_(key_ids), UsageEvent.user.is_(None))
                        .order_by(UsageEvent.created_at)
                    ).all()
                )
            manifests = (
                session.scalars(
                    select(TrainingExportItemRow).where(
                        TrainingExportItemRow.conversation_id.in_(conversation_ids)
                    )
                ).all()
                if conversation_ids
                else []
            )
            audit_rows = session.scalars(
                select(AuditEventRow).where(AuditEventRow.subject == user_id).order_by(AuditEventRow.seq)
            ).all()
        for row in rows:
            try:
                messages = [m.as_dict() for m in self.store.messages(row.id, user_id)]
            except DataKeyShredded:
                messages = []
            conversations.append(
                {
                    "id": row.id,
                    "model": row.model,
                    "created_at": row.created_at.isoformat(),
                    "updated_at": row.updated_at.isoformat(),
                    "temporary": row.temporary,
                    "training_opt_out": row.training_opt_out,
                    "messages": messages,
                }
            )
        seen: set[str] = set()
        usage_out = []
        for event in usage:
            if event.id in seen:
                continue
            seen.add(event.id)
            usage_out.append(
                {
                    "id": event.id,
                    "created_at": event.created_at.isoformat(),
                    "key_id": event.key_id,
                    "model": event.model,
                    "status": event.status,
                    "action": event.action,
                    "prompt_tokens": event.prompt_tokens,
                    "completion_tokens": event.completion_tokens,
                    "input_categories": event.input_categories,
                    "output_categories": event.output_categories,
                    "conversation_id": event.conversation_id,
                }
            )
        audit_out = []
        for audit_event in self.audit.events_for(audit_rows):
            audit_out.append(
                {
                    "seq": audit_event.seq,
                    "created_at": audit_event.created_at.isoformat(),
                    "actor": audit_event.actor,
                    "action": audit_event.action,
                    "target": audit_event.target,
                    "details": {k: v for k, v in audit_event.details.items() if k != "personal"},
                    "personal": self.audit.personal(audit_event),
                }
            )
        archive = {
            "object": "bastion.export",
            "format_version": 1,
            "exported_at": self.clock().isoformat(),
            "user": {
                "id": user.id,
                "name": user.name,
                "end_user_of": user.parent_id,
                "created_at": user.created_at.isoformat(),
            },
            "training_opt_out": self.opt_out_state(user_id),
            "api_keys": [_key_dict(KeyInfo.of(k)) for k in keys],
            "conversations": conversations,
            "usage_events": usage_out,
            "training_exports": [
                {"export_id": m.export_id, "conversation_id": m.conversation_id, "sha256": m.sha256}
                for m in manifests
            ],
            "audit_events": audit_out,
        }
        self.audit.append(
            actor,
            "privacy.export",
            pseudonym("user", user_id),
            details={"conversations": len(conversations)},
            subject=user_id,
        )
        return archive

    # -- policy changes -------------------------------------------------------------------------------

    def record_policies(self, *, actor: str = "system") -> bool:
        """Audit a change of the moderation and gateway policies in force (checked when the server
        starts: policies are configuration). True when they differ from the last recorded ones."""
        gateway = self.settings.gateway
        policies = {
            "moderation": self.settings.moderation.model_dump(
                mode="json", include={"policies", "default_model"}
            ),
            "gateway": gateway.model_dump(
                mode="json", include={"policies", "default_policy", "role_policies", "key_policies"}
            ),
        }
        digest = hashlib.sha256(json.dumps(policies, sort_keys=True).encode()).hexdigest()
        with self.db.session() as session:
            last = session.scalars(
                select(AuditEventRow)
                .where(AuditEventRow.action == "policy.change")
                .order_by(AuditEventRow.seq.desc())
                .limit(1)
            ).first()
            previous = last.details.get("sha256") if last is not None else None
        if previous == digest:
            return False
        self.audit.append(
            actor,
            "policy.change",
            "policies",
            details={
                "sha256": digest,
                "previous": previous,
                "gateway_policies": sorted(gateway.policies),
                "moderation_policies": sorted(self.settings.moderation.policies),
            },
        )
        return True

    # -- erasure --------------------------------------------------------------------------------------

    def delete_user(self, user_id: str, *, actor: str) -> dict[str, Any]:
        """Erase a user and its end users now: their conversations everywhere (as the purge does), their
        keys revoked, their data keys destroyed (crypto-shredding: personal fields of their audit events
        become unreadable, the tree stays verifiable), their user rows removed. An audit event."""
        self.accounts.user(user_id)  # NotFound first
        with self.db.session() as session:
            end_users = list(session.scalars(select(User.id).where(User.parent_id == user_id)))
            key_ids = list(session.scalars(select(ApiKey.id).where(ApiKey.user_id == user_id)))
        everyone = [user_id, *end_users]
        report = self.store.remove(
            ConversationRow.owner_id.in_(everyone), self.clock(), reason="user_deleted"
        )
        keys = KeyStore(self.db, self.audit)
        for key_id in key_ids:
            keys.revoke(key_id, actor=actor)
        shredded = sum(self.keyring.shred(uid) for uid in everyone)
        with self.db.session() as session:
            session.execute(update(ApiKey).where(ApiKey.user_id == user_id).values(user_id=None))
            session.execute(delete(User).where(User.parent_id == user_id))
            session.execute(delete(User).where(User.id == user_id))
        summary = {
            "conversations": report.conversations,
            "end_users": len(end_users),
            "keys_revoked": len(key_ids),
            "data_keys_shredded": shredded,
        }
        self.audit.append(actor, "user.delete", pseudonym("user", user_id), details=summary)
        return {"id": user_id, "deleted": True, **summary}

    # -- retention ------------------------------------------------------------------------------------

    def purge(self, now: datetime | None = None) -> PurgeReport:
        """Everything past retention, removed everywhere (see `ConversationStore.purge`)."""
        return self.store.purge(now)

    def flush(self) -> None:
        """Wait until every conversation the gateway handed over is stored."""
        self.sink.flush()

    def close(self) -> None:
        """Finish queued writes."""
        self.sink.close()


def _key_dict(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "role": info.role.value,
        "prefix": info.prefix,
        "created_at": info.created_at.isoformat(),
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }
