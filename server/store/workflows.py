"""Workflows, their immutable versions, their runs and the steps of runs (README, Workflows).

A workflow row holds its name, trigger and current version; each version's steps are a
row of `workflow_versions`, never changed, so a run reads the steps it started with. A
run is a parent job (`jobs`) plus a `workflow_runs` row naming its workflow, version and
input; each started step is a `workflow_run_steps` row keyed by (run, step), so a step
is queued at most once however often the orchestrator (`server/service/orchestrator.py`)
looks at its run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, bindparam, insert, select, update

from server.paging import Cursor
from server.store.database import Row, Statements
from server.store.pages import newest_first, oldest_first
from server.store.records import RunStepRecord, WorkflowRecord, WorkflowRunRecord
from server.store.tables import (
    jobs,
    workflow_run_steps,
    workflow_runs,
    workflow_versions,
    workflows,
)

R = TypeVar("R")
_WORKFLOW = WorkflowRecord.columns(workflows)
_RUN = WorkflowRunRecord.columns(workflow_runs)
_LIVE = workflows.c.deleted_at.is_(None)
_OF_TENANT = workflows.c.tenant_id == bindparam("tenant_id")


@dataclass(frozen=True, slots=True)
class StoredWorkflow:
    """A workflow and the steps of its current version, as stored (JSON)."""

    workflow: WorkflowRecord
    steps: str

    @classmethod
    def of(cls, row: Row) -> StoredWorkflow:
        workflow, (steps,) = _split(row, WorkflowRecord, len(_WORKFLOW))
        return cls(workflow, steps)


@dataclass(frozen=True, slots=True)
class RunView:
    """A run and the state of its parent job."""

    run: WorkflowRunRecord
    status: str
    response: str | None
    error: str | None
    completed_at: datetime | None

    @classmethod
    def of(cls, row: Row) -> RunView:
        run, job = _split(row, WorkflowRunRecord, len(_RUN))
        return cls(run, *job)


def _split(row: Row, record: type[R], count: int) -> tuple[R, tuple[Any, ...]]:
    """The record of a row's first `count` columns, and the columns after them."""
    values = tuple(row.values())
    return record(*values[:count]), values[count:]


def _with_steps() -> Select[Any]:
    """Live workflows with the steps of their current version."""
    current = and_(
        workflow_versions.c.workflow_id == workflows.c.id,
        workflow_versions.c.version == workflows.c.version,
    )
    return (
        select(*_WORKFLOW, workflow_versions.c.steps)
        .select_from(workflows.join(workflow_versions, current))
        .where(_LIVE, _OF_TENANT)
    )


