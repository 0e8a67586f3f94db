"""The PostgreSQL adapter's connection pool, on a real server: its bound, its turns, and
what happens to a connection that broke, a caller that gave up, and a pool that closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from server.store.pg_pool import ConnectionPool, still_usable
from server.store.postgres import asyncpg_dsn

pytestmark = pytest.mark.postgres


async def _backends(dsn: str) -> int:
    """How many sessions the test's database has, besides the one counting them."""
    counter = await asyncpg.connect(dsn)
    try:
        count = await counter.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(count)
    finally:
        await counter.close()


@pytest.fixture
def dsn(fresh_postgres_url: str) -> str:
    return asyncpg_dsn(fresh_postgres_url)


OpenPool = Callable[[int], Awaitable[ConnectionPool]]


@pytest.fixture
async def open_pool(dsn: str) -> AsyncIterator[OpenPool]:
    """Opens a pool of the given size on the test's database; each is closed at the end."""
    opened: list[ConnectionPool] = []

    async def open_one(size: int) -> ConnectionPool:
        pool = await ConnectionPool.open(dsn, size=size, command_timeout_s=10)
        opened.append(pool)
        return pool

    yield open_one
    for pool in opened:
        await pool.close(timeout_s=5)


async def test_it_opens_one_connection_at_start_and_more_only_when_wanted(
    open_pool: OpenPool, dsn: str
) -> None:
    pool = await open_pool(3)
    assert await _backends(dsn) == 1
    first = await pool.acquire()
    pool.release(first)
    again = await pool.acquire()
    assert again is first  # an idle connection is reused, not a new one opened
    second = await pool.acquire()
    assert second is not first
    assert await _backends(dsn) == 2
    pool.release(again)
    pool.release(second)


async def test_callers_beyond_the_bound_wait_their_turn_in_order(
    open_pool: OpenPool, dsn: str
) -> None:
    pool = await open_pool(2)
    held = [await pool.acquire(), await pool.acquire()]
    served: list[int] = []

    async def caller(number: int) -> None:
        connection = await pool.acquire()
        served.append(number)
        assert await connection.fetchval("SELECT $1::int", number) == number
        pool.release(connection)

    callers = [asyncio.create_task(caller(n)) for n in range(5)]
    await asyncio.sleep(0.05)
    assert served == []  # all wait: both connections are out
    for connection in held:
        pool.release(connection)
    await asyncio.gather(*callers)
    assert served == [0, 1, 2, 3, 4]
    assert await _backends(dsn) == 2  # never more than the bound


async def test_a_broken_connection_is_dropped_and_its_place_goes_to_a_waiter(
    open_pool: OpenPool,
) -> None:
    pool = await open_pool(1)
    broken = await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    pool.release(broken, usable=False)
    fresh = await asyncio.wait_for(waiting, 10)
    assert fresh is not broken and broken.is_closed()
    assert await fresh.fetchval("SELECT 1") == 1
    pool.release(fresh)


async def test_a_connection_the_server_ended_is_replaced(open_pool: OpenPool, dsn: str) -> None:
    pool = await open_pool(1)
    connection = await pool.acquire()
    pid = connection.get_server_pid()
    killer = await asyncpg.connect(dsn)
    await killer.execute("SELECT pg_terminate_backend($1)", pid)
    await killer.close()
    error: BaseException | None = None
    try:
        await connection.fetchval("SELECT 1")
    except Exception as failed:
        error = failed
    assert error is not None and not still_usable(connection, error)
    pool.release(connection, usable=still_usable(connection, error))
    replacement = await pool.acquire()
    assert replacement.get_server_pid() != pid
    pool.release(replacement)


async def test_a_refused_statement_leaves_the_connection_usable(open_pool: OpenPool) -> None:
    pool = await open_pool(1)
    connection = await pool.acquire()
    with pytest.raises(asyncpg.PostgresError) as refused:
        await connection.execute("SELECT 1/0")
    assert still_usable(connection, refused.value)
    pool.release(connection, usable=still_usable(connection, refused.value))
    assert await pool.acquire() is connection
    pool.release(connection)


async def test_a_caller_that_gives_up_waiting_takes_nothing_with_it(open_pool: OpenPool) -> None:
    pool = await open_pool(1)
    held = await pool.acquire()
    impatient = asyncio.create_task(pool.acquire())
    patient = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    pool.release(held)
    assert await asyncio.wait_for(patient, 10) is held
    pool.release(held)


async def test_a_failed_connect_frees_its_place(open_pool: OpenPool, dsn: str) -> None:
    pool = await open_pool(2)
    held = await pool.acquire()
    pool._dsn = dsn.rsplit("/", 1)[0] + "/no_such_database"  # the next open fails
    with pytest.raises(asyncpg.PostgresError):
        await pool.acquire()
    pool._dsn = dsn
    second = await pool.acquire()  # the failed open left its place free
    assert second is not held
    pool.release(held)
    pool.release(second)


async def test_closing_waits_for_leases_then_closes_every_connection(dsn: str) -> None:
    pool = await ConnectionPool.open(dsn, size=2, command_timeout_s=10)
    out = await pool.acquire()
    idle = await pool.acquire()
    pool.release(idle)
    waiter = asyncio.create_task(pool.acquire())  # a connection is idle: served at once
    assert await waiter is idle
    pool.release(idle)

    closing = asyncio.create_task(pool.close(timeout_s=5))
    await asyncio.sleep(0.05)
    assert not closing.done()  # one connection is still out
    with pytest.raises(asyncpg.InterfaceError):
        await pool.acquire()
    pool.release(out)
    await asyncio.wait_for(closing, 5)
    assert out.is_closed() and idle.is_closed()
    assert await _backends(dsn) == 0


async def test_closing_cuts_a_lease_that_outlasts_the_timeout(dsn: str) -> None:
    pool = await ConnectionPool.open(dsn, size=1, command_timeout_s=10)
    out = await pool.acquire()
    await pool.close(timeout_s=0.1)
    assert out.is_closed()
