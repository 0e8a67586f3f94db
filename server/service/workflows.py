"""The workflow side of the service layer: define workflows, start and read their runs.

The rules of a definition and its templates are in `workflow_rules.py`; how a run moves
forward in `orchestrator.py` (README, Workflows; docs/contract.md §3).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.auth.principal import Principal
from server.clock import Clock, utc_now
from server.errors import FieldViolation, InvalidArgument, NotFound
from server.paging import Cursor, Page, PageTokens
from server.prompt_guard import PromptGuard
from server.service.event_log import LogEvent
from server.service.jobs import JobService, Sender
from server.service.orchestrator import start_run
from server.service.workflow_rules import (
    MAX_STEPS,
    Definition,
    Step,
    check_definition,
    check_mask,
    input_json,
    steps_json,
    steps_of,
)
from server.store.models import JobStatus
from server.store.records import WorkflowRecord
from server.store.store import Store, Tables
from server.store.workflows import RunView, StoredWorkflow

AGENT_NOT_FOUND = "Agent not found"


def not_found(workflow_id: str) -> NotFound:
    """The answer for a workflow the caller's tenant does not have."""
    return NotFound(f"Workflow {workflow_id} not found")


@dataclass(frozen=True)
class WorkflowView:
    """A workflow at its current version, as a client sees it."""

    id: str
    name: str
    trigger_event_type: str | None
    steps: tuple[Step, ...]
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, stored: StoredWorkflow) -> WorkflowView:
        w = stored.workflow
        steps = steps_of(stored.steps)
        return cls(w.id, w.name, w.trigger_event_type, steps, w.version, w.created_at, w.updated_at)


@dataclass(frozen=True)
class StepRun:
    """One step of a run: its job once queued, its status, answer or error."""

    name: str
    job_id: str | None
    status: JobStatus
    response: str | None
    error: str | None


@dataclass(frozen=True)
class RunDetail:
    """A run as a client sees it: its parent job's state and each step's."""

    id: str
    workflow_id: str
    version: int
    status: JobStatus
    input: Any
    steps: list[StepRun]
    response: str | None
    error: str | None
    event_id: str | None
    created_at: datetime
    completed_at: datetime | None


