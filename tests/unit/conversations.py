"""A tenant's conversations, for the context tests: executions queued on a context and run."""

from __future__ import annotations

from dataclasses import dataclass

from server.auth.principal import Principal
from server.providers.base import Completion, Message
from server.store.records import AgentRecord
from server.worker.runner import CancelSignal
from tests.fakes.provider import ProviderCall, ScriptedProvider, Step
from tests.world import ALICE, World, context_request

CONTEXT = "trip-planning"


def answer_to(prompt: str) -> str:
    """What the scripted provider answers to `prompt` in these tests."""
    return f"Answer to {prompt}"


def turns(*prompts: str) -> tuple[Message, ...]:
    """The history of these earlier prompts and their answers, as a provider receives it."""
    return tuple(
        message
        for prompt in prompts
        for message in (Message("user", prompt), Message("assistant", answer_to(prompt)))
    )


@dataclass
class Speaker:
    """A caller with an agent of its tenant, talking in contexts through the world's services."""

    world: World
    agent: AgentRecord
    principal: Principal = ALICE

    async def queue(self, prompt: str, context_id: str | None = CONTEXT) -> str:
        """Queue an execution of `prompt` in the context; its job id."""
        spec = context_request(context_id, prompt)
        return await self.world.jobs.execute(self.principal, self.agent.id, spec)

    async def run(
        self, job_id: str, *steps: Step, signal: CancelSignal | None = None
    ) -> ScriptedProvider:
        """Deliver one message for the job to a worker whose provider plays `steps`.

        The clock then moves on a second, so whatever runs next starts after this ended.
        """
        provider = ScriptedProvider(*steps)
        await self.world.run_job(self.world.runner(provider), job_id, signal)
        self.world.clock.advance(1)
        return provider

    async def say(self, prompt: str, context_id: str | None = CONTEXT) -> tuple[str, ProviderCall]:
        """Queue and complete one execution; its job id and the provider call it made."""
        job_id = await self.queue(prompt, context_id)
        provider = await self.run(job_id, Completion(answer_to(prompt), 10))
        return job_id, provider.calls[0]
