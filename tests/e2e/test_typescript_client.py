"""TypeScript stubs that `buf generate` makes from a fresh copy of proto/ run the seed flow.

The polyglot test (test_polyglot_client.py) loads the .proto files at run time; this one is
what a TypeScript team does instead: copy proto/, the vendored googleapis protos, buf.yaml
and buf.gen.yaml to a directory of their own, `npm ci` the pinned tools
(typescript/package.json), run `buf generate` (the local @bufbuild/protoc-gen-es plugin,
no protoc and no Buf Schema Registry), type-check the client together with the generated
code under `tsc --strict`, and run it over gRPC (HTTP/2, @connectrpc/connect-node) against
a real server with a token minted by `agentq token`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.e2e.cli_helpers import clean_env
from tests.e2e.harness import SECRET, ServerThread
from tests.processes import run_agentq

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = Path(__file__).resolve().parent / "typescript"
CLIENT_FILES = ("package.json", "package-lock.json", "tsconfig.json", "client.ts")
NPM_INSTALL_TIMEOUT_S = 180
GENERATE_TIMEOUT_S = 120
TSC_TIMEOUT_S = 180
CLIENT_TIMEOUT_S = 45
# What the built-in provider answers (server/providers/builtin.py): an echo of the agent's
# role and the prompt; tokens_used counts the words of role (3), prompt (6) and answer (10).
ROLE = "You answer briefly."
PROMPT = "What is the capital of France?"
ANSWER = 'As "You answer briefly.": What is the capital of France?'
TOKENS_USED = 19
EMPTY_PROMPT = "Invalid prompt: must be 1 to 50000 characters after trimming"
# It needs Node.js and npm: scripts/test.sh runs it in the step "polyglot".
pytestmark = pytest.mark.gate


def _unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it when running in CI (as tests/conftest.py does for servers)."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _pinned() -> dict[str, str]:
    """The npm packages of typescript/package.json and their exact versions."""
    packages = json.loads((CLIENT_DIR / "package.json").read_text(encoding="utf-8"))
    return {**packages["dependencies"], **packages["devDependencies"]}


def _run(command: list[str], *, cwd: Path, timeout: float, what: str) -> None:
    """Run one build command in `cwd`; a non-zero exit fails the test with its output."""
    try:
        finished = subprocess.run(
            command,
            cwd=cwd,
            env={**os.environ, "npm_config_update_notifier": "false"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} took over {timeout} s", pytrace=False)
    assert finished.returncode == 0, (
        f"{what} failed (exit {finished.returncode}):\n{finished.stdout}\n{finished.stderr}"
    )


def _npm_ci(workdir: Path, npm: str) -> None:
    """Install the pinned packages of package-lock.json; a registry problem is `unavailable`."""
    # --ignore-scripts: none of them needs its install script (buf's bin finds its
    # platform package by itself).
    command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"]
    try:
        installed = subprocess.run(
            command,
            cwd=workdir,
            env={**os.environ, "npm_config_update_notifier": "false"},
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"npm ci took over {NPM_INSTALL_TIMEOUT_S} s — is the registry reachable?")
    if installed.returncode != 0:
        # npm names the cause in its first few error lines; the rest is a stack trace.
        cause = " | ".join(installed.stderr.strip().splitlines()[:4])
        _unavailable(f"npm ci failed (exit {installed.returncode}): {cause}")


@pytest.fixture(scope="module")
def typescript_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the contract with stubs generated and the client compiled; its script."""
    node, npm, npx = shutil.which("node"), shutil.which("npm"), shutil.which("npx")
    if node is None or npm is None or npx is None:
        _unavailable(
            "Node.js, npm and npx are needed for the TypeScript client test — install them"
        )
    workdir = tmp_path_factory.mktemp("typescript")
    shutil.copytree(REPO_ROOT / "proto", workdir / "proto")
    shutil.copytree(
        REPO_ROOT / "third_party" / "googleapis", workdir / "third_party" / "googleapis"
    )
    for name in ("buf.yaml", "buf.gen.yaml"):
        shutil.copy(REPO_ROOT / name, workdir / name)
    for name in CLIENT_FILES:
        shutil.copy(CLIENT_DIR / name, workdir / name)
    _npm_ci(workdir, npm)
    bin_dir = workdir / "node_modules" / ".bin"
    # The repository's buf.gen.yaml runs protoc-gen-es through npx, which takes the one
    # just installed here (the same version, see the test of the pins below).
    _run(
        [str(bin_dir / "buf"), "generate"],
        cwd=workdir,
        timeout=GENERATE_TIMEOUT_S,
        what="buf generate",
    )
    generated = workdir / "build" / "gen" / "ts" / "agentq" / "v1"
    assert sorted(path.name for path in generated.glob("*_pb.ts")) == [
        "admin_service_pb.ts",
        "agent_pb.ts",
        "agent_service_pb.ts",
        "job_pb.ts",
        "job_service_pb.ts",
        "system_service_pb.ts",
        "token_service_pb.ts",
    ]
    # Made by the plugin npm installed, not by some other version npx fetched.
    plugin = _pinned()["@bufbuild/protoc-gen-es"]
    header = (generated / "job_pb.ts").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith(f"// @generated by protoc-gen-es v{plugin} "), header
    # tsconfig.json: strict, over the client and every generated file, emitted to dist/.
    _run([str(bin_dir / "tsc"), "-p", "."], cwd=workdir, timeout=TSC_TIMEOUT_S, what="tsc --strict")
    return workdir / "dist" / "client.js"


