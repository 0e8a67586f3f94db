"""Smaller hardening: the admin token's length, hidden SQL parameters, and HTTP hygiene.

The HTTP tests talk to the shim over real sockets, raw where the request must be one no
HTTP client would send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from server.logs import JsonFormatter, TextFormatter
from server.store.migrate import create_db_engine
from tests.e2e.cli_helpers import SECRET, clean_env, free_port, is_listening
from tests.e2e.harness import RestThread
from tests.processes import run_agentq

SHORT_ADMIN_TOKEN = "x" * 31
LONG_ADMIN_TOKEN = "y" * 32
# A value no error text may show: it stands for a prompt or a key in a statement.
MARKER = "parameter-that-must-not-be-logged"


# --- the admin token ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
def test_an_admin_token_under_32_characters_stops_every_command_with_one_line(
    tmp_path: Path, command: str
) -> None:
    port = free_port()
    env = clean_env(
        VEX_JWT_SECRET=SECRET,
        AGENTQ_ADMIN_TOKEN=SHORT_ADMIN_TOKEN,
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{port}",
        AGENTQ_REDIS_URL="redis://127.0.0.1:6379/0",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'refused.db'}",
    )

    refused = run_agentq(command, cwd=tmp_path, env=env)

    assert refused.returncode == 2
    assert (
        refused.stderr == "agentq: AGENTQ_ADMIN_TOKEN must be at least 32 characters (it has 31)\n"
    )
    assert SHORT_ADMIN_TOKEN not in refused.stdout + refused.stderr
    assert not is_listening(port)
    assert not (tmp_path / "refused.db").exists()


def test_a_32_character_admin_token_is_accepted(tmp_path: Path) -> None:
    env = clean_env(
        AGENTQ_ADMIN_TOKEN=LONG_ADMIN_TOKEN,
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'ok.db'}",
    )

    migrated = run_agentq("migrate", cwd=tmp_path, env=env)

    assert migrated.returncode == 0, migrated.stderr


def test_a_bad_setting_is_one_line_that_never_repeats_the_secret(tmp_path: Path) -> None:
    env = clean_env(VEX_JWT_SECRET=SECRET, AGENTQ_DEFAULT_TIER="no-such-tier")

    refused = run_agentq("migrate", cwd=tmp_path, env=env)

    assert refused.returncode == 2
    assert refused.stderr == (
        "agentq: AGENTQ_DEFAULT_TIER 'no-such-tier' is not one of: "
        "free, pro, standard, starter, unlimited\n"
    )
    assert SECRET[:5] not in refused.stderr


# --- SQL parameters -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'params.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


def test_a_failed_statement_names_its_sql_but_never_its_parameters(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        with pytest.raises(Exception) as failed, engine.connect() as connection:
            connection.execute(text("SELECT no_such_column, :marker"), {"marker": MARKER})
    finally:
        engine.dispose()

    message = str(failed.value)
    assert "no_such_column" in message
    assert MARKER not in message
    assert "[SQL parameters hidden due to hide_parameters=True]" in message


def test_an_asyncpg_error_in_a_log_line_never_shows_the_parameter(
    fresh_postgres_url: str,
) -> None:
    dsn = fresh_postgres_url.replace("+psycopg", "")

    async def provoke() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.fetchrow("SELECT $1::int", MARKER)
        finally:
            await connection.close()

    with pytest.raises(asyncpg.DataError) as raised:
        asyncio.run(provoke())
    assert MARKER in str(raised.value)  # asyncpg's own text quotes the value

    for formatter in (TextFormatter(), JsonFormatter()):
        record = logging.LogRecord(
            "server.worker.engine",
            logging.ERROR,
            "",
            0,
            "failed",
            None,
            (raised.type, raised.value, raised.tb),
        )
        record.request_id = "-"
        written = formatter.format(record)
        assert MARKER not in written
        assert "invalid input for query argument $1: [parameter hidden]" in written


# --- HTTP hygiene -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/health"), ("GET", "/no/such/route"), ("GET", "/docs"), ("GET", "/openapi.json")],
)
def test_no_response_names_the_server_software(rest: RestThread, method: str, path: str) -> None:
    response = httpx.request(method, rest.url + path, timeout=10)

    assert "server" not in response.headers
    assert response.headers["x-request-id"]


def _raw_exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are; the status line, headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


MALFORMED = {
    "bad-request-line": b"GARBAGE\r\n\r\n",
    "space-in-header-name": b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    "control-byte-in-path": b"GET /he\x01alth HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-content-length": b"POST /api/v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_http_request_gets_the_contract_error_body_and_a_request_id(
    rest: RestThread, request_bytes: bytes
) -> None:
    status, headers, body = _raw_exchange(rest.port, request_bytes)

    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert "server" not in headers
    uuid.UUID(headers["x-request-id"])
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {
        "detail": "Invalid HTTP request",
        "error": {"code": "BAD_REQUEST", "message": "Invalid HTTP request", "status": 400},
    }


def test_after_a_malformed_request_the_shim_still_answers(rest: RestThread) -> None:
    _raw_exchange(rest.port, MALFORMED["bad-request-line"])

    response = httpx.get(rest.url + "/health", timeout=10)

    assert response.status_code == 200
