"""job lifecycle

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_job_id"), "idempotency_keys", ["job_id"], unique=False
    )
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delay_s", sa.Float(), nullable=True),
        sa.Column("delta", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "sequence", name=op.f("pk_job_events")),
    )
    op.add_column("agents", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_agents_tenant_id_created_at_id",
        "agents",
        ["tenant_id", "created_at", "id"],
        unique=False,
    )
    op.add_column("jobs", sa.Column("parent_job_id", sa.String(length=36), nullable=True))
    # Existing rows get the values a job had before these columns existed.
    op.add_column("jobs", sa.Column("depth", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "jobs",
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("jobs", sa.Column("event_seq", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(op.f("ix_jobs_parent_job_id"), "jobs", ["parent_job_id"], unique=False)
    op.create_index("ix_jobs_status_completed_at", "jobs", ["status", "completed_at"], unique=False)
    op.create_index(
        "ix_jobs_tenant_id_agent_id_queued_at_id",
        "jobs",
        ["tenant_id", "agent_id", "queued_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_jobs_tenant_id_queued_at_id", "jobs", ["tenant_id", "queued_at", "id"], unique=False
    )
    op.create_index(
        "ix_jobs_tenant_id_status_queued_at_id",
        "jobs",
        ["tenant_id", "status", "queued_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_id_status_queued_at_id", table_name="jobs")
    op.drop_index("ix_jobs_tenant_id_queued_at_id", table_name="jobs")
    op.drop_index("ix_jobs_tenant_id_agent_id_queued_at_id", table_name="jobs")
    op.drop_index("ix_jobs_status_completed_at", table_name="jobs")
    op.drop_index(op.f("ix_jobs_parent_job_id"), table_name="jobs")
    op.drop_column("jobs", "event_seq")
    op.drop_column("jobs", "cancel_requested")
    op.drop_column("jobs", "depth")
    op.drop_column("jobs", "parent_job_id")
    op.drop_index("ix_agents_tenant_id_created_at_id", table_name="agents")
    op.drop_column("agents", "deleted_at")
    op.drop_table("job_events")
    op.drop_index(op.f("ix_idempotency_keys_job_id"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
