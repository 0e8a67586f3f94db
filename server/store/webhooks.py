"""Webhooks (README, Webhooks): a tenant's endpoints and the event types each receives.

A webhook's types are kept twice: as given, on its row, for reading it back; and one row
each in `webhook_subscriptions`, which the outbox (`server/store/outbox.py`) matches an
event's (tenant, type) against. Both change together, in one transaction.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, insert, select, update

from server.paging import Cursor
from server.store.database import Statements
from server.store.pages import newest_first
from server.store.records import Record
from server.store.tables import webhook_deliveries, webhook_subscriptions, webhooks


@dataclass(frozen=True, slots=True)
class WebhookRecord(Record):
    """A stored webhook, its secret included (the service never shows it but once)."""

    id: str
    tenant_id: str
    url: str
    # JSON list of the event types as given.
    event_types: str
    enabled: bool
    secret: str
    created_at: datetime
    updated_at: datetime

    @property
    def types(self) -> list[str]:
        """The event types as given."""
        types: list[str] = json.loads(self.event_types)
        return types


_COLUMNS = WebhookRecord.columns(webhooks)
# Named apart from the columns: an UPDATE binds its new values under the columns' names.
_OF_TENANT = (webhooks.c.id == bindparam("of_id"), webhooks.c.tenant_id == bindparam("of_tenant"))
_GET = select(*_COLUMNS).where(*_OF_TENANT)
_ADD = insert(webhooks)
_SUBSCRIBE = insert(webhook_subscriptions)
_UNSUBSCRIBE = delete(webhook_subscriptions).where(
    webhook_subscriptions.c.webhook_id == bindparam("id")
)
_DELETE_DELIVERIES = delete(webhook_deliveries).where(
    webhook_deliveries.c.webhook_id == bindparam("id")
)
_DELETE = delete(webhooks).where(*_OF_TENANT).returning(webhooks.c.id)


@functools.cache
def _page(after: bool) -> Select[Any]:
    of_tenant = select(*_COLUMNS).where(webhooks.c.tenant_id == bindparam("tenant_id"))
    return newest_first(of_tenant, webhooks.c.created_at, webhooks.c.id, after=after)


@functools.cache
def _change(names: tuple[str, ...]) -> Any:
    values = {name: bindparam(f"new_{name}", type_=webhooks.c[name].type) for name in names}
    return update(webhooks).where(*_OF_TENANT).values(values).returning(*_COLUMNS)


class Webhooks:
    """A tenant's webhooks: each looked up within its tenant, another's is not there."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def add(self, webhook: WebhookRecord) -> None:
        """Store a webhook and its subscriptions together."""
        async with self._run.atomic() as run:
            await run.run(_ADD, webhook.values())
            await self._subscribe(run, webhook.id, webhook.tenant_id, webhook.types)

    async def get(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        """The tenant's webhook, or None."""
        row = await self._run.one(_GET, {"of_id": webhook_id, "of_tenant": tenant_id})
        return None if row is None else WebhookRecord.of(row)

    async def page(
        self, tenant_id: str, *, after: Cursor | None, limit: int
    ) -> list[WebhookRecord]:
        """Up to `limit` of the tenant's webhooks, newest first, strictly after `after`."""
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        return [WebhookRecord.of(r) for r in await self._run.all(_page(after is not None), params)]

    async def change(
        self, tenant_id: str, webhook_id: str, values: dict[str, Any]
    ) -> WebhookRecord | None:
        """Set these columns of the tenant's webhook (new subscriptions with its types).

        None when the tenant has no such webhook; then nothing changed.
        """
        statement = _change(tuple(sorted(values)))
        params = {"of_id": webhook_id, "of_tenant": tenant_id}
        params.update({f"new_{name}": value for name, value in values.items()})
        async with self._run.atomic() as run:
            row = await run.one(statement, params)
            if row is None:
                return None
            webhook = WebhookRecord.of(row)
            if "event_types" in values:
                await run.run(_UNSUBSCRIBE, {"id": webhook_id})
                await self._subscribe(run, webhook_id, tenant_id, webhook.types)
        return webhook

    async def delete(self, tenant_id: str, webhook_id: str) -> bool:
        """Remove the tenant's webhook with its subscriptions and deliveries; False if none."""
        async with self._run.atomic() as run:
            if await run.one(_DELETE, {"of_id": webhook_id, "of_tenant": tenant_id}) is None:
                return False
            await run.run(_UNSUBSCRIBE, {"id": webhook_id})
            await run.run(_DELETE_DELIVERIES, {"id": webhook_id})
        return True

    async def _subscribe(
        self, run: Statements, webhook_id: str, tenant_id: str, types: Sequence[str]
    ) -> None:
        for event_type in dict.fromkeys(types):  # a type given twice is one subscription
            row = {"webhook_id": webhook_id, "tenant_id": tenant_id, "event_type": event_type}
            await run.run(_SUBSCRIBE, row)
