"""What the servicers call: the services over one store, and how to close them."""

from __future__ import annotations

from dataclasses import dataclass

from server.sending import MessageSender
from server.service.access import AccessService
from server.service.agents import AgentService
from server.service.contexts import ContextService
from server.service.event_log import EventLogService
from server.service.jobs import JobService
from server.service.own_keys import OwnKeys
from server.service.system import SystemService
from server.service.webhooks import WebhookService
from server.service.workflows import WorkflowService
from server.store.store import Store


@dataclass(frozen=True)
class Services:
    """The service layer of one serving process, on its event loop's connection pool."""

    agents: AgentService
    jobs: JobService
    contexts: ContextService
    events: EventLogService
    system: SystemService
    access: AccessService
    own_keys: OwnKeys
    workflows: WorkflowService
    webhooks: WebhookService
    store: Store
    sender: MessageSender

    async def close(self) -> None:
        """Send the messages still handed over, then close the connections."""
        self.sender.close()
        await self.store.db.close()
