"""The latency-bound workload side by side: each side's drain of the same executions, in turns.

Each turn is `bench/measure_latency.py`'s run for one side (its own fake provider, fresh
database, server and paused workers, then the drain), so the figure is the full run's:
completed jobs/s from the first start to the last completion.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.db import Database
from bench.deployment import Deployment
from bench.measure_latency import CHUNKS, LONG_STREAM_CHUNKS, run_once
from bench.procs import ProcessSet
from bench.runs import Context

VARIANTS = {"latency_4": CHUNKS, "latency_200": LONG_STREAM_CHUNKS}


@dataclass
class SideDeployment(Deployment):
    """A configuration's settings with one side's on top."""

    settings: dict[str, str] = field(default_factory=dict)

    def env(self, database: Database) -> dict[str, str]:
        return {**super().env(database), **self.settings}


def latency_turn(
    ctx: Context,
    *,
    side: SideDeployment,
    agentq: str,
    chunks: int,
    logs: Path,
) -> dict[str, float]:
    """One side's latency-bound run on a configuration like `side`'s, with resources of
    its own (removed after): its completed jobs/s and run time p50."""
    deployment = SideDeployment(side.kind, side.config, side.scratch, settings=side.settings)
    logs.mkdir(parents=True)
    # A ProcessSet of the turn's own: the run names its processes the same every time.
    side_ctx = replace(ctx, agentq=agentq, procs=ProcessSet(logs))
    try:
        done = run_once(side_ctx, deployment, chunks=chunks)
    finally:
        side_ctx.procs.stop_all()
        deployment.cleanup()
    return {
        "per_s": done["per_s"],
        "p50_ms": done["run_p50_ms"],
        "others_cores": done["others_cpu"],
    }


def variants(workloads: list[str]) -> dict[str, int]:
    """The latency variants asked for: `latency` is both, or `latency_4` / `latency_200`."""
    if "latency" in workloads:
        return dict(VARIANTS)
    return {name: chunks for name, chunks in VARIANTS.items() if name in workloads}
