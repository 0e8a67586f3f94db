"""A job's owner, for the lifecycle tests: ALICE executes, cancels and watches her jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.providers.base import ProviderError
from server.store.records import AgentRecord, JobRecord
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner, CancelSignal
from tests.fakes.provider import ScriptedProvider
from tests.world import ALICE, World, execute_request

UNAVAILABLE = "Provider returned HTTP 503"


def unavailable() -> ProviderError:
    """The provider's answer while it is down: worth another attempt."""
    return ProviderError(UNAVAILABLE, retryable=True)


@dataclass
class Owner:
    """ALICE and her agent, in a world whose worker watches her jobs for cancel requests."""

    world: World
    agent: AgentRecord
    signals: dict[str, CancelSignal] = field(default_factory=dict)

    async def execute(self, *, parent: str | None = None) -> str:
        spec = execute_request()
        return await self.world.jobs.execute(ALICE, self.agent.id, spec, parent_job_id=parent)

    async def cancel(self, job_id: str) -> JobRecord:
        return await self.world.jobs.cancel_job(ALICE, job_id)

    def runner(self, provider: ScriptedProvider, **policy: Any) -> AttemptRunner:
        return self.world.runner(provider, policy=RetryPolicy(**policy))

    async def run(self, runner: AttemptRunner, job_id: str) -> bool:
        """Deliver one message for the job to the worker, its attempt watched for cancels."""
        signal = self.signals[job_id] = CancelSignal()
        return await self.world.run_job(runner, job_id, signal)

    async def check(self) -> None:
        """The worker's cancel check: stop the attempts of jobs with a cancel request."""
        for job_id in await self.world.store.jobs.cancel_requested(list(self.signals)):
            self.signals[job_id].cancel()

    async def job(self, job_id: str) -> JobRecord:
        return await self.world.jobs.get_job(ALICE, job_id)

    async def events(self, job_id: str, after: int = 0) -> list[tuple[int, str, int]]:
        """(sequence, type, attempt) of the job's events, as a watcher gets them."""
        _, events = await self.world.jobs.events_after(ALICE, job_id, after)
        return [(e.sequence, e.type, e.attempt) for e in events]

    async def types(self, job_id: str) -> list[str]:
        return [kind for _, kind, _ in await self.events(job_id)]
