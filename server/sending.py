"""Job messages sent from one background thread, so an RPC never waits on the broker."""

from __future__ import annotations

import logging
import queue
import threading

from server.queue import BatchQueue

log = logging.getLogger(__name__)


class MessageSender:
    """Sends each job id handed to it, in order, on a thread of its own.

    The job row is committed before its id is handed over, so a message lost
    here (a broker outage, a crash before the send) only delays the job: the
    recovery sweeper sends every pending job whose message is overdue.
    """

    def __init__(self, jobs: BatchQueue, *, batch: int = 256) -> None:
        self._jobs = jobs
        self._batch = batch
        self._ids: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="agentq-sender", daemon=True)
        self._thread.start()

    def send(self, job_id: str) -> None:
        """Hand a committed job's id over for sending; returns at once."""
        self._ids.put(job_id)

    def close(self) -> None:
        """Send what was handed over, then stop the thread."""
        self._ids.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            # Whatever piled up while the last batch went out goes in the next.
            ids = [self._ids.get()]
            while len(ids) < self._batch and not self._ids.empty():
                ids.append(self._ids.get_nowait())
            self._send([job_id for job_id in ids if job_id is not None])
            if None in ids:
                return

    def _send(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        try:
            self._jobs.enqueue_many(job_ids)
        except Exception:
            log.warning(
                "could not enqueue %d jobs (%s ...); recovery will retry",
                len(job_ids),
                job_ids[0],
                exc_info=True,
            )
