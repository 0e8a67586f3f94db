"""verification steps

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns a step event fills (server/store/events.py); NULL on every other event.
_STEP_COLUMNS = (
    ("step_kind", sa.String(length=16)),
    ("step_round", sa.Integer()),
    ("step_tokens", sa.Integer()),
    ("step_hash", sa.String(length=64)),
    ("step_text", sa.Text()),
    ("step_confidence", sa.Float()),
    ("step_evidence", sa.Text()),
)


def upgrade() -> None:
    op.add_column("agents", sa.Column("verification", sa.Text(), nullable=True))
    # Jobs finished before verification ran no debate rounds.
    op.add_column(
        "jobs", sa.Column("debate_rounds", sa.Integer(), nullable=False, server_default="0")
    )
    for name, kind in _STEP_COLUMNS:
        op.add_column("job_events", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(_STEP_COLUMNS):
        op.drop_column("job_events", name)
    op.drop_column("jobs", "debate_rounds")
    op.drop_column("agents", "verification")