class WorkflowService:
    """Workflows of the caller's tenant, their runs, and the runs emitted events start."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        clock: Clock = utc_now,
        page_tokens: PageTokens | None = None,
        prompt_guard: PromptGuard | None = None,
        jobs: JobService | None = None,
    ) -> None:
        """With `jobs`, a run started by a client counts against the tenant's cap of
        unfinished jobs (README, Access control), as an execute does."""
        self._store = store
        self._jobs = jobs
        self._sender = sender
        self._clock = clock
        self._tokens = page_tokens or PageTokens()
        self._guard = prompt_guard or PromptGuard()

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        trigger_event_type: str | None,
        steps: Sequence[Step],
    ) -> WorkflowView:
        """Store a workflow at version 1, once every rule holds (all reported at once)."""
        definition = await self._checked(principal.tenant_id, name, trigger_event_type, steps)
        now = self._clock()
        tenant = principal.tenant_id
        workflow = WorkflowRecord(
            str(uuid.uuid4()),
            tenant,
            definition.name,
            definition.trigger_event_type,
            1,
            now,
            now,
            None,
        )
        await self._store.workflows.add(workflow, steps_json(definition.steps))
        return await self.get(principal, workflow.id)

    async def _checked(
        self, tenant: str, name: str, trigger_event_type: str | None, steps: Sequence[Step]
    ) -> Definition:
        """The definition's field rules, then whether each step's agent is the tenant's."""
        try:
            definition = check_definition(name, trigger_event_type, steps)
        except InvalidArgument as error:
            # The agents are looked up only once the ids and the count are well formed.
            if not 1 <= len(steps) <= MAX_STEPS or any(
                v.field.endswith(".agent_id") for v in error.violations
            ):
                raise
            violations = error.violations + await self._agent_violations(tenant, steps)
            raise InvalidArgument(violations) from None
        # As an execute's prompt, a template that reads as an injection is refused (403)
        # after the field rules (README, Prompt guard).
        for step in definition.steps:
            self._guard.check_prompt(step.prompt)
        violations = await self._agent_violations(tenant, definition.steps)
        if violations:
            raise InvalidArgument(violations)
        return definition

    async def _agent_violations(self, tenant: str, steps: Sequence[Step]) -> list[FieldViolation]:
        violations = []
        live: dict[str, bool] = {}
        for index, step in enumerate(steps):
            agent_id = step.agent_id.lower()
            if agent_id not in live:
                agent = await self._store.agents.get(agent_id, tenant_id=tenant)
                live[agent_id] = agent is not None and agent.deleted_at is None
            if not live[agent_id]:
                field = f"steps[{index}].agent_id"
                violations.append(FieldViolation(field, f"Invalid {field}: {AGENT_NOT_FOUND}"))
        return violations

    async def get(self, principal: Principal, workflow_id: str) -> WorkflowView:
        """The tenant's workflow; NOT_FOUND for another tenant's, unknown or deleted ones."""
        stored = await self._store.workflows.get(principal.tenant_id, workflow_id)
        if stored is None:
            raise not_found(workflow_id)
        return WorkflowView.of(stored)

    async def list_workflows(
        self, principal: Principal, *, size: int | None, token: str
    ) -> Page[WorkflowView]:
        """A page of the tenant's workflows, newest first."""
        tenant = principal.tenant_id
        page = await self._tokens.fetch_page(
            size=size,
            token=token,
            scope=f"workflows:{tenant}",
            fetch=lambda after, limit: self._store.workflows.page(tenant, after=after, limit=limit),
            cursor=lambda w: Cursor(w.workflow.created_at, w.workflow.id),
        )
        return Page([WorkflowView.of(w) for w in page.items], page.size, page.next_token)

    async def update(
        self,
        principal: Principal,
        workflow_id: str,
        *,
        mask: Sequence[str],
        name: str,
        trigger_event_type: str | None,
        steps: Sequence[Step],
    ) -> WorkflowView:
        """Store the masked fields as the next version; runs keep the version they started."""
        fields = check_mask(mask)
        current = await self.get(principal, workflow_id)
        definition = await self._checked(
            principal.tenant_id,
            name if "name" in fields else current.name,
            trigger_event_type if "trigger" in fields else current.trigger_event_type,
            steps if "steps" in fields else current.steps,
        )
        version = await self._store.workflows.update(
            principal.tenant_id,
            workflow_id,
            name=definition.name,
            trigger_event_type=definition.trigger_event_type,
            steps=steps_json(definition.steps),
            at=self._clock(),
        )
        if version is None:
            raise not_found(workflow_id)
        return await self.get(principal, workflow_id)

    async def delete(self, principal: Principal, workflow_id: str) -> None:
        """Delete the workflow; its runs go on and stay readable as jobs."""
        if not await self._store.workflows.delete(
            principal.tenant_id, workflow_id, at=self._clock()
        ):
            raise not_found(workflow_id)

    async def run(self, principal: Principal, workflow_id: str, value: Any) -> RunDetail:
        """Start a run of the workflow's current version with this input."""
        stored_input = input_json(value)
        tenant = principal.tenant_id
        async with self._store.transaction() as tx:
            stored = await tx.workflows.get(tenant, workflow_id)
            if stored is None:
                raise not_found(workflow_id)
            if self._jobs is not None:
                await self._jobs.check_capacity(tx, tenant)
            started = await start_run(
                tx,
                tenant,
                stored,
                input=stored_input,
                event_id=None,
                at=self._clock(),
                guard=self._guard,
            )
            if started is None:
                raise NotFound(AGENT_NOT_FOUND)
        self.send(started.queued)
        return await self.get_run(principal, workflow_id, started.run_id)

    async def emitted(self, tx: Tables, tenant_id: str, event: LogEvent) -> list[str]:
        """Start a run of each workflow this event's type triggers, with its data as input.

        Each run it starts counts against the tenant's cap of unfinished jobs as a client's
        run does, the runs started before it included (so one event that triggers many
        workflows is bounded too): a refusal (429) stores no event and no run.
        """
        queued: list[str] = []
        data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
        for stored in await tx.workflows.triggered_by(tenant_id, event.type):
            if self._jobs is not None:
                await self._jobs.check_capacity(tx, tenant_id)
            started = await start_run(
                tx,
                tenant_id,
                stored,
                input=data,
                event_id=event.id,
                at=event.created_at,
                guard=self._guard,
            )
            # A workflow whose result agent is gone has nothing to run as.
            if started is not None:
                queued += started.queued
        return queued

    def send(self, job_ids: list[str]) -> None:
        """Send the messages of committed step jobs."""
        for job_id in job_ids:
            self._sender.send(job_id)

    async def list_runs(
        self, principal: Principal, workflow_id: str, *, size: int | None, token: str
    ) -> Page[RunDetail]:
        """A page of the workflow's runs, newest first."""
        await self.get(principal, workflow_id)
        tenant = principal.tenant_id
        page = await self._tokens.fetch_page(
            size=size,
            token=token,
            scope=f"workflow-runs:{tenant}:{workflow_id}",
            fetch=lambda after, limit: self._store.workflows.runs_page(
                tenant, workflow_id, after=after, limit=limit
            ),
            cursor=lambda r: Cursor(r.run.created_at, r.run.run_id),
        )
        return Page(await self._details(page.items), page.size, page.next_token)

    async def get_run(self, principal: Principal, workflow_id: str, run_id: str) -> RunDetail:
        """One run of the tenant's workflow; NOT_FOUND for another tenant's and unknown ones."""
        await self.get(principal, workflow_id)
        view = await self._store.workflows.get_run(principal.tenant_id, workflow_id, run_id)
        if view is None:
            raise NotFound(f"Run {run_id} not found")
        return (await self._details([view]))[0]

    async def _details(self, views: Sequence[RunView]) -> list[RunDetail]:
        started = await self._store.workflows.steps_of([v.run.run_id for v in views])
        details = []
        for view in views:
            run = view.run
            declared = await self._store.workflows.version_steps(run.workflow_id, run.version)
            records = {s.step_name: s for s in started if s.run_id == run.run_id}
            steps = []
            for step in steps_of(declared or "[]"):
                record = records.get(step.name)
                if record is None:
                    steps.append(StepRun(step.name, None, JobStatus.PENDING, None, None))
                    continue
                status = JobStatus(record.status) if record.status else JobStatus.FAILED
                error = record.error if record.error is not None else record.job_error
                steps.append(StepRun(step.name, record.job_id, status, record.response, error))
            details.append(
                RunDetail(
                    id=run.run_id,
                    workflow_id=run.workflow_id,
                    version=run.version,
                    status=JobStatus(view.status),
                    input=json.loads(run.input),
                    steps=steps,
                    response=view.response if view.status == JobStatus.COMPLETED else None,
                    error=view.error,
                    event_id=run.event_id,
                    created_at=run.created_at,
                    completed_at=view.completed_at,
                )
            )
        return details
