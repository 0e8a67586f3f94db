"""WebhookService servicer: proto in, one service call, proto out (README, Webhooks)."""

from __future__ import annotations

from agentq.v1 import webhook_service_pb2 as pb
from agentq.v1 import webhook_service_pb2_grpc as pb_grpc
from server.api.context import Context, current_principal
from server.api.convert import timestamp
from server.service.services import Services
from server.store.deliveries import DeliveryRecord
from server.store.outbox import FAILED, PENDING, SUCCEEDED
from server.store.webhooks import WebhookRecord

_STATUS = {
    PENDING: pb.DELIVERY_STATUS_PENDING,
    SUCCEEDED: pb.DELIVERY_STATUS_SUCCEEDED,
    FAILED: pb.DELIVERY_STATUS_FAILED,
}


def webhook_message(webhook: WebhookRecord) -> pb.Webhook:
    """The Webhook message of a stored webhook; never its secret."""
    return pb.Webhook(
        id=webhook.id,
        url=webhook.url,
        event_types=webhook.types,
        enabled=webhook.enabled,
        created_at=timestamp(webhook.created_at),
        updated_at=timestamp(webhook.updated_at),
    )


def delivery_message(delivery: DeliveryRecord) -> pb.WebhookDelivery:
    """The WebhookDelivery message of a stored delivery."""
    message = pb.WebhookDelivery(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=_STATUS[delivery.status],
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=timestamp(delivery.created_at),
    )
    if delivery.last_attempt_at is not None:
        message.last_attempt_at.CopyFrom(timestamp(delivery.last_attempt_at))
    if delivery.status == PENDING:
        message.next_attempt_at.CopyFrom(timestamp(delivery.next_attempt_at))
    return message


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    """Signed webhooks (README, Webhooks)."""

    def __init__(self, services: Services) -> None:
        self._webhooks = services.webhooks

    async def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: Context
    ) -> pb.CreateWebhookResponse:
        webhook, secret = await self._webhooks.create(
            current_principal(),
            url=request.url,
            event_types=list(request.event_types),
            enabled=request.enabled if request.HasField("enabled") else True,
        )
        return pb.CreateWebhookResponse(webhook=webhook_message(webhook), secret=secret)

    async def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: Context
    ) -> pb.ListWebhooksResponse:
        page = await self._webhooks.list(
            current_principal(),
            size=request.page_size if request.HasField("page_size") else None,
            token=request.page_token,
        )
        return pb.ListWebhooksResponse(
            webhooks=[webhook_message(w) for w in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def GetWebhook(
        self, request: pb.GetWebhookRequest, context: Context
    ) -> pb.GetWebhookResponse:
        webhook = await self._webhooks.get(current_principal(), request.webhook_id)
        return pb.GetWebhookResponse(webhook=webhook_message(webhook))

    async def UpdateWebhook(
        self, request: pb.UpdateWebhookRequest, context: Context
    ) -> pb.UpdateWebhookResponse:
        webhook = await self._webhooks.update(
            current_principal(),
            request.webhook_id,
            url=request.url if request.HasField("url") else None,
            event_types=(
                list(request.event_types.types) if request.HasField("event_types") else None
            ),
            enabled=request.enabled if request.HasField("enabled") else None,
        )
        return pb.UpdateWebhookResponse(webhook=webhook_message(webhook))

    async def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: Context
    ) -> pb.DeleteWebhookResponse:
        await self._webhooks.delete(current_principal(), request.webhook_id)
        return pb.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: Context
    ) -> pb.RotateWebhookSecretResponse:
        webhook, secret = await self._webhooks.rotate_secret(
            current_principal(), request.webhook_id
        )
        return pb.RotateWebhookSecretResponse(webhook=webhook_message(webhook), secret=secret)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        page = await self._webhooks.deliveries(
            current_principal(),
            request.webhook_id,
            size=request.page_size if request.HasField("page_size") else None,
            token=request.page_token,
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[delivery_message(d) for d in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def RetryWebhookDelivery(
        self, request: pb.RetryWebhookDeliveryRequest, context: Context
    ) -> pb.RetryWebhookDeliveryResponse:
        delivery = await self._webhooks.retry(
            current_principal(), request.webhook_id, request.delivery_id
        )
        return pb.RetryWebhookDeliveryResponse(delivery=delivery_message(delivery))
