"""Real agentq servers for the SDK and CLI tests: gRPC on a free port, SQLite, local workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentq.client import Client
from tests.e2e.harness import ServerThread, running_server, settings_for, token

ADMIN_TOKEN = "client-admin-token-0123456789abcdefghijklmnop"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """An embedded server whose built-in provider streams its answer over 0.4 s."""
    database = tmp_path_factory.mktemp("client") / "agentq.db"
    settings = settings_for(
        database_url=f"sqlite:///{database}", builtin_latency_ms=400, admin_token=ADMIN_TOKEN
    )
    with running_server(settings, in_process_workers=True) as started:
        yield started


@pytest.fixture
def url(server: ServerThread) -> str:
    """The server's gRPC address as AGENTQ_URL names it."""
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def client(url: str, request: pytest.FixtureRequest) -> Iterator[Client]:
    """A client with a user token of a tenant of this test's own, so lists start empty."""
    tenant = f"t-{abs(hash(request.node.nodeid)):x}"
    with Client(url, token=token("alice", tenant=tenant)) as made:
        yield made


def sqlite_server(tmp_path: Path, **overrides: object) -> ServerThread:
    """A started embedded server of its own, for tests that need other settings."""
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}", **overrides)
    return ServerThread(settings, in_process_workers=True).start()
