"""Webhooks of the caller's tenant (README, Webhooks): create, read, change, delete, rotate
their secrets, and list and retry their deliveries. The rules and messages are here.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from collections.abc import Sequence

from server.auth.principal import Principal
from server.clock import Clock, utc_now
from server.errors import FieldViolation, InvalidArgument, NotFound
from server.paging import Cursor, Page, PageTokens, page_size
from server.service.webhook_targets import Resolver, check_target, system_resolver
from server.store.deliveries import DeliveryRecord
from server.store.outbox import EVERY_TYPE
from server.store.store import Store
from server.store.webhooks import WebhookRecord
from server.validation import parse_id

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_TYPES = 50
MAX_TYPE_CHARS = 100
_TYPE = re.compile(f"[a-z0-9._-]{{1,{MAX_TYPE_CHARS}}}")
TYPES_COUNT_MESSAGE = f"Invalid event_types: must be 1 to {MAX_TYPES} event types"
TYPE_MESSAGE = (
    f"Invalid event_types: each must be '{EVERY_TYPE}' or 1 to {MAX_TYPE_CHARS} "
    "characters of a-z0-9._-"
)
DELIVERY_ID_MESSAGE = "Invalid delivery_id: must be a positive number"


def new_secret() -> str:
    """A signing secret as Standard Webhooks libraries take it: `whsec_` and base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _type_violations(types: Sequence[str]) -> list[FieldViolation]:
    if not 1 <= len(types) <= MAX_TYPES:
        return [FieldViolation("event_types", TYPES_COUNT_MESSAGE)]
    if any(t != EVERY_TYPE and not _TYPE.fullmatch(t) for t in types):
        return [FieldViolation("event_types", TYPE_MESSAGE)]
    return []


class WebhookService:
    """The tenant's webhooks; another tenant's are not found, like ones that never were."""

    def __init__(
        self,
        store: Store,
        *,
        allow_private: bool,
        page_tokens: PageTokens | None = None,
        clock: Clock = utc_now,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._store = store
        self._allow_private = allow_private
        self._tokens = page_tokens or PageTokens()
        self._clock = clock
        self._resolver = resolver

    async def _checked(self, url: str | None, types: Sequence[str] | None) -> None:
        """Every rule of the fields given; all broken ones are reported at once."""
        violations = [] if types is None else _type_violations(types)
        if url is not None:
            try:
                await check_target(url, allow_private=self._allow_private, resolver=self._resolver)
            except InvalidArgument as error:
                violations = error.violations + violations
        if violations:
            raise InvalidArgument(violations)

    async def create(
        self, principal: Principal, *, url: str, event_types: Sequence[str], enabled: bool
    ) -> tuple[WebhookRecord, str]:
        """A webhook of the caller's tenant, and its secret (shown this once)."""
        await self._checked(url, event_types)
        now = self._clock()
        webhook = WebhookRecord(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            url=url,
            event_types=json.dumps(list(event_types)),
            enabled=enabled,
            secret=new_secret(),
            created_at=now,
            updated_at=now,
        )
        await self._store.webhooks.add(webhook)
        return webhook, webhook.secret

    async def get(self, principal: Principal, webhook_id: str) -> WebhookRecord:
        """The tenant's webhook; NOT_FOUND for another tenant's and unknown ones."""
        webhook_id = parse_id(webhook_id, "webhook_id")
        webhook = await self._store.webhooks.get(principal.tenant_id, webhook_id)
        if webhook is None:
            raise _not_found(webhook_id)
        return webhook

    async def list(
        self, principal: Principal, *, size: int | None, token: str
    ) -> Page[WebhookRecord]:
        """A page of the tenant's webhooks, newest first."""
        tenant = principal.tenant_id

        async def fetch(after: Cursor | None, limit: int) -> list[WebhookRecord]:
            return await self._store.webhooks.page(tenant, after=after, limit=limit)

        return await self._tokens.fetch_page(
            size=size,
            token=token,
            scope=f"webhooks:{tenant}",
            fetch=fetch,
            cursor=lambda w: Cursor(w.created_at, w.id),
        )

    async def update(
        self,
        principal: Principal,
        webhook_id: str,
        *,
        url: str | None,
        event_types: Sequence[str] | None,
        enabled: bool | None,
    ) -> WebhookRecord:
        """Change the fields given; the others stay."""
        webhook_id = parse_id(webhook_id, "webhook_id")
        await self._checked(url, event_types)
        values: dict[str, object] = {"updated_at": self._clock()}
        if url is not None:
            values["url"] = url
        if event_types is not None:
            values["event_types"] = json.dumps(list(event_types))
        if enabled is not None:
            values["enabled"] = enabled
        return await self._change(principal, webhook_id, values)

    async def rotate_secret(
        self, principal: Principal, webhook_id: str
    ) -> tuple[WebhookRecord, str]:
        """A new secret for the webhook, shown this once; the old one signs no more."""
        webhook_id = parse_id(webhook_id, "webhook_id")
        secret = new_secret()
        values = {"secret": secret, "updated_at": self._clock()}
        return await self._change(principal, webhook_id, values), secret

    async def delete(self, principal: Principal, webhook_id: str) -> None:
        """Remove the tenant's webhook and its deliveries."""
        webhook_id = parse_id(webhook_id, "webhook_id")
        if not await self._store.webhooks.delete(principal.tenant_id, webhook_id):
            raise _not_found(webhook_id)

    async def deliveries(
        self, principal: Principal, webhook_id: str, *, size: int | None, token: str
    ) -> Page[DeliveryRecord]:
        """A page of the webhook's deliveries, newest first."""
        webhook = await self.get(principal, webhook_id)
        limit = page_size(size)
        scope = f"webhook-deliveries:{webhook.id}"
        # A delivery's id is a number, not a UUID.
        after = self._tokens.decode(token, scope=scope, valid_id=str.isdigit)
        rows = await self._store.deliveries.page(webhook.id, after=after, limit=limit + 1)
        return self._tokens.page_of(
            rows, limit=limit, scope=scope, cursor=lambda d: Cursor(d.created_at, str(d.id))
        )

    async def retry(
        self, principal: Principal, webhook_id: str, delivery_id: int
    ) -> DeliveryRecord:
        """Make a delivery pending and due now, with a new retry period."""
        webhook = await self.get(principal, webhook_id)
        if delivery_id <= 0:
            raise InvalidArgument.field("delivery_id", DELIVERY_ID_MESSAGE)
        delivery = await self._store.deliveries.retry(
            principal.tenant_id, webhook.id, delivery_id, now=self._clock()
        )
        if delivery is None:
            raise NotFound(f"Delivery {delivery_id} not found")
        return delivery

    async def _change(
        self, principal: Principal, webhook_id: str, values: dict[str, object]
    ) -> WebhookRecord:
        webhook = await self._store.webhooks.change(principal.tenant_id, webhook_id, values)
        if webhook is None:
            raise _not_found(webhook_id)
        return webhook


def _not_found(webhook_id: str) -> NotFound:
    return NotFound(f"Webhook {webhook_id} not found")
