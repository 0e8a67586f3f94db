"""The long-running processes: `agentq serve` and `agentq worker`."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

from rest_shim.loop import event_loop_factory
from server import logs, orphans, tracing
from server.api.server import start_grpc_server
from server.banner import dev_banner, interfaces, rest_url
from server.bootstrap import build_runtime, jwt_secret
from server.cli.metrics import MetricsServer, serve_metrics
from server.configuration import ConfigurationError
from server.redis_client import RedisWatch
from server.settings import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, rest: bool = True) -> None:
    """Serve gRPC (and REST) until SIGINT/SIGTERM; in-process workers unless Redis is set.

    Raises ConfigurationError, with everything started stopped again, when an address
    cannot be listened on.
    """
    # Handlers first: a signal during start-up then stops the process cleanly
    # once it has started, instead of killing it halfway.
    stop = _stop_on_signals()
    secret = jwt_secret(settings)
    exported = serve_metrics(settings, "serve", count_jobs=True)
    try:
        await _serve_runtime(settings, secret, stop, rest=rest)
    finally:
        _stop_metrics(exported)


async def _serve_runtime(
    settings: Settings, secret: str, stop: asyncio.Event, *, rest: bool
) -> None:
    runtime = build_runtime(settings, engine_loop=event_loop_factory())
    watch = _watch_redis(settings)
    try:
        if settings.redis_url is None:
            runtime.start_workers()
        runtime.start_recovery()
        services = await runtime.open_services()
        grpc_server = await start_grpc_server(
            settings, services, secret=secret, address=settings.grpc_addr
        )
        try:
            await _serve_started(settings, grpc_server.port, stop, rest=rest)
        finally:
            await grpc_server.stop(grace=5)
    finally:
        if watch is not None:
            watch.stop()
        runtime.close()


def _stop_metrics(exported: MetricsServer | None) -> None:
    if exported is not None:
        exported.stop()


def _watch_redis(settings: Settings) -> RedisWatch | None:
    """A started RedisWatch when Redis is configured: an outage is reported once."""
    if settings.redis_url is None:
        return None
    watch = RedisWatch(settings.redis_url)
    watch.start()
    return watch


async def _serve_started(settings: Settings, port: int, stop: asyncio.Event, *, rest: bool) -> None:
    """Announce the gRPC server on `port`, add REST, and wait for a signal."""
    mode = "with Redis" if settings.redis_url else "embedded, with in-process workers"
    logs.flush()  # the lines logged so far come before it
    print(
        f"agentq gRPC listening on port {port} of {interfaces(settings.grpc_addr)} "
        f"({settings.db_type}, {mode})",
        flush=True,
    )
    http = await _start_rest(settings, port) if rest else None
    if settings.dev_mode:
        url = rest_url(settings.http_addr, http[0].port) if http else None
        logs.flush()  # the lines logged so far come before it
        print(dev_banner(settings, url), file=sys.stderr, flush=True)
    await stop.wait()
    log.info("shutting down")
    if http is not None:
        http_server, http_task = http
        http_server.should_exit = True
        await http_task


async def _start_rest(settings: Settings, grpc_port: int) -> tuple[Any, asyncio.Task[None]]:
    # Imported here: the shim is optional for the server, and it never
    # imports the server, so the dependency points this way only.
    from rest_shim.serving import ListenError, http_server, listen_socket
    from rest_shim.settings import RestSettings

    # The shim dials this process's own server, wherever AGENTQ_GRPC_TARGET
    # points a separately run shim: the target comes from the bound address.
    host = settings.grpc_addr.rpartition(":")[0]
    rest_settings = RestSettings(
        http_addr=settings.http_addr, grpc_addr=f"{host}:{grpc_port}", grpc_target=None
    )
    try:
        sock = listen_socket(rest_settings)
    except ListenError as error:
        raise ConfigurationError(str(error)) from None
    http = http_server(rest_settings, embedded=True, tracer_provider=tracing.provider())
    task = asyncio.create_task(http.serve(sockets=[sock]))
    while not http.started:
        if task.done():
            task.result()
            raise RuntimeError(f"the REST server could not start on {settings.http_addr}")
        await asyncio.sleep(0.01)
    port: int = http.port  # type: ignore[attr-defined]
    url = rest_url(settings.http_addr, port)
    logs.flush()  # the lines logged so far come before it
    print(f"agentq REST listening on port {port}: {url} (API docs at {url}/docs)", flush=True)
    if rest_settings.console:
        print(f"agentq web console at {url}/console", flush=True)
    return http, task


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, on the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def work(settings: Settings) -> None:
    """Run worker processes against the Redis broker until signalled."""
    if settings.redis_url is None:
        raise ConfigurationError(
            "agentq worker needs AGENTQ_REDIS_URL; without it `agentq serve` runs the workers"
        )
    spawn = multiprocessing.get_context("spawn")
    children = [
        spawn.Process(target=_work_one, args=(settings, os.getpid(), index))
        for index in range(1, settings.worker_processes)
    ]
    # This process's endpoint first: an address in use stops the command before any child.
    exported = serve_metrics(settings, "worker")
    for child in children:
        child.start()
    try:
        _work_one(settings, None, 0)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=settings.shutdown_grace_s + 15)
        _stop_metrics(exported)


def _work_one(settings: Settings, parent_pid: int | None, index: int) -> None:
    """Worker process `index`: 0 is the command's own, whose metrics `work` serves."""
    stop = threading.Event()
    exported: MetricsServer | None = None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if parent_pid is not None:
        # A spawned child starts with Python's default logging, which drops INFO lines
        # (the per-job lines among them): set it up as the parent did.
        logs.configure(
            settings.log_level, format=settings.log_format, levels=settings.logger_levels
        )
        orphans.stop_with_parent(parent_pid, stop)
        # A spawned child starts without the parent's tracer provider: install its own.
        tracing.install("worker", switch=settings.tracing)
        exported = _child_metrics(settings, index)
    runtime = build_runtime(settings, engine_loop=event_loop_factory())
    watch = _watch_redis(settings)
    grace_s: float | None = None
    try:
        runtime.start_workers()
        runtime.start_recovery()
        log.info("agentq worker running up to %d executions", settings.worker_concurrency)
        logs.flush()  # the lines logged so far come before it
        print("agentq worker ready", flush=True)
        stop.wait()
        if parent_pid is not None and orphans.parent_gone(parent_pid):
            # Nobody will wait for this process: give running jobs back at once.
            grace_s = 0.0
    finally:
        if watch is not None:
            watch.stop()
        runtime.close(grace_s=grace_s)
        _stop_metrics(exported)


def _child_metrics(settings: Settings, index: int) -> MetricsServer | None:
    """A child's own metrics endpoint; without one (its port taken since the parent
    started) it still works, and says so."""
    try:
        return serve_metrics(settings, "worker", index=index)
    except ConfigurationError as error:
        log.error("worker process %d serves no metrics: %s", index, error)
        return None
