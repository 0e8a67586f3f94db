"""The bare-library baselines: grpc.aio echo, FastAPI→gRPC hop, Dramatiq no-op on Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import redis

from agentq.v1 import agent_service_pb2
from bench.baselines.echo_server import PATH as ECHO_PATH
from bench.db import unique_name
from bench.grpcwire import GrpcCall
from bench.loadgen import HttpCall
from bench.machine import OTHERS
from bench.runs import Context, grpc_series, http_series, no_check, same_size_answers
from bench.stack import PROMPT

HOP_HEADERS = ("Content-Type: application/json",)
DRAMATIQ_READY = r"Worker process is ready for action"


def measure_baselines(ctx: Context, *, redis_available: bool) -> dict[str, Any]:
    """Every baseline this run can measure."""
    results: dict[str, Any] = {
        "grpc_echo": grpc_echo(ctx),
        "rest_hop": rest_hop(ctx),
    }
    if redis_available:
        results["dramatiq_noop"] = dramatiq_noop(ctx)
    return results


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def grpc_echo(ctx: Context) -> dict[str, Any]:
    """A bare grpc.aio unary echo, with the body of agentq's Execute request."""
    server = ctx.procs.start("echo", _python("bench.baselines.echo_server"), env=_env())
    port = server.wait_for_port(r"echo gRPC listening on port (\d+)")
    # An Execute request of agentq as the payload, so the wire work is alike.
    message = agent_service_pb2.ExecuteRequest(agent_id=str(uuid.uuid4()), prompt=PROMPT)
    request = message.SerializeToString()
    try:
        return grpc_series(
            ctx,
            "baseline_grpc_echo",
            lambda _: GrpcCall(port, ECHO_PATH, request),
            same_size_answers,
            pid=server.pid,
        )
    finally:
        ctx.procs.stop(server)


def rest_hop(ctx: Context) -> dict[str, Any]:
    """A bare FastAPI route making one grpc.aio call to an echo, in one process."""
    server = ctx.procs.start("hop", _python("bench.baselines.hop_server"), env=_env())
    port = server.wait_for_port(r"hop REST listening on port (\d+)")
    body = json.dumps({"prompt": PROMPT}).encode()
    call = HttpCall(f"http://127.0.0.1:{port}/hop", "POST", body, HOP_HEADERS)
    try:
        return http_series(ctx, "baseline_rest_hop", lambda _: call, no_check, pid=server.pid)
    finally:
        ctx.procs.stop(server)


def dramatiq_noop(ctx: Context) -> dict[str, Any]:
    """N no-op messages through Redis to P processes of T threads, first send to last ack."""
    config = ctx.config
    namespace = unique_name("agentq-bench-noop")
    env = _env(BENCH_REDIS_URL=config.redis_url, BENCH_REDIS_NAMESPACE=namespace)
    argv = _python("dramatiq", "bench.baselines.dramatiq_noop")
    argv += ["--processes", str(config.worker_processes), "--threads", str(config.noop_threads)]
    workers = ctx.procs.start("dramatiq-workers", argv, env=env)
    try:
        workers.wait_for(DRAMATIQ_READY, count=config.worker_processes)
        producer = _python("bench.baselines.dramatiq_noop", "--count", str(config.e2e_count))
        ctx.wait_until_quiet()
        meter = ctx.cpu_meter()
        with ctx.profiled("baseline_dramatiq_noop", workers.pid, in_flight=config.top_in_flight):
            done = subprocess.run(
                producer,
                env=env,
                capture_output=True,
                text=True,
                timeout=config.drain_timeout_s + 60,
                check=True,
            )
        times = json.loads(done.stdout.strip().splitlines()[-1])
        cpu = meter.split()
    finally:
        ctx.procs.stop(workers)
        delete_namespace(config.redis_url, namespace)
    seconds = times["all_processed"] - times["first_send"]
    result = {
        "count": config.e2e_count,
        "seconds": seconds,
        "per_s": config.e2e_count / seconds,
        "send_per_s": config.e2e_count / (times["last_send"] - times["first_send"]),
        "others_cpu": cpu.get(OTHERS, 0.0),
        "cpu": cpu,
    }
    ctx.say(f"baseline dramatiq no-op: {result['per_s']:,.0f} messages/s")
    return result


def delete_namespace(redis_url: str, namespace: str) -> None:
    """Remove every Redis key of one namespace (this run's own, unique)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
    finally:
        client.close()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}
