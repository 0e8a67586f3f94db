"""Workflow runs: start one, and move each forward as its steps' jobs finish (README, Workflows).

A run is a parent job that no worker runs: it is stored and claimed at once (running,
with no lease, so neither the worker nor the recovery sweeper ever takes it), and its
steps are child jobs (`parent_job_id`), which the workers run like any other job. The
orchestrator is a loop beside the recovery sweeper (`OrchestratorThread`, every
`AGENTQ_WORKFLOW_POLL_S`): it reads the runs not yet finished, each locked for the
sweep (FOR UPDATE SKIP LOCKED, so many processes may run it), and in one transaction
per sweep queues the steps whose dependencies completed, or records the run's end. A
job that is not a workflow step costs nothing more: the workers' path is unchanged.

Run-once: a started step is a row keyed by (run, step), written in the transaction
that queues its job, so a step is never queued twice, whoever looks at the run again
after a crash. The run's final transition, its `workflow.*` event in the tenant's log
and the run's `finished_at` are one transaction too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from server.clock import Clock, utc_now
from server.errors import InvalidArgument, PermissionDenied
from server.paging import Cursor
from server.prompt_guard import PromptGuard
from server.queue import BatchQueue
from server.service.jobs import cancel_tree
from server.service.workflow_rules import Step, input_text, render, steps_of
from server.store.event_log import EMITTED_ID_PREFIX
from server.store.events import EventSpec, EventType
from server.store.jobs import NewJob
from server.store.models import JobStatus
from server.store.records import JobRecord, RunStepRecord, WorkflowRunRecord
from server.store.store import Store, Tables
from server.store.transitions import finish_attempt
from server.store.workflows import StoredWorkflow
from server.validation import execution_spec

log = logging.getLogger(__name__)

BATCH = 200
# How many characters of versions' steps a process keeps between sweeps.
STEPS_CACHE_CHARS = 20_000_000
COMPLETED_EVENT = "workflow.completed"
FAILED_EVENT = "workflow.failed"
CANCELLED_EVENT = "workflow.cancelled"
# The log sorts by (time, id), and an emitted event's id (`evt_`) sorts before a job
# event's (`job_`): at the very time of the run's own job.completed, the workflow's event
# would read as coming before it. A microsecond later it reads as what it is, the end of
# the story (README, Workflows: Events).
_AFTER_THE_RUNS_JOB = timedelta(microseconds=1)


@dataclass(frozen=True)
class Started:
    """A run just stored, and the jobs of its first steps, to send once committed."""

    run_id: str
    queued: list[str]


async def start_run(
    tx: Tables,
    tenant_id: str,
    stored: StoredWorkflow,
    *,
    input: str,
    event_id: str | None,
    at: datetime,
    guard: PromptGuard,
) -> Started | None:
    """Store a run of the workflow's current version and queue its first steps.

    The parent job runs as the last declared step's agent (the one whose answer is the
    run's result); None when that agent is gone.
    """
    steps = steps_of(stored.steps)
    run_id = str(uuid.uuid4())
    job = NewJob(
        id=run_id,
        tenant_id=tenant_id,
        agent_id=steps[-1].agent_id,
        prompt=input_text(input),
        context_id=None,
        enable_adversarial=False,
        enable_self_correction=False,
        max_debate_rounds=1,
        queued_at=at,
    )
    if not await tx.jobs.queue(job):
        return None
    # Claimed with no lease: running, never sent to a worker, never taken as lost.
    attempt = await tx.jobs.claim(run_id, now=at, token=str(uuid.uuid4()), lease_until=None)  # type: ignore[arg-type]
    assert attempt is not None
    workflow = stored.workflow
    run = WorkflowRunRecord(
        run_id, tenant_id, workflow.id, workflow.version, input, event_id, at, None
    )
    await tx.workflows.add_run(run)
    parent = await tx.jobs.get(run_id, tenant_id=tenant_id)
    assert parent is not None
    return Started(run_id, await advance(tx, run, steps, parent, [], at=at, guard=guard))


async def advance(
    tx: Tables,
    run: WorkflowRunRecord,
    steps: tuple[Step, ...],
    job: JobRecord,
    started: list[RunStepRecord],
    *,
    at: datetime,
    guard: PromptGuard,
) -> list[str]:
    """Move one run forward: queue its ready steps, or record its end; the jobs queued."""
    if job.job_status.finished:  # ended some other way (retention, an operator)
        await tx.workflows.finish_run(run.run_id, at=at)
        return []
    by_name = {record.step_name: record for record in started}
    if job.cancel_requested:
        # Its steps were cancelled with it; the run ends once none of them still runs.
        await cancel_tree(tx, [job], at=at)
        if not await _unfinished(tx, run):
            await _end(tx, run, job, steps, by_name, EventType.CANCELLED, at=at)
        return []
    queued: list[str] = []
    if _failure(steps, by_name) is None:
        answers = {n: r.response or "" for n, r in by_name.items() if r.status == "completed"}
        for step in _ready(steps, by_name):
            record = await _queue_step(tx, run, job, step, answers, at=at, guard=guard)
            by_name[step.name] = record
            if record.job_id is not None:
                queued.append(record.job_id)
    if _failure(steps, by_name) is not None:
        # The steps still running are cancelled; the run fails once none of them runs.
        unfinished = await _unfinished(tx, run)
        await cancel_tree(tx, unfinished, at=at)
        if not unfinished:
            await _end(tx, run, job, steps, by_name, EventType.FAILED, at=at)
        return []
    if _all_completed(steps, by_name):
        await _end(tx, run, job, steps, by_name, EventType.COMPLETED, at=at)
    return queued


async def _queue_step(
    tx: Tables,
    run: WorkflowRunRecord,
    parent: JobRecord,
    step: Step,
    answers: dict[str, str],
    *,
    at: datetime,
    guard: PromptGuard,
) -> RunStepRecord:
    """Queue a step's child job, or record why it cannot be queued: its rendered prompt
    keeps an execute prompt's rules and passes the prompt guard, as any prompt does."""
    prompt = render(step.prompt, input_text(run.input), answers)
    error: str | None = None
    job_id: str | None = None
    try:
        spec = execution_spec(
            prompt=prompt,
            context_id=None,
            enable_adversarial=False,
            enable_self_correction=False,
            max_debate_rounds=None,
        )
        guard.check_prompt(spec.prompt)
    except (InvalidArgument, PermissionDenied) as refused:
        error = f"Its rendered prompt is refused: {refused.message}"
    else:
        child = NewJob(
            id=str(uuid.uuid4()),
            tenant_id=run.tenant_id,
            agent_id=step.agent_id,
            prompt=spec.prompt,
            context_id=None,
            enable_adversarial=False,
            enable_self_correction=False,
            max_debate_rounds=spec.max_debate_rounds,
            queued_at=at,
            parent_job_id=run.run_id,
            depth=parent.depth + 1,
        )
        if await tx.jobs.queue(child):
            job_id = child.id
        else:
            error = "Agent not found"
    await tx.workflows.add_step(run.run_id, step.name, job_id=job_id, error=error, at=at)
    status = JobStatus.PENDING if job_id is not None else None
    return RunStepRecord(run.run_id, step.name, job_id, error, status, None, None, 0, None, None)


