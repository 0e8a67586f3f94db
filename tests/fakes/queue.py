"""A queue that records the messages it is given: JobQueue, BatchQueue and the API's Sender."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class FakeQueue:
    """A JobQueue that records every (job_id, delay_s) call; set `error` to make it fail.

    `on_enqueue`, when set, is called with each call's job id and delay before it is
    recorded, e.g. to look at the store at the moment a message is sent.
    """

    calls: list[tuple[str, float]] = field(default_factory=list)
    error: Exception | None = None
    on_enqueue: Callable[[str, float], None] | None = None

    def enqueue(self, job_id: str, *, delay_s: float = 0.0) -> None:
        """Record one message, or raise `error`."""
        if self.on_enqueue is not None:
            self.on_enqueue(job_id, delay_s)
        self.calls.append((job_id, delay_s))
        if self.error is not None:
            raise self.error

    def enqueue_many(self, job_ids: Sequence[str]) -> None:
        """Record one message per job, as `enqueue` does, or raise at the first that fails."""
        for job_id in job_ids:
            self.enqueue(job_id)

    def send(self, job_id: str) -> None:
        """The API's sender (`server/sending.py`): one message, no delay."""
        self.enqueue(job_id)

    @property
    def sent(self) -> list[str]:
        """The job ids of every message, in order."""
        return [job_id for job_id, _ in self.calls]
