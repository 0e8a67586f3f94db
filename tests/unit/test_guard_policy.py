"""The access policy names every RPC once; the server will not start without it."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from google.protobuf.descriptor import FileDescriptor

import agentq.v1
from server.api import policy
from server.api.guard import Guard
from server.errors import PermissionDenied
from server.service.access import SCOPES
from tests.unit.guard_calls import bearer, refusal


def _service_files() -> list[FileDescriptor]:
    names = [m.name for m in pkgutil.iter_modules(agentq.v1.__path__)]
    modules = [
        importlib.import_module(f"agentq.v1.{n}") for n in names if n.endswith("_service_pb2")
    ]
    return [module.DESCRIPTOR for module in modules]


def test_every_rpc_of_agentq_v1_is_in_exactly_one_access_table() -> None:
    methods = policy.method_names(_service_files())
    tables = {"PUBLIC": policy.PUBLIC, "ADMIN": policy.ADMIN, "ACCESS": policy.ACCESS.keys()}

    services = {m.split("/")[1] for m in methods}
    assert services >= {
        f"agentq.v1.{s}Service" for s in ("Agent", "Job", "System", "Admin", "Token")
    }
    placed = {m: [name for name, table in tables.items() if m in table] for m in methods}
    assert {m: found for m, found in placed.items() if len(found) != 1} == {}
    policy.check_complete(_service_files())


def test_the_access_table_names_only_rpcs_that_exist_and_scopes_that_exist() -> None:
    methods = policy.method_names(_service_files())
    ours = {m for m in policy.PUBLIC | policy.ADMIN | policy.ACCESS.keys() if "/agentq." in m}

    assert ours - methods == set()
    assert {a.scope for a in policy.ACCESS.values()} <= {*SCOPES, None}
    assert policy.ACCESS.keys() >= policy.KEY_EXCHANGE


def test_an_rpc_missing_from_the_policy_stops_the_server_from_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(policy.ACCESS, "/agentq.v1.JobService/WatchJob")
    monkeypatch.setattr(policy, "ADMIN", policy.ADMIN - {"/agentq.v1.AdminService/RevokeApiKey"})

    with pytest.raises(RuntimeError) as caught:
        policy.check_complete(_service_files())

    assert str(caught.value) == (
        "RPCs missing from the access policy: /agentq.v1.AdminService/RevokeApiKey, "
        "/agentq.v1.JobService/WatchJob"
    )


async def test_a_method_in_no_table_is_denied_rather_than_let_through(guard: Guard) -> None:
    error = await refusal(guard, "/agentq.v1.AgentService/Undeclared", bearer(role="admin"))

    assert isinstance(error, PermissionDenied)


def test_a_context_is_read_and_deleted_with_the_job_scopes_by_any_role_that_runs_jobs() -> None:
    # A context is made of jobs' turns: reading it is reading jobs, deleting it changing them.
    execute = policy.ACCESS["/agentq.v1.AgentService/Execute"]
    get = policy.ACCESS["/agentq.v1.ContextService/GetContext"]
    delete = policy.ACCESS["/agentq.v1.ContextService/DeleteContext"]

    assert (get.roles, get.scope) == (execute.roles, "jobs:read")
    assert (delete.roles, delete.scope) == (execute.roles, "jobs:write")


def test_the_event_log_is_read_and_written_with_the_job_scopes_by_any_role_that_runs_jobs() -> None:
    # The log is mostly jobs' events; emitting one is a write like queueing a job.
    execute = policy.ACCESS["/agentq.v1.AgentService/Execute"]
    reads = [policy.ACCESS[f"/agentq.v1.EventService/{m}"] for m in ("ListEvents", "GetEvent")]
    emit = policy.ACCESS["/agentq.v1.EventService/CreateEvent"]

    assert {(a.roles, a.scope) for a in reads} == {(execute.roles, "jobs:read")}
    assert (emit.roles, emit.scope) == (execute.roles, "jobs:write")
