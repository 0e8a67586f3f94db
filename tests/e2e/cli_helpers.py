"""What the tests of the `agentq` command share: a clean environment, free ports, the secret.

They run `python -m server.cli` in a child process with an environment cleared of agentq
settings and a temporary working directory, so what it sees is what a fresh shell would see.
"""

from __future__ import annotations

import re
import socket

from bench.stack import agentq_env

SECRET = "cli-test-secret-that-is-long-enough-0123456789"
STOP_TIMEOUT_S = 15
# A refusal to start should come before any slow set-up; this only catches a hang.
QUICK_EXIT_S = 15
JWT_PATTERN = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def clean_env(**settings: str) -> dict[str, str]:
    """os.environ without any agentq setting or secret, plus `settings`."""
    return agentq_env(settings)


def free_port() -> int:
    """A TCP port that nothing was listening on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0
