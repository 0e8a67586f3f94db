"""What the engine needs of the database: the job transitions of an attempt, awaited.

Two adapters run the same prebuilt statements (`server/transitions.py`): asyncpg on
PostgreSQL (`pg_store.py`), and the synchronous transitions on a few threads for SQLite
(`ThreadStore` here), whose driver cannot wait on a socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from server.transitions import Attempt, Transition
from server.worker.units import UnitOfWork

T = TypeVar("T")

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
        """Run one transition (`server/transitions.py`); False if the job did not match."""
        ...

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs have a cancel request."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""
        ...


class ThreadStore:
    """AttemptStore over synchronous units of work, each run on one of a few threads."""

    def __init__(self, units: Callable[[], UnitOfWork], *, threads: int = 4) -> None:
        self._units = units
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="agentq-db"
        )

    async def _run(self, work: Callable[[UnitOfWork], T]) -> T:
        def in_a_unit() -> T:
            with self._units() as uow:
                result = work(uow)
                uow.commit()
                return result

        # Shielded: a transaction cancelled halfway would leave its thread's work
        # running anyway, so the caller waits for its outcome.
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._pool, in_a_unit))

    async def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        return await self._run(
            lambda uow: uow.jobs.claim(job_id, now=now, token=token, lease_until=lease_until)
        )

    async def due_at(self, job_id: str) -> datetime | None:
        return await self._run(lambda uow: uow.jobs.due_at(job_id))

    async def apply(self, change: Transition) -> bool:
        return await self._run(lambda uow: uow.jobs.apply(change))

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for batch in cancel_check_batches(job_ids):
            found |= await self._run(functools.partial(_cancel_requested, batch))
        return found

    async def aclose(self) -> None:
        # Off the loop: waiting for a thread's last statement must not stall it.
        await asyncio.to_thread(self._pool.shutdown, wait=True)


def _cancel_requested(job_ids: list[str], uow: UnitOfWork) -> set[str]:
    return uow.jobs.cancel_requested(job_ids)
