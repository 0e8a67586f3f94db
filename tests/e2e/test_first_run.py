"""A new user's first run of `agentq serve --dev`, and Redis down when a process starts.

The processes are real (`python -m server.cli` in a child process, as tests/e2e/test_cli.py
runs them), with an environment cleared of agentq settings.
"""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from tests.e2e.cli_helpers import (
    JWT_PATTERN,
    QUICK_EXIT_S,
    SECRET,
    STOP_TIMEOUT_S,
    clean_env,
    free_port,
)
from tests.e2e.harness import ServeProcess
from tests.integration.test_rate_limit_redis import PrivateRedis, private_redis_server
from tests.processes import agentq_command, popen, run_agentq

BANNER_END = re.compile(r"curl -H .*/api/v1/agents\n")
SECRET_FILE_COMMAND = re.compile(r'export VEX_JWT_SECRET="\$\(cat ([^)]+)\)"')


def _start(command: list[str], *, cwd: Path, env: dict[str, str]) -> ServeProcess:
    started = ServeProcess(popen(agentq_command(*command), env=env, cwd=cwd, merge_stderr=False))
    return started.start_reading()


def _stop(started: ServeProcess) -> None:
    if not started.stop(timeout_s=STOP_TIMEOUT_S):
        raise AssertionError(f"still running after SIGTERM:\n{started.output}")


