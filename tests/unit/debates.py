"""Jobs with adversarial verification for the runner's tests, and their steps read back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.providers.base import Completion, Provider
from server.store.records import AgentRecord, EventRecord, JobRecord
from server.worker.policy import RetryPolicy
from server.worker.prompts import NOTHING_MATERIAL
from server.worker.runner import AttemptRunner, CancelSignal
from server.worker.verification import VerifyConfig
from tests.world import ANSWER, PROMPT, World

NOTHING = Completion(text=NOTHING_MATERIAL, tokens_used=5)


def critique(text: str = "The 12% figure is the half-year's, not the quarter's.") -> Completion:
    """A material critique."""
    return Completion(text=text, tokens_used=17)


def defence(text: str = "The report states 12% for the quarter on page 3.") -> Completion:
    """The agent's reply to a critique."""
    return Completion(text=text, tokens_used=13)


def verdict(confidence: float, evidence: str = "The figure matches the report.") -> Completion:
    """A judge's answer in the form asked for."""
    return Completion(
        text=json.dumps({"confidence": confidence, "evidence": evidence}), tokens_used=11
    )


@dataclass
class Debate:
    """One stored job with verification options, run by scripted providers."""

    world: World
    agent: AgentRecord
    job: JobRecord

    def runner(
        self, provider: Provider, *, verify: VerifyConfig | None = None, **policy: Any
    ) -> AttemptRunner:
        return self.world.runner(provider, policy=RetryPolicy(**policy), verify=verify)

    async def run(self, runner: AttemptRunner, signal: CancelSignal | None = None) -> JobRecord:
        """Deliver one message for the job; the job as committed then."""
        await self.world.run_job(runner, self.job.id, signal)
        return await self.row()

    async def row(self) -> JobRecord:
        row = await self.world.job(self.job.id)
        assert row is not None
        return row

    async def events(self) -> list[EventRecord]:
        return await self.world.events(self.job.id)

    async def steps(self) -> list[EventRecord]:
        """The job's step events, in order."""
        return [event for event in await self.events() if event.type == "step"]

    async def kinds(self) -> list[tuple[str | None, int | None]]:
        """(kind, round) of each step event."""
        return [(step.step_kind, step.step_round) for step in await self.steps()]


async def debate(
    world: World,
    *,
    adversarial: bool = True,
    self_correction: bool = False,
    rounds: int = 3,
    prompt: str = PROMPT,
    **agent: Any,
) -> Debate:
    """A stored agent (`agent` sets its columns) with one due job asking for verification."""
    stored = await world.add_agent(**agent)
    job = await world.add_job(
        stored,
        prompt=prompt,
        enable_adversarial=adversarial,
        enable_self_correction=self_correction,
        max_debate_rounds=rounds,
    )
    return Debate(world, stored, job)


__all__ = ["ANSWER", "NOTHING", "Debate", "critique", "debate", "defence", "verdict"]
