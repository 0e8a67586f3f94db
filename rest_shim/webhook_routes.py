"""Signed webhooks' routes (/api/v1/webhooks, README Webhooks): each one WebhookService RPC.

The URL and the event types travel as sent: the server judges them (422) with the
messages a gRPC client gets, its host's addresses included.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from fastapi.responses import Response
from pydantic import BaseModel, Field, StrictBool

from agentq.client.wire import time_or_none
from agentq.v1 import webhook_service_pb2 as pb
from rest_shim import render, rules
from rest_shim.routes import _AUTHED, _BODY, _SECURED, PageSize, PageToken, int32
from rest_shim.rules import documented
from rest_shim.schemas import PageMeta, StrictStr
from rest_shim.table import RouteTable

WEBHOOKS = RouteTable()
# The server's rules (server/service/webhooks.py, webhook_targets.py), for the OpenAPI
# document; whether a URL's host resolves to allowed addresses no schema can say.
MAX_URL_CHARS = 2000
MAX_TYPES = 50
TYPE_PATTERN = "^(\\*|[a-z0-9._-]{1,100})$"


def _url() -> dict[str, Any]:
    return {"type": "string", "pattern": "^https://", "maxLength": MAX_URL_CHARS}


def _types() -> dict[str, Any]:
    items = {"type": "string", "pattern": TYPE_PATTERN}
    return {"type": "array", "items": items, "minItems": 1, "maxItems": MAX_TYPES}


_STATUS_NAMES = {
    pb.DELIVERY_STATUS_PENDING: "pending",
    pb.DELIVERY_STATUS_SUCCEEDED: "succeeded",
    pb.DELIVERY_STATUS_FAILED: "failed",
}
_INT64 = 2**63
WebhookId = Annotated[str, documented(rules.uuid()), Path(description="The webhook's id, a UUID.")]
# Any int64 reaches the server, which words the refusal of one below 1.
DeliveryId = Annotated[
    int,
    documented(rules.integer(1, _INT64 - 1)),
    Path(ge=-_INT64, lt=_INT64, description="The delivery's id, a positive number."),
]


class CreateWebhookBody(BaseModel):
    """POST /api/v1/webhooks."""

    url: Annotated[StrictStr, documented(_url())] = Field(
        description="https URL of at most 2000 characters whose host is a public address."
    )
    event_types: Annotated[list[StrictStr], documented(_types())] = Field(
        description="1-50 types, each `*` or 1-100 characters of a-z0-9._-."
    )
    enabled: StrictBool = Field(True, description="Whether new events are delivered.")


class UpdateWebhookBody(BaseModel):
    """PATCH /api/v1/webhooks/{id}: the fields given change, the others stay."""

    url: Annotated[StrictStr | None, documented(_url(), nullable=True)] = Field(
        None, description="A new URL, of the create rule."
    )
    event_types: Annotated[list[StrictStr] | None, documented(_types(), nullable=True)] = Field(
        None, description="New types, of the create rule."
    )
    enabled: StrictBool | None = Field(None, description="Whether new events are delivered.")


class WebhookOut(BaseModel):
    """A webhook; its secret is never shown again."""

    id: str
    url: str
    event_types: list[str]
    enabled: bool
    created_at: str
    updated_at: str


class WebhookWithSecretOut(WebhookOut):
    """A new webhook, or one whose secret was rotated: the only time `secret` is shown."""

    secret: str = Field(description="`whsec_...`: store it now, it cannot be read again.")


class WebhookPage(BaseModel):
    """A page of the tenant's webhooks, newest first."""

    data: list[WebhookOut]
    meta: PageMeta


