"""What the Node.js client tests share: finding the tools, installing, running a client.

Without Node.js or a reachable npm registry these tests skip, but fail when CI is set, as
tests/conftest.py does for servers: CI cannot go green by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.e2e.cli_helpers import clean_env

# npm without its "a new version is out" check, which reaches for the registry.
NPM_ENV = {**os.environ, "npm_config_update_notifier": "false"}


def unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it when running in CI."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def tools(*names: str) -> list[str]:
    """The paths of the named programs (node, npm, npx); unavailable if one is missing."""
    found = [shutil.which(name) for name in names]
    missing = [name for name, path in zip(names, found, strict=True) if path is None]
    if missing:
        unavailable(f"{', '.join(missing)} needed for the Node.js client tests — install them")
    return [path for path in found if path is not None]


def npm_install(workdir: Path, command: list[str], *, timeout_s: float) -> None:
    """Install a client's packages; a registry problem makes the test unavailable."""
    what = f"{Path(command[0]).name} {command[1]}"
    try:
        installed = subprocess.run(
            command, cwd=workdir, env=NPM_ENV, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        unavailable(f"{what} took over {timeout_s} s — is the registry reachable?")
    if installed.returncode != 0:
        # npm names the cause in its first few error lines; the rest is a stack trace.
        cause = " | ".join(installed.stderr.strip().splitlines()[:4])
        unavailable(f"{what} failed (exit {installed.returncode}): {cause}")


def run_client(command: list[str], *, cwd: Path, bearer: str, timeout_s: float) -> dict[str, Any]:
    """Run a Node.js client with AGENTQ_TOKEN set; the one JSON line it printed."""
    finished = subprocess.run(
        command,
        cwd=cwd,
        env=clean_env(AGENTQ_TOKEN=bearer),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert finished.returncode == 0, f"{Path(command[1]).name} failed:\n{finished.stderr}"
    lines = finished.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got:\n{finished.stdout}"
    outcome: dict[str, Any] = json.loads(lines[0])
    return outcome
