"""The tables of the schema (the models of `server/store/models.py`) for Core statements."""

from __future__ import annotations

from sqlalchemy import Table

from server.store.models import (
    Agent,
    ApiKey,
    Base,
    ClientEvent,
    ContextTurn,
    IdempotencyKey,
    Job,
    JobEvent,
    TenantLimit,
    Workflow,
    WorkflowRun,
    WorkflowRunStep,
    WorkflowVersion,
)
from server.store.webhook_models import Webhook, WebhookDelivery, WebhookSubscription


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


agents = _table(Agent)
jobs = _table(Job)
events = _table(JobEvent)
idempotency_keys = _table(IdempotencyKey)
api_keys = _table(ApiKey)
tenant_limits = _table(TenantLimit)
context_turns = _table(ContextTurn)
client_events = _table(ClientEvent)
workflows = _table(Workflow)
workflow_versions = _table(WorkflowVersion)
workflow_runs = _table(WorkflowRun)
workflow_run_steps = _table(WorkflowRunStep)
webhooks = _table(Webhook)
webhook_subscriptions = _table(WebhookSubscription)
webhook_deliveries = _table(WebhookDelivery)
