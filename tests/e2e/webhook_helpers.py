"""What the webhook tests over real HTTP share: settings that retry within a second or so,
registering a webhook to a receiver (tests/webhook_receiver.py) and listing its deliveries
(README, Webhooks)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.webhook_receiver import Receiver

# Short waits between attempts, so a receiver's outage is retried within a second or so;
# private addresses allowed, so that a receiver on 127.0.0.1 is.
FAST_WEBHOOKS: dict[str, Any] = {
    "webhook_allow_private": True,
    "webhook_backoff_s": 0.2,
    "webhook_backoff_max_s": 0.5,
    "webhook_poll_s": 0.1,
    "webhook_timeout_s": 5,
}


def create_webhook(
    http: httpx.Client, receiver: Receiver, types: list[str], path: str = "/hook"
) -> dict[str, Any]:
    """A new webhook of `types` to the receiver's `path`; the receiver verifies with its
    secret from then on."""
    response = http.post("/api/v1/webhooks", json={"url": receiver.url(path), "event_types": types})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["secret"].startswith("whsec_")
    receiver.secret = body["secret"]
    return body


def deliveries(http: httpx.Client, webhook_id: str) -> list[dict[str, Any]]:
    """The webhook's deliveries, newest first (one page of up to 100)."""
    response = http.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params={"page_size": 100})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found
