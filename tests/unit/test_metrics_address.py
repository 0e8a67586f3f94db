"""Where each process serves its metrics: AGENTQ_METRICS_ADDR, or its command's default."""

from __future__ import annotations

import pytest

from server.cli.metrics import metrics_address, serve_metrics
from server.settings import Settings


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


def test_an_empty_address_serves_no_metrics() -> None:
    settings = Settings(metrics_addr="")

    assert metrics_address(settings, "serve") is None
    assert serve_metrics(settings, "serve", count_jobs=True) is None
