"""One line per attempt's outcome, on the `agentq.jobs` logger, and its count in the metrics.

An attempt ends `completed`, `failed`, `cancelled` or `retrying` (it failed and the job
goes back to the queue). The line's fields are attached to the record too, so the JSON
log format writes each as a key; AGENTQ_LOG_LEVELS=agentq.jobs=WARNING silences them.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar

from server import logs, metrics
from server.store.transitions import Attempt

JOBS_LOGGER = "agentq.jobs"
log = logging.getLogger(JOBS_LOGGER)

# When the running attempt started. Each job runs in its own engine task, so a context
# variable holds it without threading it through every step of the runner.
_started: ContextVar[float | None] = ContextVar("attempt_started", default=None)


def start_clock() -> None:
    """Mark the start of the attempt the current task runs."""
    _started.set(time.monotonic())


def log_outcome(attempt: Attempt, outcome: str, *, error: str | None = None) -> None:
    """Log `job <id> <outcome> attempts=<n> <ms>ms`; `error` says why it failed. The
    outcome and the attempt's run time go to the metrics too.

    Only the values are taken here; the writer thread spells out the line (`logs.later`).
    """
    started = _started.get()
    duration_s = time.monotonic() - started if started is not None else 0.0
    metrics.attempt_ended(attempt.tenant_id, outcome, duration_s)
    logs.later(log, logging.INFO, _line, attempt.job_id, outcome, attempt.number, duration_s, error)


def _line(
    job_id: str, outcome: str, attempts: int, duration_s: float, error: str | None
) -> logs.Line:
    duration_ms = round(duration_s * 1000, 1)
    fields = {
        "job_id": job_id,
        "outcome": outcome,
        "attempts": attempts,
        "duration_ms": duration_ms,
        "error": error,
    }
    suffix = f" error={error}" if error else ""
    message = "job %s %s attempts=%d %.1fms%s"
    return message, (job_id, outcome, attempts, duration_ms, suffix), fields
