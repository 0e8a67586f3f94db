"""What one attempt runs: the answer, and around it the safety judge and verification.

In order, each call a step (server/worker/calls.py):

1. `safety` (with the prompt guard's `judge` mode): the safety judge screens the prompt;
   a rejection fails the job, not to be retried.
2. `answer`: the agent answers the prompt in its role, after the conversation's history.
3. With `enable_adversarial`, up to `max_debate_rounds` rounds of `critique` (the critic
   challenges the answer, seeing the debate so far) and `defence` (the agent replies).
   A round whose critique is not material (verdicts.is_material) has no defence and is
   the last.
4. `verdict`: the judge scores the answer from 0 to 1 with its evidence. A verdict that
   cannot be read is asked for again once, saying why; a second that cannot be read
   counts as confidence 0, the reason as its evidence.
5. With `enable_self_correction`, when the confidence is under the threshold: `revision`
   (the agent answers again, given the judge's evidence), then a `verdict` on the
   revision, which becomes the result with its own score.

The answer shown to the user is the one whose tokens stream: the first answer, unless a
revision may replace it (self-correction is on), in which case it is held back until the
verdict. Then either the revision streams as it is made, or, when the first answer
stands, it is written whole as one token event. So a completed job's token events
always join into its response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from server.providers.base import Message
from server.store.events import StepKind, StepSpec
from server.store.transitions import Attempt
from server.validation import VerificationPrompts
from server.worker import prompts
from server.worker.calls import AttemptCalls
from server.worker.prompts import PromptSet, Turn
from server.worker.verdicts import Unreadable, Verdict, is_material, read_safety, read_verdict

SAFETY_REJECTED = "Safety judge rejected input"


class SafetyRejected(Exception):
    """The safety judge refused the prompt; `message` is the job's error."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{SAFETY_REJECTED}: {reason}")
        self.message = f"{SAFETY_REJECTED}: {reason}"


@dataclass(frozen=True)
class VerifyConfig:
    """The deployment's side of verification: its prompts, threshold and safety judge."""

    prompts: PromptSet = field(default_factory=PromptSet)
    # `verified` is confidence >= threshold (AGENTQ_VERIFY_THRESHOLD).
    threshold: float = 0.7
    # AGENTQ_PROMPT_GUARD=judge: screen every prompt with the safety judge first.
    safety_judge: bool = False


@dataclass(frozen=True)
class Plan:
    """What one attempt runs."""

    agent_id: str
    role: str
    prompt: str
    adversarial: bool
    self_correction: bool
    max_rounds: int
    prompts: PromptSet
    threshold: float
    safety_judge: bool
    history: Sequence[Message] = ()

    @classmethod
    def of(
        cls,
        attempt: Attempt,
        role: str,
        config: VerifyConfig,
        *,
        history: Sequence[Message] = (),
    ) -> Plan:
        """The plan of a claimed attempt (of a live agent, whose role is `role`).

        `history` is the conversation before the prompt, oldest first: the answer and a
        revision are made after it; the other calls judge the answer to this prompt alone.
        """
        own = VerificationPrompts.from_json(attempt.verification)
        return cls(
            agent_id=attempt.agent_id,
            role=role,
            prompt=attempt.prompt,
            adversarial=attempt.enable_adversarial,
            self_correction=attempt.enable_self_correction,
            max_rounds=attempt.max_debate_rounds,
            prompts=config.prompts.overridden_by(own),
            threshold=config.threshold,
            safety_judge=config.safety_judge,
            history=history,
        )

    @property
    def calls_once(self) -> bool:
        """True when the run is its answer alone: one call, no step events."""
        return not (self.adversarial or self.safety_judge)


@dataclass(frozen=True)
class RunResult:
    """What a run answered, and what verification made of it."""

    text: str
    steps: list[StepSpec]
    confidence: float | None
    debate_rounds: int
    threshold: float

    @property
    def verified(self) -> bool:
        """The judge's confidence reached the threshold; never without a judge."""
        return self.confidence is not None and self.confidence >= self.threshold


