"""workflows: workflows, their versions, runs and the steps of runs

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("trigger_event_type", sa.String(length=100), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        _at("deleted_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index(
        "ix_workflows_tenant_id_created_at_id", "workflows", ["tenant_id", "created_at", "id"]
    )
    op.create_index(
        "ix_workflows_tenant_id_trigger_event_type",
        "workflows",
        ["tenant_id", "trigger_event_type"],
    )
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("workflow_id", "version", name=op.f("pk_workflow_versions")),
    )
    op.create_table(
        "workflow_runs",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=True),
        _at("created_at"),
        _at("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_workflow_runs")),
    )
    op.create_index(
        "ix_workflow_runs_workflow_id_created_at_run_id",
        "workflow_runs",
        ["workflow_id", "created_at", "run_id"],
    )
    op.create_index("ix_workflow_runs_finished_at", "workflow_runs", ["finished_at"])
    op.create_table(
        "workflow_run_steps",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_name", sa.String(length=50), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _at("created_at"),
        sa.PrimaryKeyConstraint("run_id", "step_name", name=op.f("pk_workflow_run_steps")),
    )


def downgrade() -> None:
    op.drop_table("workflow_run_steps")
    op.drop_index("ix_workflow_runs_finished_at", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_workflow_id_created_at_run_id", table_name="workflow_runs")
    op.drop_table("workflow_runs")
    op.drop_table("workflow_versions")
    op.drop_index("ix_workflows_tenant_id_trigger_event_type", table_name="workflows")
    op.drop_index("ix_workflows_tenant_id_created_at_id", table_name="workflows")
    op.drop_table("workflows")
