"""Red team: findings from people, their triage history and comments.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redteam_findings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("reporter", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("reproduction", sa.Text(), nullable=False),
        sa.Column("conversation", sa.JSON(), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_redteam_findings_status", "redteam_findings", ["status", "updated_at"])
    op.create_index("ix_redteam_findings_owner", "redteam_findings", ["owner", "created_at"])
    op.create_table(
        "redteam_finding_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "finding_id",
            sa.String(32),
            sa.ForeignKey("redteam_findings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("audit_seq", sa.Integer(), nullable=True),
    )
    op.create_index("ix_redteam_finding_events_finding", "redteam_finding_events", ["finding_id", "id"])
    op.create_table(
        "redteam_finding_comments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "finding_id",
            sa.String(32),
            sa.ForeignKey("redteam_findings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_redteam_finding_comments_finding", "redteam_finding_comments", ["finding_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_redteam_finding_comments_finding", table_name="redteam_finding_comments")
    op.drop_table("redteam_finding_comments")
    op.drop_index("ix_redteam_finding_events_finding", table_name="redteam_finding_events")
    op.drop_table("redteam_finding_events")
    op.drop_index("ix_redteam_findings_owner", table_name="redteam_findings")
    op.drop_index("ix_redteam_findings_status", table_name="redteam_findings")
    op.drop_table("redteam_findings")