async def run(plan: Plan, calls: AttemptCalls) -> RunResult:
    """Run the plan's steps in order; the result is the answer shown to the user."""
    if plan.safety_judge:
        await _screen(plan, calls)
    held = plan.adversarial and plan.self_correction
    answer = await calls.call(
        StepKind.ANSWER,
        0,
        system=plan.role,
        prompt=plan.prompt,
        history=plan.history,
        shown=not held,
    )
    if not plan.adversarial:
        return RunResult(answer.text, calls.steps, None, 0, plan.threshold)
    debate = await _debate(plan, calls, answer.text)
    rounds = sum(1 for turn in debate if turn.kind is StepKind.CRITIQUE)
    verdict = await _judge(plan, calls, answer.text, debate)
    if verdict.confidence >= plan.threshold or not plan.self_correction:
        if held:
            await calls.show(answer.text)
        return RunResult(answer.text, calls.steps, verdict.confidence, rounds, plan.threshold)
    revision = await calls.call(
        StepKind.REVISION,
        0,
        system=prompts.blue_role(plan.role, plan.prompts.reviser),
        prompt=prompts.revision_message(plan.prompt, answer.text, debate, verdict.evidence),
        history=plan.history,
        shown=True,
    )
    second = await _judge(plan, calls, revision.text, (), earlier_evidence=verdict.evidence)
    return RunResult(revision.text, calls.steps, second.confidence, rounds, plan.threshold)


async def _debate(plan: Plan, calls: AttemptCalls, answer: str) -> list[Turn]:
    """The rounds of critique and defence, until the critic finds nothing or rounds run out."""
    debate: list[Turn] = []
    for round in range(1, plan.max_rounds + 1):
        critique = await calls.call(
            StepKind.CRITIQUE,
            round,
            system=plan.prompts.critic,
            prompt=prompts.critique_message(plan.prompt, answer, debate),
        )
        debate.append(Turn(StepKind.CRITIQUE, round, critique.text))
        if not is_material(critique.text):
            break
        defence = await calls.call(
            StepKind.DEFENCE,
            round,
            system=prompts.blue_role(plan.role, plan.prompts.defender),
            prompt=prompts.defence_message(plan.prompt, answer, debate),
        )
        debate.append(Turn(StepKind.DEFENCE, round, defence.text))
    return debate


async def _judge(
    plan: Plan,
    calls: AttemptCalls,
    answer: str,
    debate: Sequence[Turn],
    *,
    earlier_evidence: str | None = None,
) -> Verdict:
    """The judge's verdict on `answer`, asked once more when it cannot be read."""
    unreadable: str | None = None
    for last in (False, True):
        message = prompts.verdict_message(
            plan.prompt, answer, debate, earlier_evidence=earlier_evidence, unreadable=unreadable
        )
        step = await calls.call(
            StepKind.VERDICT, 0, system=plan.prompts.judge, prompt=message, recorded=False
        )
        try:
            verdict = read_verdict(step.text)
        except Unreadable as exc:
            unreadable = str(exc)
            evidence = f"The judge's verdict could not be read: {unreadable}"
            # Only the second unreadable verdict counts, as confidence 0.
            await calls.record(replace(step, confidence=0.0 if last else None, evidence=evidence))
            if last:
                return Verdict(0.0, evidence)
            continue
        await calls.record(replace(step, confidence=verdict.confidence, evidence=verdict.evidence))
        return verdict
    raise AssertionError("unreachable: the second verdict always returns")


async def _screen(plan: Plan, calls: AttemptCalls) -> None:
    """The safety judge's screening of the prompt; SafetyRejected when it refuses it."""
    unreadable: str | None = None
    for last in (False, True):
        message = prompts.safety_message(plan.prompt, unreadable=unreadable)
        step = await calls.call(
            StepKind.SAFETY, 0, system=plan.prompts.safety_judge, prompt=message, recorded=False
        )
        try:
            decision = read_safety(step.text)
        except Unreadable as exc:
            unreadable = str(exc)
            await calls.record(
                replace(step, evidence=f"The safety verdict could not be read: {unreadable}")
            )
            if last:
                raise SafetyRejected(f"its verdict could not be read ({unreadable})") from None
            continue
        await calls.record(replace(step, evidence=decision.reason))
        if not decision.allow:
            raise SafetyRejected(decision.reason)
        return
