"""A Node.js client built from proto/ alone runs the create -> execute -> poll flow.

This is the proof that the .proto files are the whole contract: `polyglot/client.mjs`
loads them with @grpc/proto-loader (no generated Python, no server code) and talks to a
real server with a token minted by the real `agentq token` command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_helpers import clean_env
from tests.e2e.harness import SECRET, ServerThread
from tests.e2e.node_helpers import npm_install, run_client, tools

REPO_ROOT = Path(__file__).resolve().parents[2]
POLYGLOT_DIR = Path(__file__).resolve().parent / "polyglot"
# The google/api protos that proto/ imports, vendored in the repository.
GOOGLEAPIS_DIR = REPO_ROOT / "third_party" / "googleapis"
NPM_INSTALL_TIMEOUT_S = 120
CLIENT_TIMEOUT_S = 45
# It needs Node.js and npm: scripts/test.sh runs it as a step of its own.
pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of polyglot/ with its npm dependencies installed; the script's path."""
    _, npm = tools("node", "npm")
    workdir = tmp_path_factory.mktemp("polyglot")
    for name in ("package.json", "client.mjs"):
        shutil.copy(POLYGLOT_DIR / name, workdir / name)
    # --ignore-scripts: neither dependency needs an install script to work.
    command = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts"]
    npm_install(workdir, command, timeout_s=NPM_INSTALL_TIMEOUT_S)
    return workdir / "client.mjs"


def _mint_token_with_cli(*, sub: str, role: str) -> str:
    """A token from the real `agentq token` command, signed with the harness secret."""
    minted = subprocess.run(
        [sys.executable, "-m", "server.cli", "token", "--sub", sub, "--role", role],
        env=clean_env(VEX_JWT_SECRET=SECRET),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert minted.returncode == 0, minted.stderr
    return minted.stdout.strip()


def _run_node_client(script: Path, *, port: int, bearer: str) -> dict[str, Any]:
    """Run client.mjs against the server and return the JSON line it printed."""
    command = [
        "node",
        str(script),
        "--target",
        f"127.0.0.1:{port}",
        "--proto-dir",
        str(REPO_ROOT / "proto"),
        "--googleapis-dir",
        str(GOOGLEAPIS_DIR),
    ]
    return run_client(command, cwd=script.parent, bearer=bearer, timeout_s=CLIENT_TIMEOUT_S)


def test_a_node_client_built_from_the_protos_alone_runs_a_job_to_completion(
    embedded: ServerThread, node_client: Path
) -> None:
    bearer = _mint_token_with_cli(sub="polyglot", role="user")

    outcome = _run_node_client(node_client, port=embedded.port, bearer=bearer)

    assert outcome["status"] == "JOB_STATUS_COMPLETED"
    assert outcome["response"].strip()
    assert outcome["tokens_used"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", outcome["context_hash"])
    with embedded.client(bearer) as client:
        job = client.get_job(outcome["job_id"])
    assert job.agent_id == outcome["agent_id"]
    assert job.result.context_hash == outcome["context_hash"]


def test_a_node_client_without_a_token_is_told_the_authorization_header_is_missing(
    embedded: ServerThread, node_client: Path
) -> None:
    bearer = _mint_token_with_cli(sub="polyglot", role="user")

    outcome = _run_node_client(node_client, port=embedded.port, bearer=bearer)

    assert outcome["unauthenticated"] == {
        "code": "UNAUTHENTICATED",
        "details": "Missing Authorization header",
    }