class DeliveryOut(BaseModel):
    """One event on its way to one webhook."""

    id: int
    webhook_id: str
    event_id: str = Field(description="The event's id in the log, sent as `webhook-id`.")
    event_type: str
    status: str = Field(description="`pending`, `succeeded` or `failed`.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: str | None
    next_attempt_at: str | None
    created_at: str


class DeliveryPage(BaseModel):
    """A page of a webhook's deliveries, newest first."""

    data: list[DeliveryOut]
    meta: PageMeta


def webhook(message: pb.Webhook) -> dict[str, Any]:
    """A webhook body."""
    return {
        "id": message.id,
        "url": message.url,
        "event_types": list(message.event_types),
        "enabled": message.enabled,
        "created_at": message.created_at.ToJsonString(),
        "updated_at": message.updated_at.ToJsonString(),
    }


def delivery(message: pb.WebhookDelivery) -> dict[str, Any]:
    """A delivery body."""
    return {
        "id": message.id,
        "webhook_id": message.webhook_id,
        "event_id": message.event_id,
        "event_type": message.event_type,
        "status": _STATUS_NAMES[message.status],
        "attempts": message.attempts,
        "last_status_code": (
            message.last_status_code if message.HasField("last_status_code") else None
        ),
        "last_error": message.last_error if message.HasField("last_error") else None,
        "last_attempt_at": time_or_none(message, "last_attempt_at"),
        "next_attempt_at": time_or_none(message, "next_attempt_at"),
        "created_at": message.created_at.ToJsonString(),
    }


def _with_secret(reply: pb.CreateWebhookResponse | pb.RotateWebhookSecretResponse) -> Any:
    return {**webhook(reply.webhook), "secret": reply.secret}


@WEBHOOKS.route(
    "POST",
    "/api/v1/webhooks",
    rpc="WebhookService.CreateWebhook",
    status=201,
    render=_with_secret,
    response_model=WebhookWithSecretOut,
    errors=(*_AUTHED, *_BODY),
    credentials=_SECURED,
    tag="webhooks",
)
def create_webhook(body: CreateWebhookBody) -> pb.CreateWebhookRequest:
    """Create a webhook of your tenant (scope `jobs:write`); the response is the only time
    its signing secret is shown.
    """
    return pb.CreateWebhookRequest(url=body.url, event_types=body.event_types, enabled=body.enabled)


@WEBHOOKS.route(
    "GET",
    "/api/v1/webhooks",
    rpc="WebhookService.ListWebhooks",
    render=lambda reply: render.page(
        [webhook(w) for w in reply.webhooks], reply.page_size, reply.next_page_token
    ),
    response_model=WebhookPage,
    errors=(*_AUTHED, 422),
    credentials=_SECURED,
    tag="webhooks",
)
def list_webhooks(page_size: PageSize = None, page_token: PageToken = "") -> pb.ListWebhooksRequest:
    """Your tenant's webhooks, newest first, paged (scope `jobs:read`)."""
    return pb.ListWebhooksRequest(
        page_size=None if page_size is None else int32(page_size), page_token=page_token
    )


@WEBHOOKS.route(
    "GET",
    "/api/v1/webhooks/{webhook_id}",
    rpc="WebhookService.GetWebhook",
    render=lambda reply: webhook(reply.webhook),
    response_model=WebhookOut,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="webhooks",
)
def get_webhook(webhook_id: WebhookId) -> pb.GetWebhookRequest:
    """One of your tenant's webhooks (scope `jobs:read`)."""
    return pb.GetWebhookRequest(webhook_id=webhook_id)


@WEBHOOKS.route(
    "PATCH",
    "/api/v1/webhooks/{webhook_id}",
    rpc="WebhookService.UpdateWebhook",
    render=lambda reply: webhook(reply.webhook),
    response_model=WebhookOut,
    errors=(*_AUTHED, *_BODY, 404),
    credentials=_SECURED,
    tag="webhooks",
)
def update_webhook(webhook_id: WebhookId, body: UpdateWebhookBody) -> pb.UpdateWebhookRequest:
    """Change a webhook's URL, event types or enabled flag (scope `jobs:write`)."""
    return pb.UpdateWebhookRequest(
        webhook_id=webhook_id,
        url=body.url,
        event_types=None
        if body.event_types is None
        else pb.WebhookEventTypes(types=body.event_types),
        enabled=body.enabled,
    )


@WEBHOOKS.route(
    "DELETE",
    "/api/v1/webhooks/{webhook_id}",
    rpc="WebhookService.DeleteWebhook",
    status=204,
    render=None,
    response_class=Response,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="webhooks",
)
def delete_webhook(webhook_id: WebhookId) -> pb.DeleteWebhookRequest:
    """Delete a webhook and its deliveries (scope `jobs:write`)."""
    return pb.DeleteWebhookRequest(webhook_id=webhook_id)


@WEBHOOKS.route(
    "POST",
    "/api/v1/webhooks/{webhook_id}/rotate-secret",
    rpc="WebhookService.RotateWebhookSecret",
    render=_with_secret,
    response_model=WebhookWithSecretOut,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="webhooks",
)
def rotate_webhook_secret(webhook_id: WebhookId) -> pb.RotateWebhookSecretRequest:
    """Replace a webhook's signing secret; the new one is shown this once (`jobs:write`)."""
    return pb.RotateWebhookSecretRequest(webhook_id=webhook_id)


@WEBHOOKS.route(
    "GET",
    "/api/v1/webhooks/{webhook_id}/deliveries",
    rpc="WebhookService.ListWebhookDeliveries",
    render=lambda reply: render.page(
        [delivery(d) for d in reply.deliveries], reply.page_size, reply.next_page_token
    ),
    response_model=DeliveryPage,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="webhooks",
)
def list_webhook_deliveries(
    webhook_id: WebhookId, page_size: PageSize = None, page_token: PageToken = ""
) -> pb.ListWebhookDeliveriesRequest:
    """A webhook's deliveries, newest first: status, attempts, last answer (`jobs:read`)."""
    return pb.ListWebhookDeliveriesRequest(
        webhook_id=webhook_id,
        page_size=None if page_size is None else int32(page_size),
        page_token=page_token,
    )


@WEBHOOKS.route(
    "POST",
    "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    rpc="WebhookService.RetryWebhookDelivery",
    render=lambda reply: delivery(reply.delivery),
    response_model=DeliveryOut,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="webhooks",
)
def retry_webhook_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId
) -> pb.RetryWebhookDeliveryRequest:
    """Send a delivery again as soon as possible, whatever its status (`jobs:write`)."""
    return pb.RetryWebhookDeliveryRequest(webhook_id=webhook_id, delivery_id=delivery_id)
