"""The tables of signed webhooks (README, Webhooks): endpoints, their event types, deliveries.

Kept apart from `models.py` (which imports this module, so that `Base.metadata` holds
these tables for the migrations and the schema checks).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.store.models import Base, UTCDateTime


class Webhook(Base):
    """A tenant's endpoint that receives the events of the types it subscribes to."""

    __tablename__ = "webhooks"
    __table_args__ = (
        # Lists page newest first by (created_at, id) within a tenant.
        Index("ix_webhooks_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    # The event types as given, as a JSON list; `webhook_subscriptions` holds one row
    # for each, which is what the outbox matches events against.
    event_types: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)
    # The signing secret, `whsec_...`: the server signs with it, so it is kept as is
    # (README, Webhooks).
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A dispatcher sending this webhook's deliveries holds it until then, so one at a
    # time sends them, in order (server/store/deliveries.py).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_token: Mapped[str | None] = mapped_column(String(36))


class WebhookSubscription(Base):
    """One event type (or `*`) a webhook receives: the outbox's lookup by (tenant, type)."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        Index("ix_webhook_subscriptions_tenant_id_event_type", "tenant_id", "event_type"),
    )

    webhook_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))


class WebhookDelivery(Base):
    """One event on its way to one webhook: written with the event, in its transaction."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The dispatcher looks for due pending deliveries.
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        # A webhook's deliveries, in the order their events happened (sending, lists).
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
    )

    # Numbered by the database in the order the deliveries were written: the order a
    # webhook's events are sent in. BIGINT on PostgreSQL; SQLite's INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    webhook_id: Mapped[str] = mapped_column(String(36))
    tenant_id: Mapped[str] = mapped_column(String(255))
    # The event log's id of the event (README, Event log): the `webhook-id` header.
    event_id: Mapped[str] = mapped_column(String(60))
    event_type: Mapped[str] = mapped_column(String(100))
    # `pending`, `succeeded` or `failed`.
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Attempts go on until the retry period after this (the event's time, or a retry's).
    retry_from: Mapped[datetime] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The body as first sent, so every attempt sends the same bytes; NULL before.
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
