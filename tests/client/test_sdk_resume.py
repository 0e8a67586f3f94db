"""The asyncio client's event stream survives its server stopping and another starting on
the same port and database: the events go on from the last one seen."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentq.client import AsyncClient, EventType, JobEvent
from tests.e2e.cli_helpers import free_port
from tests.e2e.harness import ServerThread, settings_for, token


async def test_the_async_event_stream_resumes_on_a_restarted_server(tmp_path: Path) -> None:
    port = free_port()
    # Answers stream over three seconds; a lost attempt's lease lapses after five.
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}",
        grpc_addr=f"127.0.0.1:{port}",
        builtin_latency_ms=3000,
        job_time_limit_s=4,
        lease_grace_s=1,
        shutdown_grace_s=0,
        requeue_after_s=1,
    )
    first = ServerThread(settings, in_process_workers=True).start()
    second: ServerThread | None = None
    seen: list[JobEvent] = []
    try:
        async with AsyncClient(f"127.0.0.1:{port}", token=token("alice")) as client:
            agent = await client.agents.create(name="resume", role="You answer briefly.")
            handle = await client.execute(agent.id, "Tell me about queues")
            async for event in handle.events(timeout=60):
                seen.append(event)
                if event.type is EventType.TOKEN and second is None:
                    await asyncio.to_thread(first.stop)
                    before_restart = len(seen)
                    second = await asyncio.to_thread(
                        ServerThread(settings, in_process_workers=True).start
                    )
            job = await handle.wait(timeout=30)
    finally:
        if second is None:
            first.stop()
        else:
            second.stop()

    assert [event.sequence for event in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].type is EventType.COMPLETED
    assert before_restart < len(seen)
    assert job.answer == 'As "You answer briefly.": Tell me about queues'