@dataclass(frozen=True)
class Run:
    """What the TypeScript client printed, and the token it ran with."""

    outcome: dict[str, Any]
    bearer: str


@pytest.fixture(scope="module")
def run(typescript_client: Path, server: ServerThread) -> Run:
    """One run of the compiled client against the module's server."""
    minted = run_agentq(
        "token", "--sub", "typescript", "--role", "user", env=clean_env(VEX_JWT_SECRET=SECRET)
    )
    assert minted.returncode == 0, minted.stderr
    bearer = minted.stdout.strip()
    finished = subprocess.run(
        ["node", str(typescript_client), "--target", f"127.0.0.1:{server.port}"],
        cwd=typescript_client.parent,
        env=clean_env(AGENTQ_TOKEN=bearer),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert finished.returncode == 0, f"client.js failed:\n{finished.stderr}"
    lines = finished.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got:\n{finished.stdout}"
    outcome: dict[str, Any] = json.loads(lines[0])
    return Run(outcome, bearer)


def test_the_pins_of_the_typescript_tools_match_the_repository_s() -> None:
    """package.json installs the protoc-gen-es that buf.gen.yaml names and lint_proto.sh's buf.

    Otherwise npx would fetch another plugin version for `buf generate`, whose code might not
    match the @bufbuild/protobuf runtime pinned next to it.
    """
    pinned = _pinned()
    buf_gen = (REPO_ROOT / "buf.gen.yaml").read_text(encoding="utf-8")
    plugin = re.search(r"--package=@bufbuild/protoc-gen-es@([\w.-]+)", buf_gen)
    assert plugin is not None, "buf.gen.yaml no longer runs a pinned @bufbuild/protoc-gen-es"
    lint_proto = (REPO_ROOT / "scripts" / "lint_proto.sh").read_text(encoding="utf-8")
    buf = re.search(r"^BUF_VERSION=(\S+)$", lint_proto, re.MULTILINE)
    assert buf is not None, "scripts/lint_proto.sh no longer pins BUF_VERSION"
    assert pinned["@bufbuild/protoc-gen-es"] == plugin.group(1)
    assert pinned["@bufbuild/protobuf"] == plugin.group(1)
    assert pinned["@bufbuild/buf"] == buf.group(1)


def test_a_typescript_client_on_generated_stubs_runs_a_job_to_completion(
    server: ServerThread, run: Run
) -> None:
    outcome = run.outcome

    assert (outcome["agent_name"], outcome["agent_role"]) == ("typescript bot", ROLE)
    assert re.fullmatch(r"[0-9a-f-]{36}", outcome["agent_id"])
    assert outcome["ack_status"] == "JOB_STATUS_PENDING"
    assert outcome["ack_response"] == f"Job queued: {outcome['ack_job_id']}"
    assert outcome["job_id"] == outcome["ack_job_id"]
    assert outcome["job_agent_id"] == outcome["agent_id"]
    assert outcome["status"] == "JOB_STATUS_COMPLETED"
    assert outcome["success"] is True
    assert (outcome["prompt"], outcome["response"]) == (PROMPT, ANSWER)
    assert outcome["tokens_used"] == TOKENS_USED
    assert re.fullmatch(r"[0-9a-f]{64}", outcome["context_hash"])
    # The server's own view of the job, through the Python stubs, is the same.
    with server.client(run.bearer) as client:
        job = client.get_job(outcome["job_id"])
    assert job.agent_id == outcome["agent_id"]
    assert job.result.response == ANSWER
    assert job.result.context_hash == outcome["context_hash"]


def test_an_empty_prompt_is_refused_as_an_invalid_argument_with_the_server_s_message(
    run: Run,
) -> None:
    assert run.outcome["empty_prompt"] == {
        "code": "INVALID_ARGUMENT",
        "message": EMPTY_PROMPT,
        "details": ["google.rpc.ErrorInfo", "google.rpc.BadRequest"],
        "reason": "VALIDATION_ERROR",
        "violations": [["prompt", EMPTY_PROMPT]],
    }