_GET = _with_steps().where(workflows.c.id == bindparam("id"))
_TRIGGERED = _with_steps().where(workflows.c.trigger_event_type == bindparam("event_type"))
_ADD = insert(workflows)
_ADD_VERSION = insert(workflow_versions)
# Bound names differ from the columns': an UPDATE keeps those for its SET clause.
_THIS_LIVE_ONE = (
    workflows.c.id == bindparam("b_id"),
    workflows.c.tenant_id == bindparam("b_tenant_id"),
    _LIVE,
)
_BUMP = (
    update(workflows)
    .where(*_THIS_LIVE_ONE)
    .values(
        version=workflows.c.version + 1,
        name=bindparam("b_name"),
        trigger_event_type=bindparam("b_trigger"),
        updated_at=bindparam("b_at", type_=workflows.c.updated_at.type),
    )
    .returning(workflows.c.version)
)
_DELETE = (
    update(workflows)
    .where(*_THIS_LIVE_ONE)
    .values(deleted_at=bindparam("b_at", type_=workflows.c.deleted_at.type))
    .returning(workflows.c.id)
)
_VERSION_STEPS = select(workflow_versions.c.steps).where(
    workflow_versions.c.workflow_id == bindparam("workflow_id"),
    workflow_versions.c.version == bindparam("version"),
)
_RUN_VIEW = select(
    *_RUN, jobs.c.status, jobs.c.response, jobs.c.error, jobs.c.completed_at
).select_from(workflow_runs.join(jobs, jobs.c.id == workflow_runs.c.run_id))
_GET_RUN = _RUN_VIEW.where(
    workflow_runs.c.run_id == bindparam("run_id"),
    workflow_runs.c.workflow_id == bindparam("workflow_id"),
    workflow_runs.c.tenant_id == bindparam("tenant_id"),
)
_ADD_RUN = insert(workflow_runs)
_FINISH_RUN = (
    update(workflow_runs)
    .where(workflow_runs.c.run_id == bindparam("b_run_id"))
    .values(finished_at=bindparam("b_at", type_=workflow_runs.c.finished_at.type))
)
_STEPS = (
    select(
        workflow_run_steps.c.run_id,
        workflow_run_steps.c.step_name,
        workflow_run_steps.c.job_id,
        workflow_run_steps.c.error,
        jobs.c.status,
        jobs.c.response,
        jobs.c.error.label("job_error"),
        jobs.c.tokens_used,
        jobs.c.context_hash,
        jobs.c.merkle_root,
    )
    .select_from(workflow_run_steps.outerjoin(jobs, jobs.c.id == workflow_run_steps.c.job_id))
    .where(workflow_run_steps.c.run_id.in_(bindparam("run_ids", expanding=True)))
)
_ADD_STEP = insert(workflow_run_steps)
_RUN_STATES = select(jobs.c.id, jobs.c.status, jobs.c.cancel_requested).where(
    jobs.c.id.in_(bindparam("ids", expanding=True))
)
# The run's parent job, locked: a cancel (an UPDATE of that row) waits for the step
# being queued, and then finds it among the children it cancels.
_LOCK_JOB = select(jobs.c.id).where(jobs.c.id == bindparam("id")).with_for_update()
_DELETE_RUNS = workflow_runs.delete().where(
    workflow_runs.c.run_id.in_(bindparam("ids", expanding=True))
)
_DELETE_RUN_STEPS = workflow_run_steps.delete().where(
    workflow_run_steps.c.run_id.in_(bindparam("ids", expanding=True))
)


@functools.cache
def _page(after: bool) -> Select[Any]:
    return newest_first(_with_steps(), workflows.c.created_at, workflows.c.id, after=after)


@functools.cache
def _open_runs(after: bool) -> Select[Any]:
    query = select(*_RUN).where(workflow_runs.c.finished_at.is_(None))
    at, key = workflow_runs.c.created_at, workflow_runs.c.run_id
    return oldest_first(query, at, key, after=after).with_for_update(skip_locked=True)


@functools.cache
def _runs_page(after: bool) -> Select[Any]:
    query = _RUN_VIEW.where(
        workflow_runs.c.workflow_id == bindparam("workflow_id"),
        workflow_runs.c.tenant_id == bindparam("tenant_id"),
    )
    return newest_first(query, workflow_runs.c.created_at, workflow_runs.c.run_id, after=after)


