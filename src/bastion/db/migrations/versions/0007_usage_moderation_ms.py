"""Usage events: the milliseconds a request spent in moderation (input and output together).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_events", sa.Column("moderation_ms", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_events", "moderation_ms")
