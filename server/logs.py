"""Logging set-up: every line carries the request id of the call it belongs to.

Two formats: `text` (the default), one readable line per record, and `json`, one JSON
object per line whose keys are the record's time, level, logger, request id, message and
every field the line was logged with (an access line's route, status and duration; a
job line's outcome and attempts), so a log pipeline needs no parsing rules.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from server.api.context import request_id_var

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
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, named_level in (levels or {}).items():
        logging.getLogger(name).setLevel(named_level)