def _failure(steps: tuple[Step, ...], by_name: dict[str, RunStepRecord]) -> str | None:
    """Why the run fails: its first declared step that failed, else the first one cancelled
    (by a client, or with its agent); None when no step did either."""
    records = [by_name[s.name] for s in steps if s.name in by_name]
    for record in records:
        if record.error is not None:
            return f"Step {record.step_name} failed: {record.error}"
        if record.status == JobStatus.FAILED:
            return f"Step {record.step_name} failed: {record.job_error}"
    for record in records:
        if record.status == JobStatus.CANCELLED:
            return f"Step {record.step_name} was cancelled"
    return None


async def _unfinished(tx: Tables, run: WorkflowRunRecord) -> list[JobRecord]:
    return [c for c in await tx.jobs.children([run.run_id]) if not c.job_status.finished]


def _ready(steps: tuple[Step, ...], by_name: dict[str, RunStepRecord]) -> list[Step]:
    """The steps not started whose dependencies all completed."""
    return [
        s
        for s in steps
        if s.name not in by_name
        and all(d in by_name and by_name[d].status == JobStatus.COMPLETED for d in s.depends_on)
    ]


def needs_a_look(
    steps: tuple[Step, ...], by_name: dict[str, RunStepRecord], status: str, cancelled: bool
) -> bool:
    """Whether a sweep has something to do for a run: a step to start, or an end to record.

    A run whose steps are all still running is left alone, so a sweep over many long runs
    costs a few statements, not a lock and a read per run.
    """
    return (
        cancelled
        or JobStatus(status).finished
        or _failure(steps, by_name) is not None
        or _all_completed(steps, by_name)
        or bool(_ready(steps, by_name))
    )


def _all_completed(steps: tuple[Step, ...], by_name: dict[str, RunStepRecord]) -> bool:
    return all(s.name in by_name and by_name[s.name].status == "completed" for s in steps)


