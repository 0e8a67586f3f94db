"""The webhook dispatcher (README, Webhooks): sends the outbox's deliveries, signed.

It runs where workers run, any number of them at once. Each sweep leases the webhooks
that have due deliveries and nobody sends to (`server/store/deliveries.py`), at most
`concurrency` at a time across the process, and sends each one's due deliveries on a
task of its own, oldest first, one at a time: a slow or dead receiver holds up only its
own webhook, and the sweep goes on without waiting for it. Each POST is signed as the
Standard Webhooks specification says, with the `standardwebhooks` package, and sent to
the address its host resolved to and was checked at (`webhook_targets.py`), without
following redirects. A 2xx is success; anything else, or no answer within the timeout,
is retried after a random delay up to `backoff x 2^(attempts - 1)` (full jitter), until
the retry period is over: then the delivery has failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
from standardwebhooks import Webhook

from server.clock import Clock, utc_now
from server.service.webhook_targets import (
    RefusedTarget,
    Resolver,
    parse_url,
    resolve,
    system_resolver,
)
from server.store.deliveries import DeliveryRecord, Leased, Outcome
from server.store.outbox import FAILED, PENDING, SUCCEEDED
from server.store.records import JobRecord
from server.store.store import Store

log = logging.getLogger(__name__)

# Deliveries of one webhook read at a time; the lease covers sending them all.
BATCH = 10
# A lease lasts this many timeouts (and a little), so a batch never outlives it.
_LEASE_MARGIN_S = 5.0
_JOB_EVENT_ID = re.compile(r"job_([0-9a-f-]{36})_[0-9]{10}")
# What a receiver's answer may say of itself in `last_error`.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class DispatchSettings:
    """The knobs of the settings (README, Webhooks)."""

    timeout_s: float
    retry_s: float
    backoff_s: float
    backoff_max_s: float
    allow_private: bool
    concurrency: int


# A generator of its own: the module's shared one is other code's (and tests' seeds).
_JITTER = random.SystemRandom()


def backoff_delay(attempts: int, *, base_s: float, max_s: float) -> float:
    """Full jitter: a random delay up to base x 2^(attempts - 1), capped."""
    ceiling = min(max_s, base_s * 2 ** min(attempts - 1, 30))
    return _JITTER.uniform(0, ceiling)


def event_body(delivery: DeliveryRecord, data: Any) -> str:
    """The body of a delivery: Standard Webhooks' `type`, `timestamp` and `data`."""
    stamp = delivery.created_at.isoformat().replace("+00:00", "Z")
    body = {"type": delivery.event_type, "timestamp": stamp, "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


class WebhookDispatcher:
    """Leases webhooks with due deliveries and sends them, a task for each webhook."""

    def __init__(
        self,
        store: Store,
        render_job: Callable[[JobRecord], dict[str, Any]],
        settings: DispatchSettings,
        *,
        clock: Clock = utc_now,
        resolver: Resolver = system_resolver,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._store = store
        self._render_job = render_job
        self._settings = settings
        self._clock = clock
        self._resolver = resolver
        # No redirects: a receiver may not send the event on to an address of its choice.
        self._client = client or httpx.AsyncClient(
            follow_redirects=False, timeout=settings.timeout_s, trust_env=False
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._lease_s = settings.timeout_s * BATCH + _LEASE_MARGIN_S

    async def stop(self) -> None:
        """Stop sending (leases held run out on their own); close the HTTP connections."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def close(self) -> None:
        """Stop sending, and close the database connections too."""
        await self.stop()
        await self._store.db.close()

    async def sweep(self) -> int:
        """Lease webhooks with due deliveries, up to the free slots; how many were taken."""
        free = self._settings.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        now = self._clock()
        leased = await self._store.deliveries.lease(
            now=now,
            until=now + timedelta(seconds=self._lease_s),
            token=str(uuid.uuid4()),
            limit=free,
        )
        for webhook in leased:
            task = asyncio.create_task(self._send_all(webhook))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(leased)

    async def idle(self) -> None:
        """Wait for the webhooks being sent to (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _send_all(self, webhook: Leased) -> None:
        """Send the webhook's due deliveries in order, until one fails or time runs short."""
        try:
            due = await self._store.deliveries.due(webhook.id, now=self._clock(), limit=BATCH)
            for delivery in due:
                left = (webhook.until - self._clock()).total_seconds()
                if left < self._settings.timeout_s + _LEASE_MARGIN_S / 2:
                    break
                # Read again before each attempt: a webhook deleted or disabled meanwhile
                # is sent nothing more, and a new secret or URL holds from the next one.
                current = await self._store.webhooks.get(delivery.tenant_id, webhook.id)
                if current is None or not current.enabled:
                    break
                webhook = replace(webhook, url=current.url, secret=current.secret)
                outcome = await self._attempt(webhook, delivery)
                await self._store.deliveries.record(delivery.id, outcome)
                if outcome.status != SUCCEEDED:
                    # The receiver is likely down: its other deliveries wait their turn.
                    break
        except Exception:
            log.exception("sending the deliveries of webhook %s failed", webhook.id)
        finally:
            try:
                await self._store.deliveries.release(webhook.id, webhook.token)
            except Exception:  # the lease runs out on its own
                log.warning("could not release webhook %s", webhook.id, exc_info=True)

    async def _attempt(self, webhook: Leased, delivery: DeliveryRecord) -> Outcome:
        status_code: int | None = None
        try:
            body = delivery.body
            if body is None:
                body = event_body(delivery, await self._data(delivery))
                await self._store.deliveries.set_body(delivery.id, body)
            status_code = await self._post(webhook, delivery, body)
            error = None if 200 <= status_code < 300 else f"The receiver answered {status_code}"
        except RefusedTarget as refusal:
            error = refusal.message
        except TimeoutError:
            error = f"TimeoutError: no whole answer within {self._settings.timeout_s:g} s"
        except Exception as failure:
            # No answer (httpx's errors), or anything else: an attempt that failed all the
            # same, counted and retried later, never one tried again at once forever.
            error = f"{type(failure).__name__}: {failure}"[:MAX_ERROR_CHARS]
        now = self._clock()
        if error is None:
            return Outcome(SUCCEEDED, status_code, None, now, now)
        delay = backoff_delay(
            delivery.attempts + 1,
            base_s=self._settings.backoff_s,
            max_s=self._settings.backoff_max_s,
        )
        next_at = now + timedelta(seconds=delay)
        over = next_at > delivery.retry_from + timedelta(seconds=self._settings.retry_s)
        return Outcome(FAILED if over else PENDING, status_code, error, now, next_at)

    async def _post(self, webhook: Leased, delivery: DeliveryRecord, body: str) -> int:
        """POST the signed body to the checked address of the webhook's host."""
        allow = self._settings.allow_private
        target = await resolve(
            parse_url(webhook.url, allow_private=allow),
            allow_private=allow,
            resolver=self._resolver,
        )
        now = self._clock()
        headers = {
            "content-type": "application/json",
            "user-agent": "agentq-webhooks",
            "host": target.url.netloc.rpartition("@")[2],
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(webhook.secret).sign(delivery.event_id, now, body),
        }
        # httpx's timeout bounds each read, not the whole answer: a receiver trickling
        # its answer would hold the attempt, and its webhook, past the lease.
        async with asyncio.timeout(self._settings.timeout_s):
            response = await self._client.post(
                target.connect_url,
                content=body.encode(),
                headers=headers,
                # TLS checks the certificate against the URL's host, not the address.
                extensions={"sni_hostname": target.host},
            )
        return response.status_code

    async def _data(self, delivery: DeliveryRecord) -> Any:
        """A job event's job as GET /api/v1/jobs/{id} answers it; an emitted event's data.

        None when retention removed it before its first attempt.
        """
        job = _JOB_EVENT_ID.fullmatch(delivery.event_id)
        if job is not None:
            record = await self._store.jobs.get(job.group(1), tenant_id=delivery.tenant_id)
            return None if record is None else self._render_job(record)
        emitted = await self._store.event_log.emitted(delivery.tenant_id, delivery.event_id)
        return None if emitted is None or emitted.data is None else json.loads(emitted.data)