class DevServers:
    """`agentq serve --dev` in one directory, started as often as a test likes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.env = clean_env(
            AGENTQ_GRPC_ADDR=f"127.0.0.1:{self.grpc_port}",
            AGENTQ_HTTP_ADDR=f"127.0.0.1:{self.http_port}",
            AGENTQ_DATABASE_URL="sqlite:///agentq.db",
        )
        self.running: list[ServeProcess] = []

    def start(self) -> tuple[ServeProcess, str]:
        """A started server and its banner (everything on stderr up to the banner's end)."""
        server = _start(["serve", "--dev"], cwd=self.directory, env=self.env)
        self.running.append(server)
        server.wait_listening()
        # stdout and stderr are read by separate threads: the REST line, printed before
        # the banner, may be read after it.
        server.wait_rest()
        stderr = server.wait_stderr(BANNER_END)
        assert BANNER_END.search(stderr), server.output
        return server, stderr

    def mint(self, secret_file: str) -> str:
        """A user token, minted as the banner says: with the secret from its file."""
        secret = (self.directory / secret_file).read_text().strip()
        minted = run_agentq(
            "token",
            *("--sub", "you", "--role", "user"),
            cwd=self.directory,
            env=clean_env(VEX_JWT_SECRET=secret),
        )
        assert minted.returncode == 0, minted.stderr
        return minted.stdout.strip()


@pytest.fixture
def dev_servers(tmp_path: Path) -> Iterator[DevServers]:
    servers = DevServers(tmp_path)
    try:
        yield servers
    finally:
        for server in servers.running:
            server.kill()


def test_dev_mode_says_so_names_things_as_they_are_and_prints_the_next_commands(
    dev_servers: DevServers,
) -> None:
    server, _ = dev_servers.start()
    output = server.output
    rest = f"http://127.0.0.1:{dev_servers.http_port}"

    assert "agentq is running in DEVELOPMENT MODE: not for production." in output
    assert "Only this machine can reach it: it listens on 127.0.0.1." in output
    assert "The admin API (/admin/...) is off: set AGENTQ_ADMIN_TOKEN to turn it on." in output
    assert "admin token" not in output.lower()
    assert f"agentq REST listening on port {dev_servers.http_port}: {rest} " in output
    assert f"(API docs at {rest}/docs)" in output
    assert f"agentq web console at {rest}/console\n" in output
    assert 'export VEX_JWT_SECRET="$(cat agentq.db.dev-secret)"' in output
    assert "token --sub you --role user)" in output
    assert f'curl -H "Authorization: Bearer $TOKEN" {rest}/api/v1/agents' in output
    assert not JWT_PATTERN.search(output), "the banner should print no token"
    listening = [line for line in output.splitlines() if "listening" in line]
    assert listening == [
        f"agentq gRPC listening on port {dev_servers.grpc_port} of 127.0.0.1 "
        "(sqlite, embedded, with in-process workers)",
        f"agentq REST listening on port {dev_servers.http_port}: {rest} (API docs at {rest}/docs)",
    ]
    _stop(server)


def test_dev_mode_keeps_its_secret_in_a_private_file_never_prints_it_and_reuses_it(
    dev_servers: DevServers,
) -> None:
    first, banner = dev_servers.start()
    shown = SECRET_FILE_COMMAND.search(banner)
    assert shown, banner
    secret_file = dev_servers.directory / shown.group(1)
    assert secret_file == dev_servers.directory / "agentq.db.dev-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert secret not in first.output

    bearer = dev_servers.mint(shown.group(1))
    metadata = (("authorization", f"Bearer {bearer}"),)
    with grpc.insecure_channel(f"127.0.0.1:{dev_servers.grpc_port}") as channel:
        created = agents_grpc.AgentServiceStub(channel).CreateAgent(
            agents_pb.CreateAgentRequest(name="dev bot", role="You answer briefly."),
            metadata=metadata,
            timeout=10,
        )
    _stop(first)

    second, _ = dev_servers.start()
    assert secret_file.read_text().strip() == secret
    with grpc.insecure_channel(f"127.0.0.1:{dev_servers.grpc_port}") as channel:
        again = agents_grpc.AgentServiceStub(channel).GetAgent(
            agents_pb.GetAgentRequest(agent_id=created.agent.id), metadata=metadata, timeout=10
        )
    assert again.agent.name == "dev bot"
    assert secret not in second.output
    _stop(second)


def test_dev_mode_listens_on_an_address_set_explicitly_and_says_others_can_reach_it(
    tmp_path: Path,
) -> None:
    grpc_port = free_port()
    env = clean_env(
        AGENTQ_GRPC_ADDR=f"0.0.0.0:{grpc_port}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        AGENTQ_DATABASE_URL="sqlite:///agentq.db",
    )
    server = _start(["serve", "--dev"], cwd=tmp_path, env=env)
    try:
        line = server.wait_listening()
        stderr = server.wait_stderr(BANNER_END)
    finally:
        _stop(server)

    assert line.startswith(f"agentq gRPC listening on port {grpc_port} of every interface "), line
    assert "Other machines can reach it: AGENTQ_GRPC_ADDR/AGENTQ_HTTP_ADDR say so." in stderr


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        pytest.param(
            "postgresql://postgres@127.0.0.1:5432/agentq",
            "agentq: development mode keeps its JWT secret beside a SQLite database file; "
            "with this AGENTQ_DATABASE_URL, set VEX_JWT_SECRET instead",
            id="postgresql",
        ),
        pytest.param(
            "sqlite:///shared.db",
            "agentq: shared.db.dev-secret holds the development JWT secret but other users may "
            "read it (mode 0644); run: chmod 600 shared.db.dev-secret",
            id="readable-by-others",
        ),
    ],
)
def test_dev_mode_refuses_a_secret_it_cannot_keep_private_with_one_line(
    tmp_path: Path, database_url: str, expected: str
) -> None:
    exposed = tmp_path / "shared.db.dev-secret"
    exposed.write_text(SECRET + "\n")
    exposed.chmod(0o644)
    env = clean_env(
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        AGENTQ_DATABASE_URL=database_url,
    )

    refused = run_agentq("serve", "--dev", cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines()[-1:] == [expected], refused.stderr
    assert "Traceback" not in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr


# --- Redis down at start ------------------------------------------------------------------

UNREACHABLE = re.compile(
    r"ERROR server\.redis_client \[-\] Redis at redis://127\.0\.0\.1:(\d+)/0 is unreachable "
    r"\(Error 111 connecting to 127\.0\.0\.1:\1\. Connection refused\.\); jobs wait until it "
    r"answers, and agentq keeps trying quietly"
)


@pytest.fixture
def stopped_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, stopped: its port refuses until it starts again."""
    for server in private_redis_server(tmp_path):
        server.kill()
        yield server


@pytest.mark.redis
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_redis_down_at_start_is_said_once_then_retried_quietly_until_it_answers(
    tmp_path: Path, stopped_redis: PrivateRedis, command: str
) -> None:
    redis_server = stopped_redis
    url = redis_server.url.replace("redis://", "redis://:hunter2@")
    env = clean_env(
        VEX_JWT_SECRET=SECRET,
        AGENTQ_REDIS_URL=url,
        AGENTQ_REDIS_NAMESPACE=f"agentq-first-run-{tmp_path.name}",
        AGENTQ_DATABASE_URL="sqlite:///agentq.db",
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{free_port()}",
    )
    process = _start([command], cwd=tmp_path, env=env)
    try:
        process.wait_stderr(UNREACHABLE)
        # Long enough for the broker's consumers to have retried twice (every 3 s).
        time.sleep(7)
        while_down = "".join(process.stderr)
        redis_server.start()
        answers = re.compile(
            rf"WARNING server\.redis_client \[-\] Redis at {redis_server.url} "
            r"answers again\n"
        )
        after = process.wait_stderr(answers)
    finally:
        _stop(process)
        redis_server.kill()

    assert len(UNREACHABLE.findall(while_down)) == 1, while_down
    assert "CRITICAL" not in while_down
    assert "Restarting consumer" not in while_down
    assert "hunter2" not in process.output
    assert answers.search(after), process.output
    assert "Traceback" not in process.output
