"""The blocking client: `Client(url, token=... | api_key=...)`, a facade over `AsyncClient`.

The calls, retries, deadlines, token exchange and renewal, paging and stream resumption
are written once, in aio.py. A `Client` runs its `AsyncClient` on a private event loop in
a daemon thread and waits for each call there, so it works the same from plain code, from
several threads at once, and from inside a caller's own running event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from grpc import aio

from agentq.client.aio import (
    DEFAULT_TIMEOUT_S,
    AsyncAgents,
    AsyncClient,
    AsyncContexts,
    AsyncJobHandle,
    AsyncJobs,
)
from agentq.client.models import Submission
from agentq.client.policy import DEFAULT_URL, Credentials, RetryPolicy, env_options

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
V = TypeVar("V")
Inner = TypeVar("Inner")
Outer = TypeVar("Outer", bound="_Facade[Any]")


class _End:
    """What `_next` returns once an async iterator is exhausted."""


_END = _End()


async def _next(items: AsyncIterator[R]) -> R | _End:
    # A sentinel rather than StopAsyncIteration, which a Future cannot carry across.
    return await anext(items, _END)


class _LoopThread:
    """An event loop running in a daemon thread of its own, and the way in from others."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._stopping = False
        self._last: Callable[[], Awaitable[None]] | None = None
        self._thread = threading.Thread(target=self._serve, name="agentq-client", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)  # the thread's own: gather() and grpc look it up
        try:
            loop.run_forever()
            # Stopped: end what a call racing close() or an abandoned event stream left
            # behind (as asyncio.run does), then close the client's channel.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            if self._last is not None:
                loop.run_until_complete(self._last())
        finally:
            loop.close()

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run `coroutine` on the loop and wait for its result (or its exception)."""
        with self._lock:  # nothing is submitted to a loop that will not run it
            if self._stopping:
                coroutine.close()
                raise ValueError("the client is closed")
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            # A KeyboardInterrupt while waiting ends the call on the loop too.
            future.cancel()
            raise

    def iterate(self, items: AsyncIterator[R]) -> Iterator[R]:
        """The items of `items`, each fetched on the loop when the caller asks for it."""
        try:
            while not isinstance(item := self.run(_next(items)), _End):
                yield item
        finally:
            self._abandon(items)

    def _abandon(self, items: AsyncIterator[Any]) -> None:
        # A caller that stopped early (break, close, garbage) leaves the async generator
        # suspended with its stream open: close it on the loop. Once the loop stops,
        # shutdown_asyncgens does that instead (ValueError: closed); on the loop thread
        # itself (a garbage collection there) waiting would deadlock. RuntimeError: a
        # step cancelled by a KeyboardInterrupt is still unwinding, and ends it anyway.
        aclose = getattr(items, "aclose", None)
        if aclose is None or threading.current_thread() is self._thread:
            return
        with contextlib.suppress(ValueError, RuntimeError):
            self.run(aclose())

    def stop(self, last: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop the loop after running `last` on it, and wait for the thread to end."""
        with self._lock:
            if self._stopping:
                return
            self._stopping, self._last = True, last
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class _Facade(Generic[Inner]):
    """A blocking view of an asyncio object that lives on a `_LoopThread`."""

    def __init__(self, loop: _LoopThread, inner: Inner) -> None:
        self._loop = loop
        self._inner = inner


class _Shared(Generic[V]):
    """An attribute of a facade that is the same attribute of its async twin."""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, facade: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, facade: _Facade[Any], owner: type[Any]) -> V: ...
    def __get__(self, facade: _Facade[Any] | None, owner: type[Any]) -> Self | V:
        if facade is None:
            return self
        value: V = getattr(facade._inner, self._name)
        return value

    def __set__(self, facade: _Facade[Any], value: V) -> None:
        setattr(facade._inner, self._name, value)


def _as_is(_: _Facade[Any], value: R) -> R:
    return value


def _blocking_as(
    method: Callable[Concatenate[Inner, P], Coroutine[Any, Any, R]],
    wrap: Callable[[Outer, R], S],
) -> Callable[Concatenate[Outer, P], S]:
    """A blocking method that runs the async twin's `method` on the loop, its result
    passed through `wrap`; its signature and docstring are the twin's."""

    @functools.wraps(method)
    def run(self: Outer, /, *args: P.args, **kwargs: P.kwargs) -> S:
        return wrap(self, self._loop.run(method(self._inner, *args, **kwargs)))

    return run


