"""The gRPC backend the shim calls: one grpc.aio channel, metadata and deadline per call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from agentq.v1 import agent_service_pb2_grpc, job_service_pb2_grpc, system_service_pb2_grpc

Reply = TypeVar("Reply")


def _metadata_value(value: str) -> str:
    # gRPC metadata is printable ASCII; anything else is replaced so the
    # server still sees (and rejects) the header rather than the shim deciding.
    return "".join(c if " " <= c <= "~" else "?" for c in value)


class Backend:
    """Stubs of every agentq.v1 service over one channel to the gRPC server."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._timeout_s = timeout_s
        self.agents = agent_service_pb2_grpc.AgentServiceStub(self._channel)
        self.jobs = job_service_pb2_grpc.JobServiceStub(self._channel)
        self.system = system_service_pb2_grpc.SystemServiceStub(self._channel)

    async def call(
        self,
        method: Callable[..., Awaitable[Reply]],
        request: Any,
        *,
        authorization: str | None,
        request_id: str,
    ) -> Reply:
        """One RPC carrying the caller's Authorization and request id as metadata."""
        metadata = [("x-request-id", request_id)]
        if authorization is not None:
            metadata.append(("authorization", _metadata_value(authorization)))
        return await method(request, metadata=metadata, timeout=self._timeout_s)

    def watch(self, request: Any, *, authorization: str | None, request_id: str) -> Any:
        """Open a WatchJob stream; it has no deadline, the client decides how long to watch."""
        metadata = [("x-request-id", request_id)]
        if authorization is not None:
            metadata.append(("authorization", _metadata_value(authorization)))
        return self.jobs.WatchJob(request, metadata=metadata)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
