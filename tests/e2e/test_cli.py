"""The `agentq` command as an operator runs it: serve, token, migrate and worker.

Every test runs `python -m server.cli` in a child process with an environment cleared of
agentq settings and a temporary working directory, so what it sees is what a fresh shell
would see.
"""

from __future__ import annotations

import importlib.metadata
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from rest_shim.settings import RestSettings
from server.auth.principal import ROLES
from server.settings import Settings
from tests.conftest import PostgresServer

SECRET = "cli-test-secret-that-is-long-enough-0123456789"
COMMAND_TIMEOUT_S = 30
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15
# A refusal to start should come before any slow set-up; this only catches a hang.
QUICK_EXIT_S = 15
JWT_PATTERN = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _clean_env(**settings: str) -> dict[str, str]:
    """os.environ without any agentq setting or secret, plus `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AGENTQ_") and key != "VEX_JWT_SECRET"
    }
    env.update(settings)
    return env


def _agentq(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run one `agentq` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _free_port() -> int:
    """A TCP port that nothing was listening on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _is_listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _decode(token: str, *, issuer: str = "vex-api") -> dict[str, object]:
    """The claims of a token, verified with the test secret, HS256 only."""
    claims: dict[str, object] = jwt.decode(
        token, SECRET.encode("utf-8"), algorithms=["HS256"], issuer=issuer
    )
    return claims


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
    port = _free_port()
    env = _clean_env(
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{port}",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'refused.db'}",
    )
    if secret is not None:
        env["VEX_JWT_SECRET"] = secret

    started = time.monotonic()
    refused = _agentq("serve", cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started

    assert refused.returncode == 2, refused.stderr
    assert elapsed < QUICK_EXIT_S
    for fragment in expected:
        assert fragment in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "listening" not in refused.stdout + refused.stderr
    assert not _is_listening(port)
    assert not (tmp_path / "refused.db").exists(), "a refused start should touch no database"


@dataclass
class ServeProcess:
    """`agentq serve` in a child process, with its output read as it comes."""

    process: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _listening: queue.Queue[str] = field(default_factory=queue.Queue)

    def start_reading(self) -> None:
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout.append(line)
            if "agentq gRPC listening on port" in line:
                self._listening.put(line)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def wait_listening(self) -> str:
        """The "listening" line, or an AssertionError with everything printed so far."""
        try:
            return self._listening.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"agentq serve did not start:\n{self.output}") from None

    def wait_stderr(self, pattern: re.Pattern[str]) -> str:
        """All of stderr once `pattern` matches it: stdout and stderr are read by separate
        threads, so a line on one can be seen before an earlier line on the other."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not pattern.search("".join(self.stderr)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return "".join(self.stderr)

    @property
    def output(self) -> str:
        return "stdout:\n" + "".join(self.stdout) + "\nstderr:\n" + "".join(self.stderr)


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[ServeProcess, int]]:
    """`agentq serve --dev` on a free port with a SQLite file, and that port."""
    port = _free_port()
    env = _clean_env(
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{port}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--dev"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    serve = ServeProcess(process)
    serve.start_reading()
    try:
        yield serve, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_serve_in_dev_mode_signs_with_the_secret_it_names_and_stops_cleanly_on_sigterm(
    dev_server: tuple[ServeProcess, int], tmp_path: Path
) -> None:
    serve, port = dev_server
    serve.wait_listening()
    shown = re.compile(r'export VEX_JWT_SECRET="\$\(cat ([^)]+)\)"')
    found = shown.search(serve.wait_stderr(shown))
    assert found, serve.output
    secret = (tmp_path / found.group(1)).read_text().strip()
    minted = _agentq("token", "--sub", "you", cwd=tmp_path, env=_clean_env(VEX_JWT_SECRET=secret))
    assert minted.returncode == 0, minted.stderr
    bearer = minted.stdout.strip()

    metadata = (("authorization", f"Bearer {bearer}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
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


# --- agentq token -------------------------------------------------------------------------


def test_token_mints_an_hs256_jwt_with_the_requested_claims(tmp_path: Path) -> None:
    minted = _agentq(
        "token",
        *("--sub", "alice", "--role", "agent", "--tenant", "acme", "--ttl", "120"),
        cwd=tmp_path,
        env=_clean_env(VEX_JWT_SECRET=SECRET),
    )

    assert minted.returncode == 0, minted.stderr
    bearer = minted.stdout.strip()
    assert JWT_PATTERN.fullmatch(bearer), minted.stdout
    assert jwt.get_unverified_header(bearer)["alg"] == "HS256"
    claims = _decode(bearer)
    assert claims["sub"] == "alice"
    assert claims["role"] == "agent"
    assert claims["tenant_id"] == "acme"
    assert claims["iss"] == "vex-api"
    assert isinstance(claims["iat"], int)
    assert isinstance(claims["exp"], int)
    assert claims["exp"] - claims["iat"] == 120
    assert abs(claims["iat"] - time.time()) < 60


def test_token_uses_the_configured_issuer(tmp_path: Path) -> None:
    minted = _agentq(
        "token",
        *("--sub", "alice"),
        cwd=tmp_path,
        env=_clean_env(VEX_JWT_SECRET=SECRET, AGENTQ_JWT_ISSUER="custom"),
    )

    assert minted.returncode == 0, minted.stderr
    assert _decode(minted.stdout.strip(), issuer="custom")["iss"] == "custom"


def test_token_without_a_secret_exits_2_and_names_vex_jwt_secret(tmp_path: Path) -> None:
    refused = _agentq("token", "--sub", "alice", cwd=tmp_path, env=_clean_env())

    assert refused.returncode == 2
    assert "VEX_JWT_SECRET" in refused.stderr
    assert refused.stdout == ""
    assert "Traceback" not in refused.stderr


def test_token_with_a_lifetime_of_zero_exits_2_and_names_the_option(tmp_path: Path) -> None:
    refused = _agentq(
        "token", "--sub", "alice", "--ttl", "0", cwd=tmp_path, env=_clean_env(VEX_JWT_SECRET=SECRET)
    )

    assert refused.returncode == 2
    assert "--ttl" in refused.stderr
    assert refused.stdout == ""
    assert "Traceback" not in refused.stderr


# --- agentq migrate -----------------------------------------------------------------------


def _tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_migrate_creates_the_agents_and_jobs_tables_and_can_run_again(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    env = _clean_env(AGENTQ_DATABASE_URL=f"sqlite:///{database}")

    first = _agentq("migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert {"agents", "jobs"} <= _tables(database)

    second = _agentq("migrate", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert {"agents", "jobs"} <= _tables(database)


# --- agentq worker ------------------------------------------------------------------------


def test_worker_without_a_redis_url_exits_and_says_it_needs_agentq_redis_url(
    tmp_path: Path,
) -> None:
    env = _clean_env(VEX_JWT_SECRET=SECRET, AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}")

    refused = _agentq("worker", cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    assert refused.returncode != 0
    assert "AGENTQ_REDIS_URL" in refused.stderr
    assert "Traceback" not in refused.stderr


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
    grpc_port = taken_port if taken == "grpc" else _free_port()
    http_port = taken_port if taken == "rest" else _free_port()
    env = _clean_env(
        VEX_JWT_SECRET=SECRET,
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{http_port}",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'taken.db'}",
    )

    refused = _agentq("serve", cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    _assert_refused_with_one_line(refused, taken_port)
    if taken == "grpc":
        assert "listening" not in refused.stdout


def test_rest_on_a_port_in_use_exits_2_with_one_line_saying_so(
    tmp_path: Path, taken_port: int
) -> None:
    env = _clean_env(AGENTQ_HTTP_ADDR=f"127.0.0.1:{taken_port}")

    refused = _agentq("rest", cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    _assert_refused_with_one_line(refused, taken_port)
    assert "listening" not in refused.stdout


# --- operator mistakes: one line and exit status 2, never a traceback --------------------


def _assert_refused_with(refused: subprocess.CompletedProcess[str], expected: str) -> None:
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines()[-1:] == [f"agentq: {expected}"], refused.stderr
    assert "Traceback" not in refused.stderr
    assert "listening" not in refused.stdout


def _refused(command: str, tmp_path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = _clean_env(
        VEX_JWT_SECRET=SECRET,
        AGENTQ_DATABASE_URL=database_url,
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{_free_port()}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
    )
    return _agentq(command, cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)


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


# --- agentq --version and --help ----------------------------------------------------------


def test_version_prints_the_installed_package_version(tmp_path: Path) -> None:
    shown = _agentq("--version", cwd=tmp_path, env=_clean_env())

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"agentq {importlib.metadata.version('agentq')}\n"


def _setting_names(*classes: type[BaseSettings]) -> set[str]:
    """The environment variable of every field of the settings classes."""
    names = set()
    for settings_class in classes:
        prefix = settings_class.model_config.get("env_prefix", "")
        for name, info in settings_class.model_fields.items():
            alias = info.validation_alias
            names.add(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


ENV_NAME = re.compile(r"\b(?:AGENTQ_[A-Z0-9_]+|VEX_JWT_SECRET)\b")


@pytest.mark.parametrize("command", ["serve", "rest", "worker", "token", "migrate"])
def test_each_command_help_describes_it_and_lists_only_real_environment_variables(
    tmp_path: Path, command: str
) -> None:
    shown = _agentq(command, "--help", cwd=tmp_path, env=_clean_env())

    assert shown.returncode == 0, shown.stderr
    description = shown.stdout.split("\n\n")[1]
    assert not description.lstrip().startswith(("-", "options")), shown.stdout
    epilog = shown.stdout.partition("environment:")[2]
    listed = set(ENV_NAME.findall(epilog))
    assert listed, shown.stdout
    assert listed <= _setting_names(Settings, RestSettings), listed - _setting_names(
        Settings, RestSettings
    )


def test_serve_help_lists_every_setting_and_rest_help_every_shim_setting(tmp_path: Path) -> None:
    serve = _agentq("serve", "--help", cwd=tmp_path, env=_clean_env())
    rest = _agentq("rest", "--help", cwd=tmp_path, env=_clean_env())

    assert _setting_names(Settings) <= set(ENV_NAME.findall(serve.stdout))
    assert _setting_names(RestSettings) <= set(ENV_NAME.findall(rest.stdout))


def test_token_help_offers_every_role(tmp_path: Path) -> None:
    shown = _agentq("token", "--help", cwd=tmp_path, env=_clean_env())

    for role in ROLES:
        assert role in shown.stdout


def test_token_with_an_unknown_role_exits_2_and_names_the_roles(tmp_path: Path) -> None:
    refused = _agentq(
        "token",
        "--sub",
        "alice",
        "--role",
        "root",
        cwd=tmp_path,
        env=_clean_env(VEX_JWT_SECRET=SECRET),
    )

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert all(role in refused.stderr for role in ROLES)


def test_token_without_a_secret_does_not_suggest_a_dev_flag_it_lacks(tmp_path: Path) -> None:
    refused = _agentq("token", "--sub", "alice", cwd=tmp_path, env=_clean_env())

    assert refused.returncode == 2
    assert "--dev" not in refused.stderr


HEAVY_MODULES = ("grpc", "sqlalchemy", "uvicorn", "pydantic", "jwt", "dramatiq", "fastapi")


def test_help_imports_none_of_the_server_libraries(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from server.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(set({HEAVY_MODULES!r}) & set(sys.modules)), file=sys.stderr)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )

    assert "usage: agentq" in shown.stdout
    assert shown.stderr.strip() == "[]"
