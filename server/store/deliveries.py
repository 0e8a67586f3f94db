"""Webhook deliveries (README, Webhooks): the outbox's rows, read, sent and retried.

The dispatcher (`server/service/webhook_dispatch.py`) takes a webhook at a time: it
leases the webhook's row (FOR UPDATE SKIP LOCKED on PostgreSQL, then a compare-and-set
of its lease), so however many processes dispatch, one sends a webhook's deliveries, in
the order they were written, while the others take other webhooks. A lease runs out on
its own, so a dispatcher that dies holds nothing for long. SQLite renders no FOR UPDATE;
it has one writer, and the compare-and-set decides.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, or_, select, update

from server.paging import Cursor
from server.store.database import Statements
from server.store.outbox import FAILED, PENDING, SUCCEEDED
from server.store.pages import newest_first
from server.store.records import Record
from server.store.tables import webhook_deliveries as deliveries
from server.store.tables import webhooks


@dataclass(frozen=True, slots=True)
class DeliveryRecord(Record):
    """One event on its way to one webhook."""

    id: int
    webhook_id: str
    tenant_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    retry_from: datetime
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    body: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Leased:
    """A webhook a dispatcher holds until `until`: where to send, what to sign with."""

    id: str
    url: str
    secret: str
    token: str
    until: datetime


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a delivery came to: its new status (pending again, due at
    `next_attempt_at`; succeeded; failed), and the answer's code or the error."""

    status: str
    status_code: int | None
    error: str | None
    at: datetime
    next_attempt_at: datetime


_COLUMNS = DeliveryRecord.columns(deliveries)
_AT = deliveries.c.next_attempt_at.type
_NOW = bindparam("now", type_=_AT)
_OF_WEBHOOK = deliveries.c.webhook_id == bindparam("webhook_id")


@functools.cache
def _page(after: bool) -> Select[Any]:
    query = select(*_COLUMNS).where(_OF_WEBHOOK)
    return newest_first(query, deliveries.c.created_at, deliveries.c.id, after=after)


_DUE_WEBHOOKS = (
    select(deliveries.c.webhook_id)
    .where(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= _NOW)
    .distinct()
)
_FREE = or_(webhooks.c.lease_until.is_(None), webhooks.c.lease_until < _NOW)
_TO_LEASE = (
    select(webhooks.c.id)
    .where(webhooks.c.enabled.is_(True), _FREE, webhooks.c.id.in_(_DUE_WEBHOOKS))
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_LEASE = (
    update(webhooks)
    .where(webhooks.c.id.in_(_TO_LEASE.scalar_subquery()), _FREE)
    .values(
        lease_until=bindparam("until", type_=webhooks.c.lease_until.type),
        lease_token=bindparam("token"),
    )
    .returning(webhooks.c.id, webhooks.c.url, webhooks.c.secret)
)
_RELEASE = (
    update(webhooks)
    .where(webhooks.c.id == bindparam("webhook_id"), webhooks.c.lease_token == bindparam("token"))
    .values(lease_until=None, lease_token=None)
)
_DUE = (
    select(*_COLUMNS)
    .where(_OF_WEBHOOK, deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= _NOW)
    .order_by(deliveries.c.id)
    .limit(bindparam("limit"))
)
_SET_BODY = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"), deliveries.c.body.is_(None))
    .values(body=bindparam("body"))
)
_RECORD = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"), deliveries.c.status == PENDING)
    .values(
        attempts=deliveries.c.attempts + 1,
        status=bindparam("status"),
        last_status_code=bindparam("status_code", type_=deliveries.c.last_status_code.type),
        last_error=bindparam("error", type_=deliveries.c.last_error.type),
        last_attempt_at=bindparam("at", type_=_AT),
        next_attempt_at=bindparam("next_at", type_=_AT),
    )
)
_RETRY = (
    update(deliveries)
    .where(
        deliveries.c.id == bindparam("delivery_id"),
        # Named apart from the columns: an UPDATE binds new values under their names.
        deliveries.c.webhook_id == bindparam("of_webhook"),
        deliveries.c.tenant_id == bindparam("of_tenant"),
    )
    .values(status=PENDING, next_attempt_at=_NOW, retry_from=_NOW)
    .returning(*_COLUMNS)
)
_EXPIRED = (
    select(deliveries.c.id)
    .where(
        deliveries.c.status.in_([SUCCEEDED, FAILED]),
        deliveries.c.created_at < bindparam("before", type_=_AT),
    )
    .limit(bindparam("limit"))
)
_DELETE_EXPIRED = (
    delete(deliveries)
    .where(deliveries.c.id.in_(_EXPIRED.scalar_subquery()))
    .returning(deliveries.c.id)
)


class Deliveries:
    """The outbox's rows: listed and retried by the API, leased and sent by dispatchers."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def page(
        self, webhook_id: str, *, after: Cursor | None, limit: int
    ) -> list[DeliveryRecord]:
        """Up to `limit` of the webhook's deliveries, newest first, strictly after `after`."""
        params: dict[str, Any] = {"webhook_id": webhook_id, "limit": limit}
        if after is not None:
            params.update(after_at=after.at, after_id=int(after.id))
        rows = await self._run.all(_page(after is not None), params)
        return [DeliveryRecord.of(row) for row in rows]

    async def retry(
        self, tenant_id: str, webhook_id: str, delivery_id: int, *, now: datetime
    ) -> DeliveryRecord | None:
        """Make a delivery pending and due now, with a new retry period; None if none."""
        params = {"of_tenant": tenant_id, "of_webhook": webhook_id, "delivery_id": delivery_id}
        row = await self._run.one(_RETRY, {**params, "now": now})
        return None if row is None else DeliveryRecord.of(row)

    async def lease(
        self, *, now: datetime, until: datetime, token: str, limit: int
    ) -> list[Leased]:
        """Take up to `limit` enabled webhooks with due deliveries that nobody holds."""
        params = {"now": now, "until": until, "token": token, "limit": limit}
        async with self._run.atomic() as run:
            rows = await run.all(_LEASE, params)
        return [Leased(r["id"], r["url"], r["secret"], token, until) for r in rows]

    async def release(self, webhook_id: str, token: str) -> None:
        """Let go of a webhook this dispatcher leased (a lease taken over is left alone)."""
        await self._run.run(_RELEASE, {"webhook_id": webhook_id, "token": token})

    async def due(self, webhook_id: str, *, now: datetime, limit: int) -> list[DeliveryRecord]:
        """The webhook's pending deliveries due by `now`, oldest first."""
        params = {"webhook_id": webhook_id, "now": now, "limit": limit}
        return [DeliveryRecord.of(row) for row in await self._run.all(_DUE, params)]

    async def set_body(self, delivery_id: int, body: str) -> None:
        """Keep the body a delivery was first sent with, so every attempt sends it."""
        await self._run.run(_SET_BODY, {"delivery_id": delivery_id, "body": body})

    async def record(self, delivery_id: int, attempt: Outcome) -> None:
        """Count an attempt of a pending delivery, with what it came to."""
        params = {
            "delivery_id": delivery_id,
            "status": attempt.status,
            "status_code": attempt.status_code,
            "error": attempt.error,
            "at": attempt.at,
            "next_at": attempt.next_attempt_at,
        }
        await self._run.run(_RECORD, params)

    async def delete_finished_before(self, before: datetime, *, limit: int) -> int:
        """Remove up to `limit` sent or failed deliveries made before `before`; how many."""
        return len(await self._run.all(_DELETE_EXPIRED, {"before": before, "limit": limit}))
