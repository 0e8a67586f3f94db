"""Where each process serves its metrics: AGENTQ_METRICS_ADDR, or its command's default."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import pytest

from rest_shim import metrics as rest_metrics
from server import metrics
from server.cli.metrics import metrics_address, serve_metrics
from server.settings import Settings


@pytest.fixture
def recording_restored() -> Iterator[None]:
    """serve_metrics switches the process's recording: back on for the tests after."""
    yield
    metrics.configure(tenant_labels=False, recording=True)
    rest_metrics.set_recording(True)


@pytest.mark.parametrize(
    ("command", "index", "address"),
    [
        ("serve", 0, ("127.0.0.1", 9464)),
        ("rest", 0, ("127.0.0.1", 9465)),
        ("worker", 0, ("127.0.0.1", 9466)),
        ("worker", 3, ("127.0.0.1", 9469)),
    ],
)
def test_unset_each_command_serves_at_its_own_port_and_worker_processes_at_the_next_ones(
    command: str, index: int, address: tuple[str, int]
) -> None:
    assert metrics_address(Settings(metrics_addr=None), command, index) == address


def test_a_set_address_is_the_first_worker_process_s_and_the_others_take_the_next_ports() -> None:
    settings = Settings(metrics_addr="[::1]:9500")

    assert [metrics_address(settings, "worker", i) for i in range(3)] == [
        ("::1", 9500),
        ("::1", 9501),
        ("::1", 9502),
    ]
    assert metrics_address(settings, "serve") == ("::1", 9500)


def test_port_0_gives_every_process_a_free_port_of_its_own() -> None:
    settings = Settings(metrics_addr="0.0.0.0:0")

    assert [metrics_address(settings, "worker", i) for i in range(2)] == [("0.0.0.0", 0)] * 2


def test_an_empty_address_serves_no_metrics(recording_restored: None) -> None:
    settings = Settings(metrics_addr="")

    assert metrics_address(settings, "serve") is None
    assert serve_metrics(settings, "serve", count_jobs=True) is None


def _recorded() -> tuple[float | None, float | None, float | None]:
    """The counts one gRPC call, one REST request and one job event of the test add to."""
    return (
        metrics.REGISTRY.get_sample_value(
            "agentq_grpc_requests_total", {"rpc": "/test.Recording/Call", "code": "OK"}
        ),
        prometheus_client.REGISTRY.get_sample_value(
            "agentq_http_requests_total", {"method": "GET", "route": "/recording", "status": "200"}
        ),
        metrics.REGISTRY.get_sample_value("agentq_jobs_submitted_total"),
    )


def _record_one_of_each() -> None:
    metrics.grpc_call("/test.Recording/Call", "OK", 0.001)
    rest_metrics.request("GET", "/recording", 200, 0.001)
    metrics.jobs_counted("submitted", "tenant")


def test_a_process_that_serves_no_metrics_records_none(recording_restored: None) -> None:
    serve_metrics(Settings(metrics_addr=""), "serve")
    before = _recorded()

    _record_one_of_each()

    assert _recorded() == before


def test_a_process_that_serves_metrics_records_them(recording_restored: None) -> None:
    exported = serve_metrics(Settings(metrics_addr="127.0.0.1:0"), "serve")
    assert exported is not None
    try:
        _record_one_of_each()
        grpc_calls, http_requests, submitted = _recorded()
        _record_one_of_each()

        assert _recorded() == (grpc_calls + 1, http_requests + 1, submitted + 1)  # type: ignore[operator]
    finally:
        exported.stop()
