"""`agentq serve` as an operator runs it: refusals to start, dev mode, SIGTERM, ports in use.

Every test runs `python -m server.cli` in a child process with an environment cleared of
agentq settings and a temporary working directory, so what it sees is what a fresh shell
would see.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from tests.conftest import PostgresServer
from tests.e2e.cli_helpers import (
    QUICK_EXIT_S,
    SECRET,
    STOP_TIMEOUT_S,
    clean_env,
    free_port,
    is_listening,
)
from tests.e2e.harness import ServeProcess
from tests.processes import agentq_command, popen, run_agentq

# --- agentq serve -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        pytest.param(None, ("VEX_JWT_SECRET", "--dev"), id="no-secret"),
        pytest.param("0123456789", ("VEX_JWT_SECRET", "too short"), id="ten-byte-secret"),
    ],
)
def test_serve_refuses_to_start_without_a_strong_secret_and_says_why(
    tmp_path: Path, secret: str | None, expected: tuple[str, ...]
) -> None:
    port = free_port()
    env = clean_env(
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{port}",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'refused.db'}",
    )
    if secret is not None:
        env["VEX_JWT_SECRET"] = secret

    started = time.monotonic()
    refused = run_agentq("serve", cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started

    assert refused.returncode == 2, refused.stderr
    assert elapsed < QUICK_EXIT_S
    for fragment in expected:
        assert fragment in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "listening" not in refused.stdout + refused.stderr
    assert not is_listening(port)
    assert not (tmp_path / "refused.db").exists(), "a refused start should touch no database"


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[ServeProcess, int]]:
    """`agentq serve --dev` on a free port with a SQLite file, and that port."""
    port = free_port()
    env = clean_env(
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{port}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
    )
    command = agentq_command("serve", "--dev")
    serve = ServeProcess(popen(command, env=env, cwd=tmp_path, merge_stderr=False))
    serve.start_reading()
    try:
        yield serve, port
    finally:
        serve.kill()


def test_serve_in_dev_mode_signs_with_the_secret_it_names_and_stops_cleanly_on_sigterm(
    dev_server: tuple[ServeProcess, int], tmp_path: Path
) -> None:
    serve, port = dev_server
    serve.wait_listening()
    shown = re.compile(r'export VEX_JWT_SECRET="\$\(cat ([^)]+)\)"')
    found = shown.search(serve.wait_stderr(shown))
    assert found, serve.output
    secret = (tmp_path / found.group(1)).read_text().strip()
    minted = run_agentq("token", "--sub", "you", cwd=tmp_path, env=clean_env(VEX_JWT_SECRET=secret))
    assert minted.returncode == 0, minted.stderr
    bearer = minted.stdout.strip()

    metadata = (("authorization", f"Bearer {bearer}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        # The stubs of grpcio-health-checking leave out the generated methods.
        health = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=""), metadata=metadata, timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        created = agents_grpc.AgentServiceStub(channel).CreateAgent(
            agents_pb.CreateAgentRequest(name="dev bot", role="You answer briefly."),
            metadata=metadata,
            timeout=10,
        )
    assert created.agent.id
    assert created.agent.name == "dev bot"

    serve.process.send_signal(signal.SIGTERM)
    try:
        returncode = serve.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"agentq serve still running {STOP_TIMEOUT_S} s after SIGTERM:\n{serve.output}"
        ) from None
    assert returncode == 0, serve.output
    assert "Traceback" not in "".join(serve.stderr)


# --- ports already in use -----------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by a listening socket that allows port sharing, as a running gRPC
    server's socket would."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port: int = holder.getsockname()[1]
        yield port


def _assert_refused_with_one_line(refused: subprocess.CompletedProcess[str], port: int) -> None:
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.splitlines()
    expected = f"agentq: cannot listen on 127.0.0.1:{port}: address already in use"
    assert expected in lines, refused.stderr
    assert lines[-1] == expected
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("taken", ["grpc", "rest"])
def test_serve_on_a_port_in_use_exits_2_with_one_line_saying_so(
    tmp_path: Path, taken_port: int, taken: str
) -> None:
    grpc_port = taken_port if taken == "grpc" else free_port()
    http_port = taken_port if taken == "rest" else free_port()
    env = clean_env(
        VEX_JWT_SECRET=SECRET,
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{http_port}",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'taken.db'}",
    )

    refused = run_agentq("serve", cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    _assert_refused_with_one_line(refused, taken_port)
    if taken == "grpc":
        assert "listening" not in refused.stdout


def test_rest_on_a_port_in_use_exits_2_with_one_line_saying_so(
    tmp_path: Path, taken_port: int
) -> None:
    env = clean_env(AGENTQ_HTTP_ADDR=f"127.0.0.1:{taken_port}")

    refused = run_agentq("rest", cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    _assert_refused_with_one_line(refused, taken_port)
    assert "listening" not in refused.stdout


# --- operator mistakes: one line and exit status 2, never a traceback --------------------


def _assert_refused_with(refused: subprocess.CompletedProcess[str], expected: str) -> None:
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines()[-1:] == [f"agentq: {expected}"], refused.stderr
    assert "Traceback" not in refused.stderr
    assert "listening" not in refused.stdout


def _refused(command: str, tmp_path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        VEX_JWT_SECRET=SECRET,
        AGENTQ_DATABASE_URL=database_url,
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{free_port()}",
    )
    return run_agentq(command, cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)


SUPPORTED_FORMS = "use sqlite:///PATH or postgresql://USER@HOST:PORT/NAME"


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        pytest.param(
            "postgres//user:hunter2@db/agentq",
            f"AGENTQ_DATABASE_URL is not a database URL; {SUPPORTED_FORMS}",
            id="malformed",
        ),
        pytest.param(
            "mysql://user:hunter2@db/agentq",
            f"AGENTQ_DATABASE_URL uses mysql, which agentq does not support; {SUPPORTED_FORMS}",
            id="unsupported",
        ),
        pytest.param(
            "sqlite:///{tmp}/missing/agentq.db",
            "cannot open the SQLite database {tmp}/missing/agentq.db: "
            "the directory {tmp}/missing does not exist",
            id="missing-sqlite-directory",
        ),
    ],
)
def test_a_database_url_agentq_cannot_use_exits_2_with_one_line_saying_why(
    tmp_path: Path, command: str, database_url: str, expected: str
) -> None:
    refused = _refused(command, tmp_path, database_url.format(tmp=tmp_path))

    _assert_refused_with(refused, expected.format(tmp=tmp_path))
    assert "hunter2" not in refused.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_postgresql_database_that_does_not_exist_exits_2_with_one_line_naming_it(
    tmp_path: Path, postgres_server: PostgresServer, command: str
) -> None:
    url = postgres_server.url_for("agentq_no_such_database")

    refused = _refused(command, tmp_path, url)

    shown = make_url(url).set(drivername="postgresql").render_as_string(hide_password=True)
    _assert_refused_with(
        refused,
        f'cannot connect to the database at {shown}: database "agentq_no_such_database" '
        "does not exist",
    )
