"""What the engine needs of the database: the job transitions of an attempt, awaited."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from server.store.records import TurnRecord
from server.store.store import Store
from server.store.transitions import Attempt, Transition

# The most job ids one cancel check asks about in one statement.
CANCEL_CHECK_BATCH = 500


def cancel_check_batches(job_ids: Sequence[str]) -> Iterator[list[str]]:
    """The ids in lists of at most CANCEL_CHECK_BATCH, one statement's worth each."""
    for start in range(0, len(job_ids), CANCEL_CHECK_BATCH):
        yield list(job_ids[start : start + CANCEL_CHECK_BATCH])


class AttemptStore(Protocol):
    """The transitions of a job attempt, each one statement (or one transaction)."""

    async def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        """Move a due pending job to running for one attempt; None if another got it."""
        ...

    async def due_at(self, job_id: str) -> datetime | None:
        """When a pending job may run next; None if it is not pending (or not there)."""
        ...

    async def apply(self, change: Transition) -> bool:
        """Run one transition (`server/store/transitions.py`); False if the job did not match."""
        ...

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs have a cancel request."""
        ...

    async def history(self, job_id: str, *, limit: int) -> list[TurnRecord]:
        """Up to `limit` turns of the job's context completed by its claim, newest first."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""
        ...


class DatabaseAttemptStore:
    """AttemptStore over the store's job statements (`server/store/jobs.py`)."""

    def __init__(self, store: Store) -> None:
        self._jobs = store.jobs
        self._contexts = store.contexts
        self._db = store.db

    async def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        return await self._jobs.claim(job_id, now=now, token=token, lease_until=lease_until)

    async def due_at(self, job_id: str) -> datetime | None:
        return await self._jobs.due_at(job_id)

    async def apply(self, change: Transition) -> bool:
        # Not shielded: an attempt is interrupted (cancel, time limit) only inside its
        # provider call, never in a statement; only a shutdown may cut one.
        return await self._jobs.apply(change)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for batch in cancel_check_batches(job_ids):
            found |= await self._jobs.cancel_requested(batch)
        return found

    async def history(self, job_id: str, *, limit: int) -> list[TurnRecord]:
        return await self._contexts.history(job_id, limit=limit)

    async def aclose(self) -> None:
        await self._db.close()
