"""Log formats: text lines that never split, JSON objects with every field as a key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from server import logs
from server.api.context import request_id_var
from server.settings import Settings, parse_logger_levels
from tests.log_lines import JSON_LINE_FIELDS


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """What the handler `configure` installs writes, with the root logger restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    written = io.StringIO()
    yield written
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("agentq.access").setLevel(logging.NOTSET)


def _written(stream: io.StringIO) -> str:
    """What the handler has written, once the lines it keeps for its next batch are out."""
    logs.flush()
    return stream.getvalue()


def _configure(written: io.StringIO, *args: Any, **kwargs: Any) -> None:
    logs.configure(*args, **kwargs)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)


def test_json_lines_carry_time_level_logger_request_id_message_and_every_field(
    stderr: io.StringIO,
) -> None:
    _configure(stderr, "INFO", format="json")
    token = request_id_var.set("req-7")
    try:
        logging.getLogger("agentq.jobs").info(
            "job %s done", "j1", extra={"job_id": "j1", "attempts": 2, "duration_ms": 1.5}
        )
    finally:
        request_id_var.reset(token)

    [line] = _written(stderr).splitlines()
    entry = json.loads(line)
    assert set(entry) == JSON_LINE_FIELDS | {"job_id", "attempts", "duration_ms"}
    assert entry["time"].endswith("+00:00")
    assert (entry["level"], entry["logger"], entry["request_id"]) == (
        "INFO",
        "agentq.jobs",
        "req-7",
    )
    assert (entry["message"], entry["job_id"], entry["attempts"]) == ("job j1 done", "j1", 2)
    assert entry["duration_ms"] == 1.5


def test_a_request_id_given_with_the_line_wins_over_the_current_calls(
    stderr: io.StringIO,
) -> None:
    _configure(stderr, "INFO", format="json")

    logging.getLogger("agentq.access").info("x", extra={"request_id": "from-rest"})

    assert json.loads(_written(stderr))["request_id"] == "from-rest"


def test_a_json_line_with_an_exception_holds_its_traceback_in_one_line(
    stderr: io.StringIO,
) -> None:
    _configure(stderr, "INFO", format="json")

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")

    [line] = _written(stderr).splitlines()
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_a_text_line_escapes_line_breaks_from_the_values_it_shows(stderr: io.StringIO) -> None:
    _configure(stderr, "INFO")

    logging.getLogger("agentq.access").info("tenant=%s", "evil\n2026-01-01 INFO forged line")

    [line] = _written(stderr).splitlines()
    assert line.endswith(" INFO agentq.access [-] tenant=evil\\n2026-01-01 INFO forged line")


def test_a_logger_named_in_levels_is_silenced_while_the_rest_still_log(
    stderr: io.StringIO,
) -> None:
    _configure(stderr, "INFO", levels={"agentq.access": "WARNING"})

    logging.getLogger("agentq.access").info("an access line")
    logging.getLogger("server.serve").info("a server line")

    assert "an access line" not in _written(stderr)
    assert "a server line" in _written(stderr)


def test_logger_levels_are_read_as_comma_separated_logger_equals_level() -> None:
    assert parse_logger_levels(" agentq.access=warning, agentq.jobs=ERROR ,") == {
        "agentq.access": "WARNING",
        "agentq.jobs": "ERROR",
    }


@pytest.mark.parametrize("spec", ["agentq.access", "=INFO", "agentq.access=LOUD"])
def test_a_malformed_logger_level_is_refused_with_the_variables_name(spec: str) -> None:
    with pytest.raises(ValueError, match="AGENTQ_LOG_LEVELS"):
        Settings(log_levels=spec)


def test_an_unknown_log_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="AGENTQ_LOG_LEVEL"):
        Settings(log_level="LOUD")
