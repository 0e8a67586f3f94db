"""conversation contexts

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "context_turns",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("context_id", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_context_turns")),
    )
    op.create_index(
        "ix_context_turns_tenant_id_context_id_created_at_job_id",
        "context_turns",
        ["tenant_id", "context_id", "created_at", "job_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_context_turns_tenant_id_context_id_created_at_job_id", table_name="context_turns"
    )
    op.drop_table("context_turns")
