"""`agentq run`, `agents` and `jobs` as a user types them: a real terminal, a real server.

The commands run as `python -m server.cli` (the server's `agentq`, which has the user
commands) or `python -m agentq.client` (the client distribution's own), in a child
process whose stdout is a pseudo-terminal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agentq.client import Client, JobStatus
from tests.client.terminal import run_in_terminal
from tests.e2e.cli_helpers import clean_env
from tests.e2e.harness import ServerThread, running_server, settings_for, token
from tests.processes import agentq_command

ROLE = "You answer briefly."
PROMPT = "one two three four five six seven eight"
ANSWER = f'As "{ROLE}": {PROMPT}'
# The built-in provider streams its answer in four pieces over this many milliseconds.
LATENCY_MS = 2000


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server whose answers take two seconds, in four pieces half a second apart."""
    database = tmp_path_factory.mktemp("cli") / "agentq.db"
    settings = settings_for(database_url=f"sqlite:///{database}", builtin_latency_ms=LATENCY_MS)
    with running_server(settings, in_process_workers=True) as started:
        yield started


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server whose every job runs past its time limit on its only attempt, and fails."""
    database = tmp_path_factory.mktemp("cli-failing") / "agentq.db"
    settings = settings_for(
        database_url=f"sqlite:///{database}",
        builtin_latency_ms=LATENCY_MS,
        job_time_limit_s=0.3,
        max_attempts=1,
    )
    with running_server(settings, in_process_workers=True) as started:
        yield started


def _env(server: ServerThread, tenant: str) -> dict[str, str]:
    bearer = token("alice", tenant=tenant)
    return clean_env(AGENTQ_URL=f"127.0.0.1:{server.port}", AGENTQ_TOKEN=bearer)


def _agent(server: ServerThread, tenant: str) -> str:
    with Client(f"127.0.0.1:{server.port}", token=token("alice", tenant=tenant)) as client:
        return client.agents.create(name="echo", role=ROLE).id


def test_run_follow_shows_the_answer_arriving_in_pieces_and_exits_0(slow: ServerThread) -> None:
    agent_id = _agent(slow, "follow")

    shown = run_in_terminal(
        agentq_command("run", "--agent", agent_id, PROMPT, "--follow"), env=_env(slow, "follow")
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == ANSWER + "\n"
    # The first piece was on the screen well before the last: tokens arrive as they stream.
    assert shown.first_seen(ANSWER) - shown.first_seen('As "You') > 0.8
    assert len([text for _, text in shown.chunks if text.strip()]) >= 3
    status = shown.stderr.splitlines()
    assert status[0].startswith("agentq: queued job ")
    assert status[1] == "agentq: started (attempt 1)"
    assert status[-1].startswith("agentq: completed (")


def test_a_failed_job_exits_1_with_its_error_on_stderr(failing: ServerThread) -> None:
    agent_id = _agent(failing, "fails")

    shown = run_in_terminal(
        agentq_command("run", "--agent", agent_id, PROMPT, "--follow"),
        env=_env(failing, "fails"),
    )

    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert shown.stderr.splitlines()[-1] == "agentq: failed: Job exceeded its time limit of 0.3s"


def test_watching_a_job_that_is_cancelled_mid_answer_exits_3(slow: ServerThread) -> None:
    agent_id = _agent(slow, "cancel")
    with Client(f"127.0.0.1:{slow.port}", token=token("alice", tenant="cancel")) as client:
        handle = client.execute(agent_id, PROMPT)
        cancelled: list[bool] = []

        def cancel_once_streaming(shown: str) -> None:
            if shown and not cancelled:
                cancelled.append(True)
                handle.cancel()

        shown = run_in_terminal(
            agentq_command("jobs", "watch", handle.id),
            env=_env(slow, "cancel"),
            on_output=cancel_once_streaming,
        )
        job = handle.get()

    assert shown.returncode == 3, shown.stdout + shown.stderr
    assert job.status is JobStatus.CANCELLED
    assert shown.stderr.splitlines()[-1] == "agentq: cancelled"
    assert ANSWER not in shown.stdout


def test_agents_and_jobs_commands_print_json_for_scripts(slow: ServerThread) -> None:
    env = _env(slow, "scripts")

    def agentq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentq.client", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    created = json.loads(
        agentq("agents", "create", "--name", "cli", "--role", ROLE, "--json").stdout
    )
    listed = json.loads(agentq("agents", "list", "--json").stdout)
    job = json.loads(agentq("run", "--agent", created["id"], "Hello", "--json").stdout)
    jobs = json.loads(agentq("jobs", "list", "--agent", created["id"], "--json").stdout)
    got = json.loads(agentq("jobs", "get", job["id"], "--json").stdout)
    deleted = agentq("agents", "delete", created["id"])
    missing = agentq("agents", "get", created["id"])

    assert [agent["id"] for agent in listed] == [created["id"]]
    assert job["status"] == "completed"
    assert job["result"]["response"] == f'As "{ROLE}": Hello'
    assert [found["id"] for found in jobs] == [job["id"]]
    assert got == job
    assert deleted.returncode == 0 and deleted.stdout == f"deleted agent {created['id']}\n"
    assert missing.returncode == 4
    assert missing.stderr == "agentq: NotFound: Agent not found\n"


def test_a_refused_request_names_the_field_and_exits_4(slow: ServerThread) -> None:
    shown = run_in_terminal(
        [sys.executable, "-m", "agentq.client", "agents", "create", "--name", "", "--role", ROLE],
        env=_env(slow, "refused"),
    )

    assert shown.returncode == 4
    assert shown.stderr.startswith("agentq: ValidationError: ")
    assert "agentq:   name: " in shown.stderr
