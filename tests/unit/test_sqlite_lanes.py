"""The SQLite adapter's connections, each on a thread of its own: turns, cancels, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select

from server.errors import Unavailable
from server.store.database import DuplicateKey, Statements
from server.store.sqlite import SqliteDatabase, T, Work, _Lane

_metadata = MetaData()
_rows = Table("rows", _metadata, Column("id", Integer, primary_key=True))
_COUNT = select(func.count()).select_from(_rows)


async def _count(db: SqliteDatabase) -> int:
    row = await db.one(_COUNT)
    assert row is not None
    return int(row["count_1"])


@pytest.fixture(params=["memory", "file"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    """One in-memory database (a single connection), then a file with four."""
    url = "sqlite://" if request.param == "memory" else f"sqlite:///{tmp_path / 'lanes.db'}"
    database = SqliteDatabase.open(url, pool_size=4)
    await database.run_sync(_metadata.create_all)
    try:
        yield database
    finally:
        await database.close()


async def test_a_transaction_cancelled_mid_way_stores_nothing_and_frees_its_connection(
    db: SqliteDatabase,
) -> None:
    inside = asyncio.Event()

    async def interrupted() -> None:
        async with db.transaction() as tx:
            await tx.run(insert(_rows), {"id": 1})
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(interrupted())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The one connection of the in-memory database is back, rolled back.
    assert await asyncio.wait_for(_count(db), 5) == 0


async def test_a_failed_statement_rolls_back_the_whole_transaction(db: SqliteDatabase) -> None:
    await db.run(insert(_rows), {"id": 1})

    with pytest.raises(DuplicateKey):
        async with db.transaction() as tx:
            await tx.run(insert(_rows), {"id": 2})
            await tx.run(insert(_rows), {"id": 1})

    assert await _count(db) == 1


async def test_transactions_on_one_in_memory_connection_take_turns() -> None:
    db = SqliteDatabase.open("sqlite://", pool_size=4)
    await db.run_sync(_metadata.create_all)
    inside = asyncio.Event()
    release = asyncio.Event()

    async def slow_writer() -> None:
        async with db.transaction() as tx:
            await tx.run(insert(_rows), {"id": 1})
            inside.set()
            await release.wait()
            raise RuntimeError("given up")

    writer = asyncio.create_task(slow_writer())
    await inside.wait()
    # A statement on its own waits for the open transaction instead of committing it.
    reader = asyncio.create_task(_count(db))
    await asyncio.sleep(0.05)
    assert not reader.done()

    release.set()
    with pytest.raises(RuntimeError):
        await writer
    assert await reader == 0
    await db.close()


async def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    db = SqliteDatabase.open(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", pool_size=1)

    with pytest.raises(Unavailable):
        await db.ping()
    with pytest.raises(Unavailable):
        async with db.transaction() as tx:
            await tx.one(_COUNT)
    await db.close()


async def test_a_transaction_s_writes_go_with_its_next_statement_or_commit_in_one_trip(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    call = _Lane.call

    async def counted(lane: _Lane, work: Work[T]) -> T:
        trips.append(getattr(work, "__name__", "work"))
        return await call(lane, work)

    monkeypatch.setattr(_Lane, "call", counted)

    async with db.transaction() as tx:
        await tx.run(insert(_rows), {"id": 1})
        seen = await _count_in(tx)  # the insert, then the count: one trip
        await tx.run(insert(_rows), {"id": 2})
        await tx.run(insert(_rows), {"id": 3})  # both with the commit: one trip

    assert seen == 1
    assert len(trips) == 2
    assert await _count(db) == 3


async def _count_in(tx: Statements) -> int:
    row = await tx.one(_COUNT)
    assert row is not None
    return int(row["count_1"])
