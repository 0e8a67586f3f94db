"""Every agentq.v1 field has a google.api.field_behavior; REQUIRED is what the server requires.

For each RPC, the request with only its REQUIRED fields set passes the server's checks, and
the same request without any one of them is INVALID_ARGUMENT naming that field: a REQUIRED
annotation the server does not enforce, or a check on a field not marked REQUIRED, fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.api import field_behavior_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from agentq.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    agent_pb2,
    agent_service_pb2,
    agent_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    system_service_pb2,
    token_service_pb2,
)
from tests.e2e.access_helpers import ADMIN_TOKEN, with_admin
from tests.e2e.harness import ServerThread, rpc_error, running_server, settings_for, token

MODULES: list[ModuleType] = [
    admin_service_pb2,
    agent_pb2,
    agent_service_pb2,
    job_pb2,
    job_service_pb2,
    system_service_pb2,
    token_service_pb2,
]
STUBS = {
    "agentq.v1.AdminService": admin_service_pb2_grpc.AdminServiceStub,
    "agentq.v1.AgentService": agent_service_pb2_grpc.AgentServiceStub,
    "agentq.v1.JobService": job_service_pb2_grpc.JobServiceStub,
}
# A valid value of each REQUIRED field, by its name.
VALID = {
    "agent_id": str(uuid.uuid4()),
    "job_id": str(uuid.uuid4()),
    "key_id": str(uuid.uuid4()),
    "tenant_id": "field-behavior",
    "name": "field behavior",
    "role": "You answer briefly.",
    "prompt": "What is 2+2?",
    "scopes": ["jobs:read"],
}
REQUIRED = field_behavior_pb2.FieldBehavior.REQUIRED


def _messages() -> Iterator[Descriptor]:
    for module in MODULES:
        yield from module.DESCRIPTOR.message_types_by_name.values()


def _behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _methods() -> Iterator[MethodDescriptor]:
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name in STUBS:
                yield from service.methods


def _required(message: Descriptor) -> list[str]:
    return [f.name for f in message.fields if REQUIRED in _behaviors(f)]


def test_every_field_of_every_message_has_a_field_behavior() -> None:
    unannotated = [
        f"{message.full_name}.{field.name}"
        for message in _messages()
        for field in message.fields
        if not _behaviors(field)
    ]

    assert not unannotated, f"fields without (google.api.field_behavior): {unannotated}"


def test_the_rpcs_with_required_fields_are_those_this_test_calls() -> None:
    calls = {m.full_name for m in _methods() if _required(m.input_type)}

    assert calls >= {
        "agentq.v1.AgentService.CreateAgent",
        "agentq.v1.AgentService.Execute",
        "agentq.v1.JobService.GetJob",
        "agentq.v1.AdminService.CreateApiKey",
    }
    for method in _methods():
        missing = set(_required(method.input_type)) - VALID.keys()
        assert not missing, f"{method.full_name}: no valid value for {missing}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    folder: Path = tmp_path_factory.mktemp("field-behavior")
    settings = with_admin(settings_for(database_url=f"sqlite:///{folder / 'agentq.db'}"))
    with running_server(settings, in_process_workers=True) as running:
        yield running


def _call(
    server: ServerThread, method: MethodDescriptor, fields: dict[str, Any]
) -> grpc.RpcError | None:
    """Call `method` with a request of `fields`; the error it ended with, if any."""
    service = method.containing_service.full_name
    if service == "agentq.v1.AdminService":
        metadata = (("x-admin-api-key", ADMIN_TOKEN),)
    else:
        metadata = (("authorization", f"Bearer {token('field-behavior', role='admin')}"),)
    request = message_factory.GetMessageClass(method.input_type)(**fields)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        rpc = getattr(STUBS[service](channel), method.name)
        try:
            response = rpc(request, metadata=metadata, timeout=10)
            if method.server_streaming:
                # A stream reports a refused request when it is read.
                next(iter(response), None)
        except grpc.RpcError as error:
            return error
    return None


@pytest.mark.parametrize(
    "method", [m for m in _methods() if _required(m.input_type)], ids=lambda m: m.full_name
)
def test_the_required_fields_are_exactly_those_the_server_rejects_when_missing(
    server: ServerThread, method: MethodDescriptor
) -> None:
    required = _required(method.input_type)
    fields = {name: VALID[name] for name in required}

    # The ids are random: an unknown one may be NOT_FOUND, but never a bad request.
    accepted = _call(server, method, fields)
    assert accepted is None or accepted.code() != grpc.StatusCode.INVALID_ARGUMENT, (
        f"{method.full_name} refused a request with all its REQUIRED fields: "
        f"{rpc_error(accepted) if accepted else ''}"
    )
    for name in required:
        refused = _call(server, method, {k: v for k, v in fields.items() if k != name})
        assert refused is not None, f"{method.full_name} accepted a request without {name}"
        code, _, _, violations = rpc_error(refused)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (
            f"{method.full_name} without {name}: {code}"
        )
        assert name in [field for field, _ in violations], (method.full_name, violations)
