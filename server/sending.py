"""Job messages sent from one background thread, so an RPC never waits on the broker."""

from __future__ import annotations

import logging
import queue
import threading

from server.queue import JobQueue

log = logging.getLogger(__name__)


class MessageSender:
    """Sends each job id handed to it, in order, on a thread of its own.

    The job row is committed before its id is handed over, so a message lost
    here (a broker outage, a crash before the send) only delays the job: the
    recovery sweeper sends every pending job whose message is overdue.
    """

    def __init__(self, jobs: JobQueue) -> None:
        self._jobs = jobs
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
        while (job_id := self._ids.get()) is not None:
            try:
                self._jobs.enqueue(job_id)
            except Exception:
                log.warning("could not enqueue job %s; recovery will retry", job_id, exc_info=True)
