"""The store: every table's statements over the database port, alone or in a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.store.access import ApiKeys, Limits
from server.store.agents import Agents
from server.store.contexts import Contexts
from server.store.database import Database, Statements
from server.store.deliveries import Deliveries
from server.store.event_log import EventLog
from server.store.events import Events
from server.store.jobs import Jobs
from server.store.keys import IdempotencyKeys
from server.store.webhooks import Webhooks
from server.store.workflows import Workflows


class Tables:
    """The stores of each table, over one runner of statements."""

    def __init__(self, run: Statements) -> None:
        self.agents = Agents(run)
        self.jobs = Jobs(run)
        self.events = Events(run)
        self.keys = IdempotencyKeys(run)
        self.api_keys = ApiKeys(run)
        self.limits = Limits(run)
        self.contexts = Contexts(run)
        self.event_log = EventLog(run)
        self.workflows = Workflows(run)
        self.webhooks = Webhooks(run)
        self.deliveries = Deliveries(run)


class Store(Tables):
    """The tables with each statement on its own; `transaction()` for several together."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.db = db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tables]:
        """The tables in one transaction: committed when the block ends, else rolled back."""
        async with self.db.transaction() as run:
            yield Tables(run)