class Workflows:
    """Workflows of one tenant, their versions and runs; open runs for the orchestrator."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def add(self, workflow: WorkflowRecord, steps: str) -> None:
        """Store a new workflow and its first version, together."""
        async with self._run.atomic() as run:
            await run.run(_ADD, workflow.values())
            await run.run(_ADD_VERSION, _version(workflow.id, 1, steps, workflow.created_at))

    async def get(self, tenant_id: str, workflow_id: str) -> StoredWorkflow | None:
        """The tenant's live workflow with its current steps; None if gone or another's."""
        row = await self._run.one(_GET, {"tenant_id": tenant_id, "id": workflow_id})
        return None if row is None else StoredWorkflow.of(row)

    async def page(
        self, tenant_id: str, *, after: Cursor | None, limit: int
    ) -> list[StoredWorkflow]:
        """Up to `limit` of the tenant's live workflows, newest first, after `after`."""
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        return [
            StoredWorkflow.of(row) for row in await self._run.all(_page(after is not None), params)
        ]

    async def triggered_by(self, tenant_id: str, event_type: str) -> list[StoredWorkflow]:
        """The tenant's live workflows whose trigger is this event type."""
        rows = await self._run.all(_TRIGGERED, {"tenant_id": tenant_id, "event_type": event_type})
        return [StoredWorkflow.of(row) for row in rows]

    async def update(
        self,
        tenant_id: str,
        workflow_id: str,
        *,
        name: str,
        trigger_event_type: str | None,
        steps: str,
        at: datetime,
    ) -> int | None:
        """Store the next version; its number, or None when the workflow is gone."""
        async with self._run.atomic() as run:
            params = {"b_id": workflow_id, "b_tenant_id": tenant_id, "b_name": name, "b_at": at}
            row = await run.one(_BUMP, {**params, "b_trigger": trigger_event_type})
            if row is None:
                return None
            version = int(row["version"])
            await run.run(_ADD_VERSION, _version(workflow_id, version, steps, at))
        return version

    async def delete(self, tenant_id: str, workflow_id: str, *, at: datetime) -> bool:
        """Mark the tenant's workflow deleted; False if it was not there."""
        params = {"b_id": workflow_id, "b_tenant_id": tenant_id, "b_at": at}
        return await self._run.one(_DELETE, params) is not None

    async def version_steps(self, workflow_id: str, version: int) -> str | None:
        """The steps (JSON) of one version of a workflow."""
        row = await self._run.one(_VERSION_STEPS, {"workflow_id": workflow_id, "version": version})
        return None if row is None else str(row["steps"])

    # Runs.

    async def add_run(self, run: WorkflowRunRecord) -> None:
        """Store the link of a run's parent job to its workflow, version and input."""
        await self._run.run(_ADD_RUN, run.values())

    async def get_run(self, tenant_id: str, workflow_id: str, run_id: str) -> RunView | None:
        """The tenant's run of this workflow, with its job's state."""
        params = {"tenant_id": tenant_id, "workflow_id": workflow_id, "run_id": run_id}
        row = await self._run.one(_GET_RUN, params)
        return None if row is None else RunView.of(row)

    async def runs_page(
        self, tenant_id: str, workflow_id: str, *, after: Cursor | None, limit: int
    ) -> list[RunView]:
        """Up to `limit` runs of the workflow, newest first, after `after`."""
        params: dict[str, Any] = {"tenant_id": tenant_id, "workflow_id": workflow_id}
        params["limit"] = limit
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        rows = await self._run.all(_runs_page(after is not None), params)
        return [RunView.of(row) for row in rows]

    async def open_runs(
        self, *, limit: int, after: Cursor | None = None
    ) -> list[WorkflowRunRecord]:
        """Runs not yet finished, oldest first, after `after`, locked (others' locked ones
        are skipped)."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        rows = await self._run.all(_open_runs(after is not None), params)
        return [WorkflowRunRecord.of(row) for row in rows]

    async def finish_run(self, run_id: str, *, at: datetime) -> None:
        """Mark a run finished: the orchestrator reads it no more."""
        await self._run.run(_FINISH_RUN, {"b_run_id": run_id, "b_at": at})

    async def steps_of(self, run_ids: list[str]) -> list[RunStepRecord]:
        """The started steps of these runs, with their child jobs' state."""
        if not run_ids:
            return []
        rows = await self._run.all(_STEPS, {"run_ids": run_ids})
        return [RunStepRecord.of(row) for row in rows]

    async def run_states(self, run_ids: list[str]) -> dict[str, tuple[str, bool]]:
        """The status and cancel request of these runs' parent jobs, by id."""
        if not run_ids:
            return {}
        rows = await self._run.all(_RUN_STATES, {"ids": run_ids})
        return {row["id"]: (row["status"], bool(row["cancel_requested"])) for row in rows}

    async def add_step(
        self, run_id: str, step_name: str, *, job_id: str | None, error: str | None, at: datetime
    ) -> None:
        """Record a started step; DuplicateKey when it was started already."""
        values = {"run_id": run_id, "step_name": step_name, "job_id": job_id, "error": error}
        await self._run.run(_ADD_STEP, {**values, "created_at": at})

    async def lock_job(self, job_id: str) -> None:
        """Hold the row lock of a run's parent job until the transaction ends."""
        await self._run.one(_LOCK_JOB, {"id": job_id})

    async def delete_runs(self, run_ids: list[str]) -> None:
        """Remove the runs of these parent jobs and their steps (retention)."""
        if run_ids:
            await self._run.run(_DELETE_RUN_STEPS, {"ids": run_ids})
            await self._run.run(_DELETE_RUNS, {"ids": run_ids})


def _version(workflow_id: str, version: int, steps: str, at: datetime) -> dict[str, Any]:
    return {"workflow_id": workflow_id, "version": version, "steps": steps, "created_at": at}
