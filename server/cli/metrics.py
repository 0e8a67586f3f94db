"""Serving a process's Prometheus metrics at AGENTQ_METRICS_ADDR (README.md, Metrics).

Each process serves its own: `agentq serve` at 127.0.0.1:9464 unless told otherwise,
`agentq rest` at 9465, and `agentq worker` at 9466 for its first process and the next
ports for the others (process i at port + i), so a scrape of each endpoint adds up to the
whole, with no files shared between processes. Port 0 gives each process a free port of
its own, which it prints. prometheus-client's own HTTP server answers the scrapes, on a
thread of its own, so a scrape never waits on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    start_http_server,
)
from sqlalchemy import Engine, func, select

from rest_shim import metrics as rest_metrics
from server import logs, metrics
from server.configuration import ConfigurationError
from server.settings import Settings
from server.store.jobs import UNFINISHED
from server.store.migrate import create_db_engine
from server.store.tables import jobs

DEFAULT_ADDRESSES = {
    "serve": "127.0.0.1:9464",
    "rest": "127.0.0.1:9465",
    "worker": "127.0.0.1:9466",
}

# One query for both gauges; the index on (status, enqueued_at) answers it.
UNFINISHED_BY_STATUS = (
    select(jobs.c.status, func.count()).where(jobs.c.status.in_(UNFINISHED)).group_by(jobs.c.status)
)


def metrics_address(settings: Settings, command: str, index: int = 0) -> tuple[str, int] | None:
    """The host and port process `index` of `command` serves metrics at; None for none."""
    address = settings.metrics_addr
    if address is None:
        address = DEFAULT_ADDRESSES[command]
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) + index if int(port) else 0


class MetricsServer:
    """A started metrics endpoint, and what it needs stopped."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self._collector: metrics.JobCounts | None = None
        self._engine: Engine | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when asked for port 0)."""
        return int(self._server.server_port)

    def count_jobs(self, engine: Engine) -> None:
        """Serve the pending and running gauges, counted on `engine`."""
        self._engine = engine

        def count() -> Mapping[str, int]:
            with engine.connect() as connection:
                return {row[0]: int(row[1]) for row in connection.execute(UNFINISHED_BY_STATUS)}

        self._collector = metrics.JobCounts(count)
        metrics.REGISTRY.register(self._collector)

    def stop(self) -> None:
        """Stop answering scrapes."""
        self._server.shutdown()
        self._server.server_close()
        if self._collector is not None:
            metrics.REGISTRY.unregister(self._collector)
        if self._engine is not None:
            self._engine.dispose()


def serve_metrics(
    settings: Settings, command: str, *, index: int = 0, count_jobs: bool = False
) -> MetricsServer | None:
    """Serve this process's metrics, if AGENTQ_METRICS_ADDR asks for any.

    `count_jobs` adds the pending and running gauges from the database (the serving
    processes do; many worker processes counting the same rows would add nothing).
    Raises ConfigurationError when the address cannot be listened on. A process that
    serves none records none either: what it would count, nobody could read.
    """
    address = metrics_address(settings, command, index)
    metrics.configure(tenant_labels=settings.metrics_tenant_labels, recording=address is not None)
    rest_metrics.set_recording(address is not None)
    if address is None:
        return None
    host, port = address
    # A `_created` series beside each counter would double what every scrape carries.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
    # prometheus-client's own registry holds the process's metrics and the REST shim's;
    # the server's are apart (server/metrics.py), served by the processes that run it.
    exposed = CollectorRegistry()
    exposed.register(REGISTRY)
    if command != "rest":
        exposed.register(metrics.REGISTRY)
    # Made first: a database URL agentq cannot use stops the command before it listens.
    engine = create_db_engine(settings.database_url, pool_size=1) if count_jobs else None
    try:
        server, _ = start_http_server(port, addr=host, registry=exposed)
    except OSError as error:
        if engine is not None:
            engine.dispose()
        reason = (error.strerror or str(error)).lower()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} (AGENTQ_METRICS_ADDR): {reason}"
        ) from None
    started = MetricsServer(server)
    if engine is not None:
        started.count_jobs(engine)
    logs.flush()  # the lines logged so far come before it
    where = host or "all interfaces"
    print(f"agentq metrics listening on port {started.port} of {where}", flush=True)
    return started
