"""tenant-wide event log: client events

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_client_events")),
        sa.UniqueConstraint("id", name=op.f("uq_client_events_id")),
    )
    op.create_index(
        "ix_client_events_tenant_id_created_at_id",
        "client_events",
        ["tenant_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_client_events_tenant_id_type_created_at_id",
        "client_events",
        ["tenant_id", "type", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_client_events_created_at", "client_events", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_client_events_created_at", table_name="client_events")
    op.drop_index("ix_client_events_tenant_id_type_created_at_id", table_name="client_events")
    op.drop_index("ix_client_events_tenant_id_created_at_id", table_name="client_events")
    op.drop_table("client_events")
