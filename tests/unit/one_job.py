"""One stored job, for the runner's tests: run it, and read it back as committed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.store.records import AgentRecord, JobRecord
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner, CancelSignal
from tests.fakes.clock import FakeClock
from tests.fakes.provider import ScriptedProvider
from tests.fakes.queue import FakeQueue
from tests.world import World


@dataclass
class OneJob:
    """One stored agent with one pending, due job, in a world."""

    world: World
    agent: AgentRecord
    job: JobRecord

    @property
    def clock(self) -> FakeClock:
        return self.world.clock

    @property
    def queue(self) -> FakeQueue:
        return self.world.queue

    def runner(self, provider: ScriptedProvider, **policy: Any) -> AttemptRunner:
        return self.world.runner(provider, policy=RetryPolicy(**policy))

    async def run(self, runner: AttemptRunner, signal: CancelSignal | None = None) -> bool:
        """Deliver one message for the job to the worker."""
        return await self.world.run_job(runner, self.job.id, signal)

    async def run_when_due(self, runner: AttemptRunner, times: int) -> None:
        """Deliver a message `times` times, each when the job is next due."""
        for _ in range(times):
            await self.run(runner)
            self.clock.set((await self.row()).next_run_at)

    async def row(self) -> JobRecord:
        """The job as committed now."""
        row = await self.world.job(self.job.id)
        assert row is not None
        return row

    async def events(self) -> list[tuple[int, str, int]]:
        """(sequence, type, attempt) of the job's committed events."""
        return [(e.sequence, e.type, e.attempt) for e in await self.world.events(self.job.id)]
