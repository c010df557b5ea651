"""Red team: campaigns, attempts and their scores.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redteam_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_redteam_runs_created", "redteam_runs", ["created_at"])
    op.create_table(
        "redteam_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(32), sa.ForeignKey("redteam_runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("probe", sa.String(64), nullable=False),
        sa.Column("converter", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("intent", sa.String(16), nullable=False),
        sa.Column("item_id", sa.String(200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("conversation", sa.JSON(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("rationales", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ux_redteam_attempts_run_key", "redteam_attempts", ["run_id", "key"], unique=True)
    op.create_index("ix_redteam_attempts_run_verdict", "redteam_attempts", ["run_id", "verdict"])


def downgrade() -> None:
    op.drop_index("ix_redteam_attempts_run_verdict", table_name="redteam_attempts")
    op.drop_index("ux_redteam_attempts_run_key", table_name="redteam_attempts")
    op.drop_table("redteam_attempts")
    op.drop_index("ix_redteam_runs_created", table_name="redteam_runs")
    op.drop_table("redteam_runs")
