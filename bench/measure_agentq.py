"""agentq's workloads in one configuration: API throughput, polling, end to end."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from agentq.v1 import agent_service_pb2
from bench.db import Database
from bench.deployment import Deployment
from bench.grpcwire import GrpcCall
from bench.loadgen import LoadResult
from bench.machine import OTHERS
from bench.measure_scale import measure_scale
from bench.procs import ManagedProcess
from bench.runs import (
    Context,
    Verify,
    grpc_series,
    http_series,
    no_check,
    require_no_errors,
    same_size_answers,
)
from bench.stack import SUBJECT, Client, run_cli, start_server, start_workers
from bench.stats import percentile

TOKEN_TTL_S = "14400"


def measure_config(ctx: Context, deployment: Deployment) -> dict[str, Any]:
    """Every workload of one configuration; its databases and keys are removed after."""
    try:
        results = _main_workloads(ctx, deployment)
        results["scale"] = measure_scale(ctx, deployment)
        return results
    finally:
        deployment.cleanup()


def _main_workloads(ctx: Context, deployment: Deployment) -> dict[str, Any]:
    db = deployment.new_database("main")
    env = deployment.env(db)
    kind = deployment.kind
    server = start_server(ctx.procs, ctx.agentq, env, f"{kind}-serve")
    workers = _workers(ctx, deployment, env, "workers") if deployment.separate_workers else None
    token = run_cli(
        ctx.agentq, ["token", "--sub", SUBJECT, "--role", "user", "--ttl", TOKEN_TTL_S], env
    )
    client = Client(server, token)
    job_id = client.execute(client.create_agent("bench"))
    client.wait_completed(job_id)
    results: dict[str, Any] = {}
    job_pid = workers.pid if workers else server.process.pid
    results["e2e"] = end_to_end(ctx, client, db, label=f"{kind}_e2e", pid=job_pid)
    if workers and not ctx.config.workers_during_api:
        ctx.procs.stop(workers)
        workers = None
    pid = server.process.pid
    drain = not deployment.separate_workers
    results["grpc_get_job"] = grpc_series(
        ctx,
        f"{kind}_grpc_get_job",
        lambda _: client.get_job_call(job_id),
        same_size_answers,
        pid=pid,
    )
    results["rest_get_job"] = http_series(
        ctx, f"{kind}_rest_get_job", lambda _: client.rest_get_job_call(job_id), no_check, pid=pid
    )
    results["grpc_execute"] = grpc_series(
        ctx,
        f"{kind}_grpc_execute",
        lambda n: client.execute_call(client.create_agent(f"grpc {n}")),
        _jobs_stored(ctx, db, drain=drain),
        pid=pid,
    )
    results["rest_execute"] = http_series(
        ctx,
        f"{kind}_rest_execute",
        lambda n: client.rest_execute_call(client.create_agent(f"rest {n}")),
        _jobs_stored(ctx, db, drain=drain),
        pid=pid,
    )
    results["server_rss_mb"] = server.process.rss_bytes() / 2**20
    if deployment.separate_workers:
        # The jobs the API runs queued: every one must complete (and how fast they do).
        workers = workers or _workers(ctx, deployment, env, "drain-workers")
        results["backlog_drain"] = _drain(ctx, db)
    for process in (workers, server.process):
        if process is not None:
            ctx.procs.stop(process)
    return results


def _workers(
    ctx: Context, deployment: Deployment, env: dict[str, str], name: str
) -> ManagedProcess:
    config = ctx.config
    return start_workers(
        ctx.procs,
        ctx.agentq,
        env,
        f"{deployment.kind}-{name}",
        processes=config.worker_processes,
        concurrency=config.worker_concurrency,
    )


def _jobs_stored(ctx: Context, db: Database, *, drain: bool) -> Verify:
    """A check that the run stored one job per answered call (and, embedded, ran them)."""

    def verify(call: Any, result: LoadResult) -> str:
        if isinstance(call, GrpcCall):
            agent_id = agent_service_pb2.ExecuteRequest.FromString(call.request).agent_id
        else:
            agent_id = call.url.rstrip("/").split("/")[-2]
        stored = db.count_jobs(agent_id=agent_id)
        # +1: the check call made after the run; calls in flight when the tool stopped
        # were answered to nobody but may have stored their job.
        low, high = result.ok + 1, max(result.started, result.ok) + result.in_flight + 1
        if not low <= stored <= high:
            raise RuntimeError(f"{stored} jobs stored for {result.ok} answered calls: errors")
        note = f"{stored} jobs stored for {result.ok} answered calls (+1 check, +in flight)"
        if drain:
            seconds = db.wait_drained(timeout_s=ctx.config.drain_timeout_s)
            note += f"; backlog drained {seconds:.1f} s after the run"
        return note

    return verify


def _drain(ctx: Context, db: Database) -> dict[str, Any]:
    waiting = db.count_jobs(statuses=("pending", "running"))
    seconds = db.wait_drained(timeout_s=ctx.config.drain_timeout_s)
    failed = db.count_jobs(statuses=("failed",))
    if failed:
        raise RuntimeError(f"{failed} jobs failed")
    ctx.say(f"backlog of {waiting} jobs drained in {seconds:.1f} s")
    return {"jobs": waiting, "seconds": seconds, "per_s": waiting / seconds if seconds else None}


def end_to_end(
    ctx: Context, client: Client, db: Database, *, label: str, pid: int
) -> dict[str, Any]:
    """N executions as fast as possible; time to the last completion; submit→completed."""
    config = ctx.config
    agent_id = client.create_agent("e2e")
    call = client.execute_call(agent_id)
    ctx.wait_until_quiet()
    started = datetime.now(UTC)
    began = time.monotonic()
    meter = ctx.cpu_meter()
    with ctx.profiled(label, pid, in_flight=config.top_in_flight):
        submit = ctx.gen.grpc(call, in_flight=config.e2e_in_flight, count=config.e2e_count)
        require_no_errors(label, submit)
        db.wait_finished(agent_id, submit.ok, timeout_s=config.drain_timeout_s)
    waited = time.monotonic() - began
    jobs = db.job_times(agent_id)
    statuses = {status for status, _, _ in jobs}
    if len(jobs) != config.e2e_count or statuses != {"completed"}:
        raise RuntimeError(f"{label}: {len(jobs)} jobs of {config.e2e_count}, statuses {statuses}")
    last = max(done for _, _, done in jobs if done is not None)
    seconds = (last - started).total_seconds()
    latencies = [(done - queued).total_seconds() * 1000 for _, queued, done in jobs if done]
    cpu = meter.split()
    result: dict[str, Any] = {
        "count": len(jobs),
        "seconds": seconds,
        "per_s": len(jobs) / seconds,
        "submit_per_s": submit.rps,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "harness_seconds": waited,
        "cpu": cpu,
        "others_cpu": cpu.get(OTHERS, 0.0),
    }
    ctx.say(f"{label}: {result['per_s']:,.0f} completed jobs/s, p50 {result['p50_ms']:.0f} ms")
    return result
