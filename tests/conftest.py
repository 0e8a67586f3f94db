"""Shared fixtures for tests against real PostgreSQL and Redis servers.

Each fixture reads its server's address when a test first asks for it:
AGENTQ_TEST_POSTGRES_URL and AGENTQ_TEST_REDIS_URL, defaulting to the local
servers. A server that does not answer skips the test on a laptop, but fails
it when CI is set, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from bench.fake_openai import FakeOpenAI
from tests.world import World, postgres_store, sqlite_store, world_on

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECT_TIMEOUT_S = 5


def _server_unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it when running in CI."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _one_line(exc: Exception) -> str:
    """The exception's message with its line breaks folded, for a one-line reason."""
    return " ".join(str(exc).split())


class PostgresServer:
    """A reachable PostgreSQL server on which tests make throwaway databases."""

    def __init__(self, base_url: URL) -> None:
        self.base_url = base_url
        # libpq takes the same URL without SQLAlchemy's "+driver" suffix.
        self._conninfo = base_url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def check(self) -> None:
        """Skip or fail the test unless the server answers a query."""
        try:
            with self._admin() as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            where = self.base_url.render_as_string(hide_password=True)
            _server_unavailable(
                f"PostgreSQL not reachable at {where} ({_one_line(exc)}) — start it or set "
                "AGENTQ_TEST_POSTGRES_URL"
            )

    def create_database(self) -> str:
        """Create an empty, uniquely named database and return its name."""
        name = f"agentq_test_{uuid.uuid4().hex}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database made by create_database, closing its open sessions."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def url_for(self, name: str) -> str:
        """The SQLAlchemy URL of one database on this server."""
        return self.base_url.set(database=name).render_as_string(hide_password=False)

    def throwaway_database(self) -> Iterator[str]:
        """Yield the URL of a new database, and drop the database afterwards."""
        name = self.create_database()
        try:
            yield self.url_for(name)
        finally:
            self.drop_database(name)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server of AGENTQ_TEST_POSTGRES_URL, checked to answer."""
    base_url = make_url(os.environ.get("AGENTQ_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL)
    if base_url.drivername == "postgresql":
        # SQLAlchemy's default driver is psycopg2; agentq ships psycopg 3.
        base_url = base_url.set(drivername="postgresql+psycopg")
    server = PostgresServer(base_url)
    server.check()
    return server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh database shared by the whole test session."""
    yield from postgres_server.throwaway_database()


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database for this test alone."""
    yield from postgres_server.throwaway_database()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis server of AGENTQ_TEST_REDIS_URL, checked to answer PING."""
    url = os.environ.get("AGENTQ_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        where = make_url(url).render_as_string(hide_password=True)
        _server_unavailable(
            f"Redis not reachable at {where} ({_one_line(exc)}) — start it or set "
            "AGENTQ_TEST_REDIS_URL"
        )
    finally:
        client.close()
    return url


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    namespace = f"agentq-test-{uuid.uuid4().hex}"
    yield namespace
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{namespace}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """A world on a new in-memory SQLite database (tests/world.py)."""
    async with world_on(await sqlite_store()) as made:
        yield made


@pytest.fixture
async def pg_world(fresh_postgres_url: str) -> AsyncIterator[World]:
    """A world on a new PostgreSQL database."""
    async with world_on(await postgres_store(fresh_postgres_url)) as made:
        yield made


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    """The benchmark's fake OpenAI server (bench/fake_openai.py), one for each module."""
    with FakeOpenAI(chunks=4) as fake:
        yield fake


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The module's fake OpenAI server, answering at once, with its counters zeroed."""
    fake_openai.reset()
    return fake_openai
