"""The asyncio client: `AsyncClient(url, token=... | api_key=...)`.

It holds the one implementation of the calls, retries, deadlines, token exchange and
renewal, paging and stream resumption; the blocking `Client` (sync.py) runs it on an event
loop of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol, Self, TypeVar

import grpc
from grpc import aio

from agentq.client.errors import AgentQError, DeadlineExceeded, Unauthenticated, error_from_rpc
from agentq.client.models import Agent, ContextTurn, Job, JobEvent, JobStatus, Submission
from agentq.client.policy import (
    CHANNEL_OPTIONS,
    DEFAULT_URL,
    Credentials,
    Deadline,
    RetryPolicy,
    channel_credentials,
    env_options,
    resumable,
    split_url,
)
from agentq.client.requests import (
    create_agent_request,
    execute_request,
    list_jobs_request,
    watch_request,
)
from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from agentq.v1 import context_service_pb2 as contexts_pb
from agentq.v1 import context_service_pb2_grpc as contexts_grpc
from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import job_service_pb2_grpc as jobs_grpc
from agentq.v1 import token_service_pb2 as tokens_pb
from agentq.v1 import token_service_pb2_grpc as tokens_grpc

DEFAULT_TIMEOUT_S = 30.0
Request = TypeVar("Request")
Reply = TypeVar("Reply")


class _Page(Protocol):
    """A reply of a list call."""

    @property
    def next_page_token(self) -> str: ...


Page = TypeVar("Page", bound=_Page)
Item = TypeVar("Item")


class AsyncClient:
    """An asyncio agentq client; close it (`await client.close()`) or use `async with`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        channel: aio.Channel | None = None,
        interceptors: Sequence[aio.ClientInterceptor] | None = None,
    ) -> None:
        """`channel` replaces the one the client would open to `url`; `interceptors`
        go on the channel the client opens."""
        if channel is not None and interceptors:
            raise ValueError("give a channel or interceptors, not both")
        self._channel = channel or _open_channel(url, interceptors)
        self.credentials = Credentials(token=token, api_key=api_key)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._exchange_lock = asyncio.Lock()
        self._agents_stub = agents_grpc.AgentServiceStub(self._channel)
        self._jobs_stub = jobs_grpc.JobServiceStub(self._channel)
        self._tokens_stub = tokens_grpc.TokenServiceStub(self._channel)
        self._contexts_stub = contexts_grpc.ContextServiceStub(self._channel)
        self.agents = AsyncAgents(self)
        self.jobs = AsyncJobs(self)
        self.contexts = AsyncContexts(self)

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """A client of AGENTQ_URL with AGENTQ_API_KEY or AGENTQ_TOKEN; `options` win."""
        return cls(**env_options(options))

    async def execute(
        self,
        /,  # so that **fields cannot name it, and the blocking Client can wrap the method
        agent_id: str,
        prompt: str,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> AsyncJobHandle:
        """Queue one execution and return its job's handle at once.

        Retries send the same `request_id` (a fresh one per call unless given), so the
        server queues the job once however often the call is tried.
        """
        request = execute_request(agent_id, prompt, request_id or str(uuid.uuid4()), fields)
        reply = await self.call(self._agents_stub.Execute, request, timeout=timeout)
        return AsyncJobHandle(self, reply.job_id, submission=Submission.from_proto(reply))

    def job(self, job_id: str) -> AsyncJobHandle:
        """The handle of an existing job."""
        return AsyncJobHandle(self, job_id)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        credentials = self.credentials
        if credentials.needs_exchange():
            async with self._exchange_lock:
                if credentials.needs_exchange():
                    reply = await self.call(
                        self._tokens_stub.CreateToken,
                        tokens_pb.CreateTokenRequest(),
                        timeout=None,
                        metadata=credentials.key_metadata(),
                    )
                    credentials.accept(reply.access_token, reply.expires_in)
        return credentials.metadata()

    async def call(
        self,
        method: aio.UnaryUnaryMultiCallable[Request, Reply],
        request: Request,
        *,
        timeout: float | None,
        idempotent: bool = True,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Reply:
        """One logical call: tried again on UNAVAILABLE and RESOURCE_EXHAUSTED, within
        its deadline (`timeout`, else the client's), and once more with a fresh token
        when an exchanged one is refused."""
        deadline = Deadline(timeout if timeout is not None else self.timeout)
        attempt, renewed = 0, False
        while True:
            attempt += 1
            try:
                sent = metadata if metadata is not None else await self._metadata()
                return await method(request, metadata=sent, timeout=deadline.remaining())
            except grpc.RpcError as raw:
                error = error_from_rpc(raw)
            # An exchanged token the server refused (revoked key, clock skew): exchange anew.
            renew = isinstance(error, Unauthenticated) and metadata is None and not renewed
            if renew and self.credentials.exchanges:
                self.credentials.forget()
                renewed = True
                continue
            wait_s = self.retry.delay(error, attempt, idempotent=idempotent)
            if wait_s is None or not deadline.allows(wait_s):
                raise error
            await asyncio.sleep(wait_s)

    async def paged(
        self,
        method: aio.UnaryUnaryMultiCallable[Request, Page],
        request: Callable[[str], Request],
        items: Callable[[Page], Iterable[Item]],
        *,
        timeout: float | None,
    ) -> AsyncIterator[Item]:
        """The items of a list call's replies, each page fetched as the iterator gets to
        it; `request(token)` asks for the page after `token` ("" for the first)."""
        token = ""
        while True:
            reply = await self.call(method, request(token), timeout=timeout)
            for item in items(reply):
                yield item
            token = reply.next_page_token
            if not token:
                return

    async def watch(
        self, job_id: str, *, after_sequence: int = 0, timeout: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """The job's events after `after_sequence`, to its last, resuming after a drop."""
        deadline, last = Deadline(timeout), after_sequence
        quiet_since, attempt = time.monotonic(), 0
        while True:
            request = watch_request(job_id, last)
            stream = self._jobs_stub.WatchJob(
                request, metadata=await self._metadata(), timeout=deadline.remaining()
            )
            error: AgentQError | None = None
            try:
                async for reply in stream:
                    event = JobEvent.from_proto(reply.event)
                    if event.sequence <= last:
                        continue  # already seen before the stream was opened again
                    last, quiet_since, attempt = event.sequence, time.monotonic(), 0
                    yield event
                    if event.type.final:
                        return
            except grpc.RpcError as raw:
                error = error_from_rpc(raw)
            finally:
                stream.cancel()
            if isinstance(error, DeadlineExceeded) or (error is not None and not resumable(error)):
                raise error
            attempt += 1
            wait_s = self.retry.backoff(attempt)
            if time.monotonic() - quiet_since + wait_s > self.retry.stream_reconnect_s:
                raise error or DeadlineExceeded("The event stream ended before the job's end")
            if not deadline.allows(wait_s):
                raise DeadlineExceeded("Deadline exceeded while watching the job")
            await asyncio.sleep(wait_s)


def _open_channel(url: str, interceptors: Sequence[aio.ClientInterceptor] | None) -> aio.Channel:
    target, secure = split_url(url)
    credentials = channel_credentials(secure)
    if credentials is not None:
        return aio.secure_channel(
            target, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    return aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)


class AsyncAgents:
    """The caller's agents: `client.agents`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = client._agents_stub

    async def create(
        self,
        *,
        name: str,
        role: str,
        max_depth: int | None = None,
        spawn_shadow: bool = False,
        timeout: float | None = None,
    ) -> Agent:
        """Create an agent."""
        request = create_agent_request(name, role, max_depth, spawn_shadow)
        reply = await self._client.call(
            self._stub.CreateAgent, request, timeout=timeout, idempotent=False
        )
        return Agent.from_proto(reply.agent)

    async def get(self, agent_id: str, *, timeout: float | None = None) -> Agent:
        """One agent."""
        request = agents_pb.GetAgentRequest(agent_id=agent_id)
        reply = await self._client.call(self._stub.GetAgent, request, timeout=timeout)
        return Agent.from_proto(reply.agent)

    def list(
        self, *, page_size: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[Agent]:
        """Every agent, newest first, fetched a page at a time as the iterator goes."""
        return self._client.paged(
            self._stub.ListAgents,
            lambda token: agents_pb.ListAgentsRequest(page_size=page_size, page_token=token),
            lambda reply: map(Agent.from_proto, reply.agents),
            timeout=timeout,
        )

    async def delete(self, agent_id: str, *, timeout: float | None = None) -> None:
        """Delete an agent; its unfinished jobs are cancelled."""
        request = agents_pb.DeleteAgentRequest(agent_id=agent_id)
        await self._client.call(self._stub.DeleteAgent, request, timeout=timeout, idempotent=False)


class AsyncJobs:
    """The caller's jobs: `client.jobs`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = client._jobs_stub

    async def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        """One job, with its result once finished."""
        request = jobs_pb.GetJobRequest(job_id=job_id)
        return Job.from_proto(
            (await self._client.call(self._stub.GetJob, request, timeout=timeout)).job
        )

    def list(
        self,
        *,
        agent_id: str | None = None,
        status: JobStatus | str | None = None,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Job]:
        """Every job (of one agent, in one state), newest first, a page at a time."""
        return self._client.paged(
            self._stub.ListJobs,
            lambda token: list_jobs_request(agent_id, status, page_size, token),
            lambda reply: map(Job.from_proto, reply.jobs),
            timeout=timeout,
        )

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Cancel a job and its unfinished sub-agent jobs; returns the job."""
        request = jobs_pb.CancelJobRequest(job_id=job_id)
        reply = await self._client.call(self._stub.CancelJob, request, timeout=timeout)
        return Job.from_proto(reply.job)


class AsyncContexts:
    """The caller's conversation contexts: `client.contexts`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = client._contexts_stub

    def get(
        self, context_id: str, *, page_size: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[ContextTurn]:
        """The context's turns, oldest first, fetched a page at a time as the iterator goes."""
        return self._client.paged(
            self._stub.GetContext,
            lambda token: contexts_pb.GetContextRequest(
                context_id=context_id, page_size=page_size, page_token=token
            ),
            lambda reply: map(ContextTurn.from_proto, reply.turns),
            timeout=timeout,
        )

    async def delete(self, context_id: str, *, timeout: float | None = None) -> int:
        """Delete the context's turns; how many there were (0 when a retry finds it empty)."""
        request = contexts_pb.DeleteContextRequest(context_id=context_id)
        reply = await self._client.call(self._stub.DeleteContext, request, timeout=timeout)
        return reply.deleted_turns


class AsyncJobHandle:
    """A job to wait for, watch or cancel: what `AsyncClient.execute` returns."""

    def __init__(
        self, client: AsyncClient, job_id: str, *, submission: Submission | None = None
    ) -> None:
        self._client = client
        self.id = job_id
        self.submission = submission

    async def get(self, *, timeout: float | None = None) -> Job:
        """The job as stored now."""
        return await self._client.jobs.get(self.id, timeout=timeout)

    def events(
        self, *, after_sequence: int = 0, timeout: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """The job's events, from the first (or after `after_sequence`) to its last.

        A dropped stream is opened again after the last event seen: no event is missed
        or repeated.
        """
        return self._client.watch(self.id, after_sequence=after_sequence, timeout=timeout)

    async def wait(self, timeout: float | None = None) -> Job:
        """Wait until the job has finished (at most `timeout` seconds) and return it."""
        deadline = Deadline(timeout)
        job = await self.get(timeout=deadline.remaining())
        if job.status.finished:
            return job
        async for event in self.events(timeout=deadline.remaining()):
            if event.type.final:
                break
        return await self.get(timeout=deadline.remaining())

    async def cancel(self, *, timeout: float | None = None) -> Job:
        """Cancel the job; returns it (cancelled, or still running until its worker stops)."""
        return await self._client.jobs.cancel(self.id, timeout=timeout)

    def __repr__(self) -> str:
        return f"AsyncJobHandle({self.id!r})"
