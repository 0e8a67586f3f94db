"""Tells running attempts that their job was cancelled, by polling the database."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from server.worker_uow import WorkerUnitOfWork

log = logging.getLogger(__name__)


class CancelWatch:
    """One thread per process checks every running attempt's job for a cancel request.

    A single query per interval for all of the process's attempts keeps the
    cost flat however many threads run jobs.
    """

    def __init__(self, uow: Callable[[], WorkerUnitOfWork], *, interval_s: float = 0.5) -> None:
        self._uow = uow
        self._interval_s = interval_s
        self._watched: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, job_id: str) -> threading.Event:
        """An event that is set once the job's cancel is requested."""
        event = threading.Event()
        with self._lock:
            self._watched[job_id] = event
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentq-cancel", daemon=True)
                self._thread.start()
        return event

    def forget(self, job_id: str) -> None:
        """Stop watching a job whose attempt has ended."""
        with self._lock:
            self._watched.pop(job_id, None)

    def check(self) -> None:
        """Look once for cancel requests of watched jobs."""
        with self._lock:
            watched = dict(self._watched)
        if not watched:
            return
        with self._uow() as uow:
            cancelled = uow.jobs.cancel_requested(list(watched))
        for job_id in cancelled:
            watched[job_id].set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self.check()
            except Exception:
                log.warning("could not check for cancelled jobs", exc_info=True)

    def stop(self) -> None:
        """End the polling thread."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
