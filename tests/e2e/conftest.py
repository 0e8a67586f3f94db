"""Fixtures that start agentq for real: embedded (SQLite, in-process queue) and scaled out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RestThread, ServerThread, running_rest, running_server, settings_for


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[ServerThread]:
    """The embedded default: a SQLite file and in-process workers."""
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}")
    with running_server(settings, in_process_workers=True) as server:
        yield server


@pytest.fixture
def scaled_settings(fresh_postgres_url: str, redis_url: str, redis_namespace: str):  # type: ignore[no-untyped-def]
    """Settings for PostgreSQL + Redis with separate workers."""
    return settings_for(
        database_url=fresh_postgres_url, redis_url=redis_url, redis_namespace=redis_namespace
    )


@pytest.fixture
def rest(embedded: ServerThread) -> Iterator[RestThread]:
    """The REST shim over real HTTP in front of the embedded server."""
    with running_rest(f"127.0.0.1:{embedded.port}") as shim:
        yield shim