async def _end(
    tx: Tables,
    run: WorkflowRunRecord,
    job: JobRecord,
    steps: tuple[Step, ...],
    by_name: dict[str, RunStepRecord],
    outcome: EventType,
    *,
    at: datetime,
) -> None:
    """Record the run's end on its parent job, emit its event, and stop reading it."""
    values: dict[str, Any] = {"status": JobStatus(outcome.value), "completed_at": at}
    data: dict[str, Any] = {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "version": run.version,
        "status": outcome.value,
        "steps": {s.name: by_name[s.name].response if s.name in by_name else None for s in steps},
    }
    event = EventSpec(outcome)
    if outcome is EventType.COMPLETED:
        last = by_name[steps[-1].name]
        values.update(
            response=last.response,
            tokens_used=sum(by_name[s.name].tokens_used or 0 for s in steps),
            context_hash=last.context_hash,
            merkle_root=last.merkle_root,
        )
        data["response"] = last.response
        kind = COMPLETED_EVENT
    elif outcome is EventType.FAILED:
        error = _failure(steps, by_name)
        values.update(error=error, last_error=error, response="")
        data["error"] = error
        event = EventSpec(outcome, error=error)
        kind = FAILED_EVENT
    else:
        kind = CANCELLED_EVENT
    assert job.run_token is not None
    change = finish_attempt(job.id, token=job.run_token, values=values, event=event, at=at)
    if not await tx.jobs.apply(change):  # pragma: no cover - the run's job row is locked
        return
    await tx.event_log.add(
        id=f"{EMITTED_ID_PREFIX}{uuid.uuid4()}",
        tenant_id=run.tenant_id,
        type=kind,
        data=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        created_at=at + _AFTER_THE_RUNS_JOB,
    )
    await tx.workflows.finish_run(run.run_id, at=at)


class Orchestrator:
    """Moves every open run forward, a batch per sweep; any number of processes may sweep."""

    def __init__(
        self,
        store: Store,
        queue: BatchQueue,
        *,
        clock: Clock = utc_now,
        prompt_guard: PromptGuard | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._guard = prompt_guard or PromptGuard()
        # Versions never change, so their steps are kept once read.
        self._steps: dict[tuple[str, int], tuple[Step, ...]] = {}
        self._cached_chars = 0

    async def close(self) -> None:
        """Close the orchestrator's connections."""
        await self._store.db.close()

    async def sweep(self) -> int:
        """Advance every open run, a batch (one transaction) at a time; how many were read.

        Every batch is read, not only the oldest: runs still waiting on their steps must
        not keep newer runs, another tenant's among them, from moving.
        """
        read = 0
        after: Cursor | None = None
        while True:
            runs = await self._sweep_batch(after)
            read += len(runs)
            if len(runs) < BATCH:
                return read
            after = Cursor(runs[-1].created_at, runs[-1].run_id)

    async def _sweep_batch(self, after: Cursor | None) -> list[WorkflowRunRecord]:
        now = self._clock()
        async with self._store.transaction() as tx:
            runs = await tx.workflows.open_runs(limit=BATCH, after=after)
            run_ids = [run.run_id for run in runs]
            started = await tx.workflows.steps_of(run_ids)
            states = await tx.workflows.run_states(run_ids)
            queued: list[str] = []
            for run in runs:
                steps = await self._steps_of(tx, run)
                mine = {s.step_name: s for s in started if s.run_id == run.run_id}
                state = states.get(run.run_id)
                if state is not None and not needs_a_look(steps, mine, *state):
                    continue
                await tx.workflows.lock_job(run.run_id)
                job = await tx.jobs.get(run.run_id, tenant_id=run.tenant_id)
                if job is None:  # removed by retention
                    await tx.workflows.finish_run(run.run_id, at=now)
                    continue
                # Read again under the lock: a step may have finished since.
                fresh = await tx.workflows.steps_of([run.run_id])
                queued += await advance(tx, run, steps, job, fresh, at=now, guard=self._guard)
        if queued:
            await self._send(queued)
        return runs

    async def _steps_of(self, tx: Tables, run: WorkflowRunRecord) -> tuple[Step, ...]:
        key = (run.workflow_id, run.version)
        if key not in self._steps:
            stored = await tx.workflows.version_steps(*key)
            assert stored is not None
            # A version's steps are up to 20 prompts of 50,000 characters, and a client
            # makes a version per PATCH: kept without bound, a tenant could fill the
            # memory of every process. Past the budget they are all read afresh.
            if self._cached_chars + len(stored) > STEPS_CACHE_CHARS:
                self._steps.clear()
                self._cached_chars = 0
            self._steps[key] = steps_of(stored)
            self._cached_chars += len(stored)
        return self._steps[key]

    async def _send(self, job_ids: list[str]) -> None:
        try:
            # The broker's client blocks; the sweep's loop goes on meanwhile.
            await asyncio.to_thread(self._queue.enqueue_many, job_ids)
        except Exception:
            # The jobs are pending in the database: the recovery sweeper re-sends them.
            log.warning("could not send %d step jobs; the sweeper re-sends them", len(job_ids))
