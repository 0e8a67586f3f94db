"""`pip install ./clients/python` in a fresh venv: the client alone, none of the server's
libraries, and the README's script run with it against a real server killed mid-stream
and started again on the same port and database.

It installs from the package registries, as a user would, so scripts/test.sh runs it as a
step of its own (`client`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import clean_env, free_port
from tests.e2e.harness import ServeProcess, env_for, settings_for, token
from tests.processes import ChildProcess, agentq_command, popen

pytestmark = pytest.mark.gate

ROOT = Path(__file__).resolve().parents[2]
SERVER_LIBRARIES = {"sqlalchemy", "asyncpg", "psycopg", "psycopg-binary", "dramatiq", "uvicorn"}
SERVER_LIBRARIES |= {"fastapi", "alembic", "pydantic", "redis", "agentq"}
INSTALL_TIMEOUT_S = 300
SCRIPT_TIMEOUT_S = 120
EVENT_LINE = re.compile(r"^(\d+) (\w+) ?(.*)$")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with `pip install ./clients/python` and nothing else; its python."""
    folder = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT / "clients" / "python")],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def _readme_script() -> str:
    """The Python example of the README's "Python SDK and CLI" section."""
    section = (ROOT / "README.md").read_text().split("## Python SDK and CLI", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_client_installs_without_any_server_library(fresh_venv: Path) -> None:
    listed = subprocess.run(
        [str(fresh_venv), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    package = next((fresh_venv.parents[1] / "lib").glob("python3*/site-packages/agentq"))

    assert {"agentq-client", "grpcio", "protobuf", "googleapis-common-protos"} <= names
    assert names & SERVER_LIBRARIES == set()
    assert sorted(p.name for p in package.iterdir() if p.name != "__pycache__") == [
        "__init__.py",
        "client",
        "py.typed",
        "v1",
    ]
    assert (package / "v1" / "job_service_pb2_grpc.pyi").is_file()


def test_the_clients_own_agentq_has_only_the_user_commands(fresh_venv: Path) -> None:
    shown = subprocess.run(
        [str(fresh_venv.with_name("agentq")), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert shown.returncode == 0, shown.stderr
    assert "{run,agents,jobs}" in shown.stdout
    assert re.search(r"\b(serve|worker|migrate)\b", shown.stdout) is None, shown.stdout


def test_code_using_the_client_passes_mypy_strict(fresh_venv: Path, tmp_path: Path) -> None:
    script = tmp_path / "uses_the_client.py"
    script.write_text(_readme_script())
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    checked = subprocess.run(
        [*mypy, "--python-executable", str(fresh_venv), str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


class Servers:
    """`agentq serve` on one port and one SQLite file, stopped and started at will."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        # Each answer streams over three seconds. The attempt a killed server was running
        # holds a lease of five seconds (time limit and grace); once it lapses, the next
        # server's sweeper runs the job again.
        settings = settings_for(
            database_url=f"sqlite:///{folder / 'agentq.db'}",
            grpc_addr=f"127.0.0.1:{self.port}",
            http_addr="127.0.0.1:0",
            builtin_latency_ms=3000,
            job_time_limit_s=4,
            lease_grace_s=1,
            requeue_after_s=1,
        )
        self.env, self.folder = env_for(settings), folder
        self.running: ServeProcess | None = None

    def start(self) -> None:
        command = agentq_command("serve")
        started = ServeProcess(popen(command, env=self.env, cwd=self.folder, merge_stderr=False))
        self.running = started.start_reading()
        self.running.wait_listening()

    def stop(self) -> None:
        if self.running is not None:
            assert self.running.stop(timeout_s=20), self.running.output
            self.running = None

    def crash(self) -> None:
        """SIGKILL: every stream is cut at once, with no goodbye."""
        assert self.running is not None
        self.running.kill()
        self.running = None


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """A started server that the test may restart."""
    made = Servers(tmp_path)
    made.start()
    yield made
    made.stop()


def test_the_readme_script_streams_through_a_server_restart_without_gaps_or_repeats(
    fresh_venv: Path, servers: Servers, tmp_path: Path
) -> None:
    script = tmp_path / "example.py"
    script.write_text(_readme_script())
    env = clean_env(AGENTQ_URL=f"127.0.0.1:{servers.port}", AGENTQ_TOKEN=token("alice"))
    run = ChildProcess(popen([str(fresh_venv), str(script)], env=env, cwd=tmp_path))
    run.start_reading()
    try:
        assert run.wait_line(r"^\d+ token ", timeout_s=SCRIPT_TIMEOUT_S), run.output
        servers.crash()  # mid-stream: the answer is still streaming
        printed_before_restart = len(run.stdout)
        servers.start()
        assert run.process.wait(timeout=SCRIPT_TIMEOUT_S) == 0, run.output
    finally:
        run.stop(timeout_s=10)
    run.wait_line("^JobStatus|^completed", timeout_s=10)

    lines = run.output.splitlines()
    assert lines[0] == 'As "You answer in one sentence.": What is agentq?'
    events = [EVENT_LINE.match(line) for line in lines[1:-1]]
    assert all(events), run.output
    sequences = [int(event.group(1)) for event in events if event]
    kinds = [event.group(2) for event in events if event]
    assert sequences == list(range(1, len(sequences) + 1)), run.output
    assert kinds[0] == "queued" and kinds[-1] == "completed", run.output
    # The killed server's attempt was run again: a second start, and the answer again.
    assert kinds.count("started") == 2, run.output
    assert lines[-1] == "completed"
    # Some events were printed only after the first server had stopped: the stream
    # resumed on the second one, after the last event seen.
    assert 2 <= printed_before_restart - 1 < len(sequences), run.output
    print(f"{printed_before_restart - 1} events before the restart:\n{run.output}")
