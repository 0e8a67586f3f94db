"""MessageSender: every id handed over is sent, in order, in batches; failures don't stop it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from server.sending import MessageSender


class Recording:
    """A BatchQueue that keeps each batch; optionally fails the first one."""

    def __init__(self, *, fail_first: bool = False, hold: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.sending = threading.Event()  # set once the first send has begun
        self._fail_first = fail_first
        self._hold = hold

    def enqueue_many(self, job_ids: Sequence[str]) -> None:
        self.sending.set()
        if self._hold is not None:
            self._hold.wait(timeout=10)
        if self._fail_first and not self.batches:
            self.batches.append([])
            raise ConnectionError("broker down")
        self.batches.append(list(job_ids))


def test_every_id_is_sent_in_order_by_the_time_close_returns() -> None:
    queue = Recording()
    sender = MessageSender(queue)
    ids = [f"job-{n}" for n in range(1000)]
    for job_id in ids:
        sender.send(job_id)
    sender.close()

    assert [job_id for batch in queue.batches for job_id in batch] == ids


def test_ids_that_pile_up_during_a_send_go_out_together() -> None:
    hold = threading.Event()
    queue = Recording(hold=hold)
    sender = MessageSender(queue, batch=100)
    sender.send("first")  # its send waits on `hold`
    assert queue.sending.wait(timeout=10)
    for n in range(250):
        sender.send(f"job-{n}")
    hold.set()
    sender.close()

    assert [len(batch) for batch in queue.batches] == [1, 100, 100, 50]


def test_a_failed_send_is_logged_and_the_next_ones_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hold = threading.Event()
    queue = Recording(fail_first=True, hold=hold)
    sender = MessageSender(queue)
    sender.send("lost")
    assert queue.sending.wait(timeout=10)
    hold.set()
    sender.send("kept")
    sender.close()

    assert queue.batches[-1] == ["kept"]
    assert "could not enqueue 1 jobs (lost ...); recovery will retry" in caplog.text