def _blocking(
    method: Callable[Concatenate[Inner, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[_Facade[Inner], P], R]:
    """A blocking method that runs the async twin's `method` on the loop."""
    return _blocking_as(method, _as_is)


def _iterating(
    method: Callable[Concatenate[Inner, P], AsyncIterator[R]],
) -> Callable[Concatenate[_Facade[Inner], P], Iterator[R]]:
    """A method returning an iterator over the async twin's `method`, item by item."""

    @functools.wraps(method)
    def iterate(self: _Facade[Inner], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        return self._loop.iterate(method(self._inner, *args, **kwargs))

    return iterate


async def _open(**options: Any) -> AsyncClient:
    # Made on the loop, so that its grpc.aio channel belongs to that loop.
    return AsyncClient(**options)


def _job_handle(client: Client, handle: AsyncJobHandle) -> JobHandle:
    return JobHandle(client, handle.id, submission=handle.submission)


class Client(_Facade[AsyncClient]):
    """A blocking agentq client. Thread-safe; close it, or use it as a context manager."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        interceptors: Sequence[aio.ClientInterceptor] | None = None,
    ) -> None:
        """`interceptors` (grpc.aio client interceptors) go on the client's channel."""
        loop = _LoopThread()
        try:
            inner = loop.run(
                _open(
                    url=url,
                    token=token,
                    api_key=api_key,
                    timeout=timeout,
                    retry=retry,
                    interceptors=interceptors,
                )
            )
        except BaseException:
            loop.stop()
            raise
        super().__init__(loop, inner)
        # close(), or else garbage collection or the interpreter's exit, closes the
        # channel and ends the thread; the finalizer holds no reference to the Client.
        self._closer = weakref.finalize(self, loop.stop, inner.close)
        self.agents = Agents(loop, inner.agents)
        self.jobs = Jobs(loop, inner.jobs)
        self.contexts = Contexts(loop, inner.contexts)

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """A client of AGENTQ_URL with AGENTQ_API_KEY or AGENTQ_TOKEN; `options` win."""
        return cls(**env_options(options))

    # The async twin's attributes, read and set through the facade.
    credentials = _Shared[Credentials]()
    timeout = _Shared[float | None]()
    retry = _Shared[RetryPolicy]()

    execute = _blocking_as(AsyncClient.execute, _job_handle)
    watch = _iterating(AsyncClient.watch)

    def job(self, job_id: str) -> JobHandle:
        """The handle of an existing job."""
        return JobHandle(self, job_id)

    def close(self) -> None:
        """Close the channel and end the client's thread; calls after it raise ValueError."""
        self._closer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Agents(_Facade[AsyncAgents]):
    """The caller's agents: `client.agents`."""

    create = _blocking(AsyncAgents.create)
    get = _blocking(AsyncAgents.get)
    list = _iterating(AsyncAgents.list)
    delete = _blocking(AsyncAgents.delete)


class Jobs(_Facade[AsyncJobs]):
    """The caller's jobs: `client.jobs`."""

    get = _blocking(AsyncJobs.get)
    list = _iterating(AsyncJobs.list)
    cancel = _blocking(AsyncJobs.cancel)


class Contexts(_Facade[AsyncContexts]):
    """The caller's conversation contexts: `client.contexts`."""

    get = _iterating(AsyncContexts.get)
    delete = _blocking(AsyncContexts.delete)


class JobHandle(_Facade[AsyncJobHandle]):
    """A job to wait for, watch or cancel: what `Client.execute` returns."""

    def __init__(
        self, client: Client, job_id: str, *, submission: Submission | None = None
    ) -> None:
        super().__init__(client._loop, AsyncJobHandle(client._inner, job_id, submission=submission))

    id = _Shared[str]()
    submission = _Shared[Submission | None]()  # None for a handle of `Client.job`

    get = _blocking(AsyncJobHandle.get)
    events = _iterating(AsyncJobHandle.events)
    wait = _blocking(AsyncJobHandle.wait)
    cancel = _blocking(AsyncJobHandle.cancel)

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"
