"""What the tests of agentq's JSON logs share."""

from __future__ import annotations

# The fields of every JSON log line; a line adds the fields its record was given.
JSON_LINE_FIELDS = frozenset({"time", "level", "logger", "request_id", "message"})
