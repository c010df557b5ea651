"""Privacy: organisations, users, conversation storage from the gateway, training opt-out, exports.

Existing API keys get a user each, in the default organisation (plan `team`, not opted out).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DEFAULT_ORG_ID = "org_default"


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(32), nullable=False),
        sa.Column("training_opt_out", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("parent_id", sa.String(64), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("external_hash", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("training_opt_out", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("parent_id", "external_hash", name="uq_users_parent_external"),
    )
    op.create_index("ix_users_org_id", "users", ["org_id"])
    op.create_table(
        "training_exports",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("invalidated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged", sa.Integer(), nullable=False),
    )
    op.create_table(
        "training_export_items",
        sa.Column(
            "export_id",
            sa.String(64),
            sa.ForeignKey("training_exports.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.create_index("ix_training_export_items_conversation", "training_export_items", ["conversation_id"])

    op.add_column("api_keys", sa.Column("user_id", sa.String(64), nullable=True))
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.add_column("usage_events", sa.Column("conversation_id", sa.String(64), nullable=True))
    op.create_index("ix_usage_events_conversation_id", "usage_events", ["conversation_id"])
    op.add_column("conversations", sa.Column("head_digest", sa.String(64), nullable=True))
    op.create_index("ix_conversations_head_digest", "conversations", ["owner_id", "head_digest"])
    op.add_column("conversation_messages", sa.Column("request_id", sa.String(64), nullable=True))

    _backfill_users()


def _backfill_users() -> None:
    """Give every existing key a user of its own in the default organisation."""
    bind = op.get_bind()
    keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("name", sa.String))
    key_users = sa.table("api_keys", sa.column("id", sa.String), sa.column("user_id", sa.String))
    rows = bind.execute(sa.select(keys.c.id, keys.c.name)).all()
    if not rows:
        return
    now = datetime.now(UTC)
    orgs = sa.table(
        "organizations",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("plan", sa.String),
        sa.column("training_opt_out", sa.Boolean),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    users = sa.table(
        "users",
        sa.column("id", sa.String),
        sa.column("org_id", sa.String),
        sa.column("name", sa.String),
        sa.column("training_opt_out", sa.Boolean),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    bind.execute(
        orgs.insert().values(
            id=DEFAULT_ORG_ID, name="Default", plan="team", training_opt_out=False, created_at=now
        )
    )
    for key_id, name in rows:
        user_id = "usr_" + secrets.token_hex(10)
        bind.execute(
            users.insert().values(
                id=user_id, org_id=DEFAULT_ORG_ID, name=name, training_opt_out=False, created_at=now
            )
        )
        bind.execute(key_users.update().where(key_users.c.id == key_id).values(user_id=user_id))


def downgrade() -> None:
    op.drop_column("conversation_messages", "request_id")
    op.drop_index("ix_conversations_head_digest", table_name="conversations")
    op.drop_column("conversations", "head_digest")
    op.drop_index("ix_usage_events_conversation_id", table_name="usage_events")
    op.drop_column("usage_events", "conversation_id")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_column("api_keys", "user_id")
    op.drop_index("ix_training_export_items_conversation", table_name="training_export_items")
    op.drop_table("training_export_items")
    op.drop_table("training_exports")
    op.drop_index("ix_users_org_id", table_name="users")
    op.drop_table("users")
    op.drop_table("organizations")
