"""Logging set-up: every line carries the request id of the call it belongs to.

Two formats: `text` (the default), one readable line per record, and `json`, one JSON
object per line whose keys are the record's time, level, logger, request id, message and
every field the line was logged with (an access line's route, status and duration; a
job line's outcome and attempts), so a log pipeline needs no parsing rules.
"""

from __future__ import annotations

import atexit
import contextvars
import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

# The request id of the call being served (set by the gRPC guard), which every line
# logged while serving it carries; "-" outside a call.
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# The attributes every LogRecord has; anything else on a record is a field it was given.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}
# asyncpg's error for a value it cannot encode quotes the value (a prompt, a key):
# `invalid input for query argument $2: 'the value...' (reason)`.
_ASYNCPG_ARGUMENT = re.compile(r"(invalid input for query argument \$\d+): .*")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # A REST access line brings its own request id; others take the current call's.
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def _hide_parameters(text: str) -> str:
    """Text of an exception with the values of SQL parameters taken out."""
    return _ASYNCPG_ARGUMENT.sub(r"\1: [parameter hidden]", text)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message`; a message never spans lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # The logging module's own format, but the date and time are spelled out once a
        # second rather than once a line: a busy server writes thousands a second.
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A value from a request (a tenant, a path) must not start a line of its own.
        record.message = record.message.replace("\r", "\\r").replace("\n", "\\n")
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _hide_parameters(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the fields it was logged with as keys."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = _hide_parameters(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(
    level: str = "INFO", *, format: str = "text", levels: Mapping[str, str] | None = None
) -> None:
    """Log to stderr in `format` (text or json) at `level`, with `levels` per logger."""
    # No line names its thread, process or source line, so a record need not look
    # them up: the logging HOWTO's "Optimization" switches, worth a quarter of the cost
    # of an access line.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    global _keeper
    handler = _BufferedStderr()
    handler.addFilter(_RequestIdFilter())
    _keeper = handler if handler.deferred else None
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic names each of its plugins at INFO on every start: noise to an operator.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name, named_level in (levels or {}).items():
        logging.getLogger(name).setLevel(named_level)


def _buffered(stream: TextIO) -> TextIO | None:
    """A buffered writer onto the stream's file: stderr itself writes every line at once."""
    try:
        descriptor = os.dup(stream.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None  # not a file (a test's capture)
    return io.TextIOWrapper(
        open(descriptor, "wb", buffering=1 << 16),
        encoding="utf-8",
        errors="backslashreplace",
    )


def later(logger: logging.Logger, level: int, line: Callable[..., Line], *values: Any) -> None:
    """Log a line that `line(*values)` spells out when it is written, on the writer thread.

    For a line on every call (the access lines): making a LogRecord cost a busy server
    about 30 us of CPU a call, and the rest of logging it about 20 more; kept as its
    values, the line costs the call a list append, and the writer makes its records a
    batch at a time. The line keeps its place among the others and its own time. Without
    the buffered handler (a process that did not call `configure`), it is logged at once.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _keeper
    # Gone when something else took over the root logger's handlers since (a test).
    if handler is None or handler not in logging.root.handlers:
        msg, args, fields = line(*values)
        logger.log(level, msg, *args, extra=fields)
        return
    handler.keep((logger, level, line, values, time.time()))


def flush() -> None:
    """Write every buffered line now."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _BufferedStderr):
            handler.write_out()


# A line as `later` gets it: its message, the message's arguments and its fields.
Line = tuple[str, tuple[Any, ...], dict[str, Any]]
# A line kept for the writer: logger, level, the function that spells it out, its values,
# and the time it was logged.
_Kept = tuple[logging.Logger, int, Callable[..., Line], tuple[Any, ...], float]


def _record_of(
    logger: logging.Logger,
    level: int,
    line: Callable[..., Line],
    values: tuple[Any, ...],
    created: float,
) -> logging.LogRecord:
    msg, args, fields = line(*values)
    record = logger.makeRecord(
        logger.name, level, "(unknown file)", 0, msg, args, None, extra=fields
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


# How long an INFO or DEBUG line may wait in the buffer before it is written.
FLUSH_EVERY_S = 0.2


_keeper: _BufferedStderr | None = None


class _BufferedStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, written at most every FLUSH_EVERY_S, and at once for warnings and errors.

    A record is kept as it is and formatted when its batch is written, on the writer
    thread: an access line per call made the formatting and the write a visible share
    of a busy server's CPU, and a batch of lines costs less each than lines one by one
    (and a write lets go of the GIL, whose getting back cost a call more than its line).
    A stream that is not a file (a test's capture) gets each line as it comes.
    """

    def __init__(self) -> None:
        buffered = _buffered(sys.stderr)
        super().__init__(buffered or sys.stderr)
        self.deferred = buffered is not None
        # Records, and lines kept as their values (`later`) until they are written.
        self._pending: list[logging.LogRecord | _Kept] = []
        self._stop = threading.Event()
        threading.Thread(target=self._flush_often, name="agentq-log", daemon=True).start()
        atexit.register(self.close)

    def handle(self, record: logging.LogRecord) -> bool:
        """Keep the record for the next batch (filtered now: it takes the request id)."""
        if not self.deferred:
            return bool(super().handle(record))
        kept = self.filter(record)
        if not kept:
            return False
        # A list append needs no lock: the writer takes the whole list at once.
        self._pending.append(kept if isinstance(kept, logging.LogRecord) else record)
        if record.levelno >= logging.WARNING:
            self.write_out()
        return True

    def keep(self, line: _Kept) -> None:
        """Keep a line's values for the next batch (see `later`)."""
        self._pending.append(line)

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.write_out()

    def flush(self) -> None:
        """Records wait in the buffer: the writer thread (or a warning) writes them."""

    def write_out(self) -> None:
        """Format and write every record kept so far."""
        with self.lock:  # type: ignore[union-attr]
            records, self._pending = self._pending, []
            for record in records:
                if isinstance(record, tuple):
                    record = _record_of(*record)
                    if not self.filter(record):
                        continue
                super().emit(record)
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()

    def _flush_often(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            self.write_out()

    def close(self) -> None:
        self._stop.set()
        self.write_out()
        super().close()
