"""The fallback load generator, used when h2load or wrk is missing.

`python -m bench.pyload SPEC_JSON IN_FLIGHT DURATION_S COUNT` runs closed-loop load
with asyncio (grpc.aio for gRPC, httpx for HTTP/1.1 keep-alive) in its own process and
prints one JSON line of bench.loadgen.LoadResult fields. It is far more expensive than
h2load or wrk, so on a small machine it takes CPU from the server it measures: figures
it produces are lower bounds, and the report says so.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.stats import percentile

Send = Callable[[], Awaitable[bool]]


async def _drive(send: Send, *, in_flight: int, duration_s: float, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    started = 0
    begin = time.perf_counter()
    stop_at = begin + duration_s if duration_s else float("inf")

    async def loop() -> None:
        nonlocal errors, started
        while time.perf_counter() < stop_at and (not count or started < count):
            started += 1
            t0 = time.perf_counter()
            if await send():
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                errors += 1

    await asyncio.gather(*(loop() for _ in range(in_flight)))
    elapsed = time.perf_counter() - begin
    return {
        "tool": "python",
        "in_flight": in_flight,
        "duration_s": elapsed,
        "ok": len(latencies),
        "errors": errors,
        "started": started,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": sum(latencies) / len(latencies) if latencies else 0.0,
        "data_bytes": None,
    }


async def _grpc(call: dict[str, Any], **load: Any) -> dict[str, Any]:
    request = bytes.fromhex(call["request"])
    metadata = tuple(tuple(pair) for pair in call["metadata"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{call['port']}") as channel:
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(call["path"])

        async def send() -> bool:
            try:
                await method(request, metadata=metadata, timeout=10)
                return True
            except grpc.RpcError:
                return False

        return await _drive(send, **load)


async def _http(call: dict[str, Any], **load: Any) -> dict[str, Any]:
    body = bytes.fromhex(call["body"]) if call["body"] else None
    headers = dict(h.split(": ", 1) for h in call["headers"])
    limits = httpx.Limits(max_connections=load["in_flight"])
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def send() -> bool:
            url = call["url"] + (random.choice(call["ids"]) if call["ids"] else "")
            try:
                response = await client.request(call["method"], url, content=body, headers=headers)
                return response.is_success
            except httpx.HTTPError:
                return False

        return await _drive(send, **load)


def main() -> None:
    """Run the load the arguments describe and print its JSON result."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    load = {
        "in_flight": int(sys.argv[2]),
        "duration_s": float(sys.argv[3]),
        "count": int(sys.argv[4]),
    }
    runner = _grpc if spec["kind"] == "grpc" else _http
    print(json.dumps(asyncio.run(runner(spec["call"], **load))), flush=True)


if __name__ == "__main__":
    main()
