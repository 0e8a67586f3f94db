"""The webhooks' outbox: an event's deliveries, written in the transaction that stores it.

One INSERT ... SELECT writes a pending delivery for each enabled webhook of the event's
tenant that subscribes to its type or to `*` (README, Webhooks). It runs beside the
event's own insert: inside the same statement where PostgreSQL can (a job transition's
data-modifying CTE), else in the same transaction. A tenant without webhooks costs one
probe of `ix_webhook_subscriptions_tenant_id_event_type` that finds nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, FromClause, insert, literal, or_, select
from sqlalchemy.sql.dml import Insert

from server.store.tables import webhook_deliveries, webhook_subscriptions, webhooks

EVERY_TYPE = "*"
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"

_COLUMNS = [
    "webhook_id",
    "tenant_id",
    "event_id",
    "event_type",
    "status",
    "attempts",
    "next_attempt_at",
    "retry_from",
    "created_at",
]


def deliveries(
    tenant_id: ColumnElement[str],
    event_id: ColumnElement[str],
    event_type: ColumnElement[str],
    at: ColumnElement[Any],
    *sources: FromClause,
) -> Insert:
    """INSERT the deliveries of one event, due at once, read from `sources` when given."""
    subscribed = webhook_subscriptions.join(
        webhooks, webhooks.c.id == webhook_subscriptions.c.webhook_id
    )
    rows = (
        select(
            webhook_subscriptions.c.webhook_id,
            webhook_subscriptions.c.tenant_id,
            event_id,
            event_type,
            literal(PENDING, webhook_deliveries.c.status.type),
            literal(0),
            at,
            at,
            at,
        )
        .select_from(*sources, subscribed)
        .where(
            webhook_subscriptions.c.tenant_id == tenant_id,
            or_(
                webhook_subscriptions.c.event_type == event_type,
                webhook_subscriptions.c.event_type == EVERY_TYPE,
            ),
            webhooks.c.enabled.is_(True),
        )
    )
    return insert(webhook_deliveries).from_select(_COLUMNS, rows)
