"""The run's results as JSON and as Markdown tables: figures, ratios, targets."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import ratio

CONFIG_TITLES = {
    "embedded": "embedded default (SQLite, in-process queue)",
    "postgres": "PostgreSQL + Redis, separate workers",
}
API_WORKLOADS = (
    ("grpc_execute", "gRPC Execute", "grpc_echo"),
    ("rest_execute", "REST execute", "rest_hop"),
    ("grpc_get_job", "gRPC GetJob", "grpc_echo"),
    ("rest_get_job", "REST get-job", "rest_hop"),
)
BASELINE_TITLES = {
    "grpc_echo": "bare grpc.aio echo",
    "rest_hop": "bare FastAPI route → grpc.aio echo",
}
TARGET_CONFIG = "postgres"
# Column of the cores each party used during a run (bench.machine).
CPU = "cores used"
OWN_PREFIX = re.compile(r"^(latency-\w+-\d+-|embedded-|postgres-)")


AT_LEAST, AT_MOST, EXACTLY = "≥", "≤", "="
# Figures of one configuration, the baselines, the run's meta -> the value judged.
Measure = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], float | None]


@dataclass(frozen=True)
class Target:
    """One goal: a figure (or a ratio of two) of the same run, and its bound."""

    name: str
    threshold: float
    comparison: str
    measure: Measure
    digits: int = 2

    def judge(self, value: float | None) -> str:
        """pass, FAIL, or n/a when not measured."""
        if value is None:
            return "n/a"
        if self.comparison == EXACTLY:
            ok = round(value, self.digits) == self.threshold
        elif self.comparison == AT_MOST:
            ok = value <= self.threshold
        else:
            ok = value >= self.threshold
        return "pass" if ok else "FAIL"

    @property
    def bound(self) -> str:
        """The threshold as text."""
        return f"{self.comparison} {self.threshold:g}"


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _rps_ratio(ours: str, bare: str, in_flight: str) -> Measure:
    """agentq's requests per second in workload `ours` over the bare baseline `bare`."""
    return lambda c, b, m: ratio(_get(c, ours, in_flight, "rps"), _get(b, bare, in_flight, "rps"))


def _scale_ratio(figure: str, large: str, small: str) -> Measure:
    """A figure of the scale workload at `large` stored jobs over the same at `small`."""
    return lambda c, b, m: ratio(_get(c, "scale", large, figure), _get(c, "scale", small, figure))


def targets(meta: dict[str, Any]) -> list[Target]:
    """The targets, at the run's top concurrency and scale sizes."""
    top = str(meta["top_in_flight"])
    small, large = (str(size) for size in meta["scale_sizes"])
    return [
        Target(
            f"gRPC Execute / bare echo, {top} in flight",
            0.35,
            AT_LEAST,
            _rps_ratio("grpc_execute", "grpc_echo", top),
        ),
        Target(
            f"REST execute / bare REST→gRPC hop, {top} in flight",
            0.5,
            AT_LEAST,
            _rps_ratio("rest_execute", "rest_hop", top),
        ),
        Target(
            f"gRPC GetJob / bare echo, {top} in flight",
            0.5,
            AT_LEAST,
            _rps_ratio("grpc_get_job", "grpc_echo", top),
        ),
        Target(
            "end-to-end completed jobs/s / bare Dramatiq no-op",
            0.5,
            AT_LEAST,
            lambda c, b, m: ratio(_get(c, "e2e", "per_s"), _get(b, "dramatiq_noop", "per_s")),
        ),
        Target(
            f"GetJob p50 at {int(large):,} stored / at {int(small):,}",
            1.2,
            AT_MOST,
            _scale_ratio("grpc_p50_ms", large, small),
        ),
        Target(
            f"server RSS at {int(large):,} stored / at {int(small):,}",
            1.1,
            AT_MOST,
            _scale_ratio("rss_mb", large, small),
        ),
    ]


def latency_targets(meta: dict[str, Any]) -> list[Target]:
    """The latency-bound workload's targets; each configuration's figures are its runs."""
    chunks, long_chunks = meta["latency_chunks"]
    return [
        Target(
            "peak provider calls in flight / (worker processes x concurrency)",
            0.9,
            AT_LEAST,
            lambda c, b, m: ratio(
                _get(c, "main", "peak_in_flight"),
                (_get(c, "main", "processes") or 0) * (_get(c, "main", "concurrency") or 0),
            ),
        ),
        Target(
            f"completed jobs/s, provider latency {meta['latency_s']:g} s",
            200,
            AT_LEAST,
            lambda c, b, m: _get(c, "main", "per_s"),
            digits=0,
        ),
        # Exactly: one duplicate call in thousands of jobs must show, so four decimals.
        Target(
            "provider calls per job",
            1,
            EXACTLY,
            lambda c, b, m: _get(c, "main", "calls_per_job"),
            digits=4,
        ),
        Target(
            "worker RSS growth per execution in flight, KB",
            100,
            AT_MOST,
            lambda c, b, m: _get(c, "main", "rss_per_job_in_flight_kb"),
            digits=1,
        ),
        Target(
            f"completed jobs/s, {long_chunks} chunks per answer / {chunks}",
            0.9,
            AT_LEAST,
            lambda c, b, m: ratio(_get(c, "long_stream", "per_s"), _get(c, "main", "per_s")),
        ),
    ]


def judge_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target measured in every configuration of the run."""
    return _judge(targets(results["meta"]), results["configs"], results, key="ratio")


def judge_latency_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every latency-bound target measured in every configuration of the run."""
    return _judge(latency_targets(results["meta"]), results["latency"], results, key="value")


def _judge(
    goals: list[Target], configs: dict[str, Any], results: dict[str, Any], *, key: str
) -> list[dict[str, Any]]:
    judged = []
    for target in goals:
        row: dict[str, Any] = {"target": target.name, "bound": target.bound}
        for config, figures in configs.items():
            value = target.measure(figures, results["baselines"], results["meta"])
            row[config] = {key: value, "result": target.judge(value), "digits": target.digits}
        judged.append(row)
    return judged


def write(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """results.json and results.md in `directory`; returns both paths."""
    json_path, md_path = directory / "results.json", directory / "results.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _cpu(split: dict[str, float] | None) -> str:
    """`serve 0.95 · postgres 0.41 · others 0.20`: who used the cores, busiest first."""
    if not split:
        return "n/a"
    parts = []
    for who, cores in split.items():
        if cores >= 0.05:
            # `postgres-serve`, `latency-postgres-4-workers`: the row already says which.
            name = OWN_PREFIX.sub("", who)
            parts.append(f"{name.replace('load generator', 'load')} {cores:.2f}")
    return " · ".join(parts)


def markdown(results: dict[str, Any]) -> str:
    """The whole report."""
    meta = results["meta"]
    lines = [
        "# agentq benchmark",
        "",
        f"{meta['started']} · agentq {meta['agentq_version']} · commit {meta['commit']} · "
        f"{meta['cpus']} CPUs, {meta['memory_gb']:.0f} GB · {meta['mode']} · "
        f"metrics {meta.get('metrics', 'on')}, tracing {meta.get('tracing', 'off')} · "
        f"{meta['duration_s']:g} s per run after {meta['warmup_s']:g} s warm-up · "
        f"load: {meta['load_tools']}",
        "",
    ]
    if results["configs"] or not results.get("latency"):
        lines += _targets_table(
            "Targets",
            f"Judged on **{TARGET_CONFIG}** (issue 6); other configurations for information.",
            list(results["configs"]),
            results["targets"],
            key="ratio",
        )
    if results.get("latency"):
        lines += _targets_table(
            "Latency-bound targets",
            f"Judged on **{TARGET_CONFIG}**; the embedded default for information.",
            list(results["latency"]),
            results["latency_targets"],
            key="value",
        )
    if results["baselines"]:
        lines += _baselines_table(results)
    for config, figures in results["configs"].items():
        lines += _config_tables(config, figures, results["baselines"])
    lines += _latency_tables(results)
    if results.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in results["notes"]], ""]
    for profile in results.get("profiles", []):
        lines += [profile, ""]
    return "\n".join(lines)


def _targets_table(
    title: str, intro: str, configs: list[str], rows: list[dict[str, Any]], *, key: str
) -> list[str]:
    if not configs:
        return [f"## {title}", "", "No configuration of agentq was measured.", ""]
    names = [f"**{c}**" if c == TARGET_CONFIG else c for c in configs]
    head = "| target | bound | " + " | ".join(f"{n} {key} | result" for n in names) + " |"
    lines = [f"## {title}", "", intro, "", head, "|---|---|" + "---:|---|" * len(configs)]
    for row in rows:
        cells = [
            f"{_num(row[c][key], row[c].get('digits', 2))} | {row[c]['result']}" for c in configs
        ]
        lines.append(f"| {row['target']} | {row['bound']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _baselines_table(results: dict[str, Any]) -> list[str]:
    baselines = results["baselines"]
    lines = [
        "## Baselines",
        "",
        f"| baseline | in flight | req/s | p50 ms | p99 ms | {CPU} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, title in BASELINE_TITLES.items():
        for in_flight, run in (baselines.get(key) or {}).items():
            lines.append(
                f"| {title} | {in_flight} | {_num(run['rps'])} | {_num(run['p50_ms'], 2)} | "
                f"{_num(run['p99_ms'], 2)} | {_cpu(run.get('cpu'))} |"
            )
    noop = baselines.get("dramatiq_noop")
    if noop:
        lines += [
            "",
            f"Bare Dramatiq no-op on Redis: {noop['count']:,} messages, first send to last "
            f"processed {noop['seconds']:.2f} s = **{_num(noop['per_s'])} messages/s** "
            f"(sent at {_num(noop['send_per_s'])}/s; {CPU}: {_cpu(noop.get('cpu'))}).",
        ]
    return [*lines, ""]


def _config_tables(config: str, figures: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
    lines = [
        f"## {CONFIG_TITLES.get(config, config)}",
        "",
        f"| workload | in flight | req/s | p50 ms | p99 ms | baseline req/s | ratio | {CPU} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, title, baseline_key in API_WORKLOADS:
        for in_flight, run in (figures.get(key) or {}).items():
            base = _get(baselines, baseline_key, in_flight, "rps")
            lines.append(
                f"| {title} | {in_flight} | {_num(run['rps'])} | {_num(run['p50_ms'], 2)} | "
                f"{_num(run['p99_ms'], 2)} | {_num(base)} | {_num(ratio(run['rps'], base), 2)} | "
                f"{_cpu(run.get('cpu'))} |"
            )
    e2e = figures.get("e2e")
    if e2e:
        noop = _get(baselines, "dramatiq_noop", "per_s")
        lines += [
            "",
            f"End to end: {e2e['count']:,} executions submitted at {_num(e2e['submit_per_s'])}/s, "
            f"last completed after {e2e['seconds']:.2f} s = **{_num(e2e['per_s'])} completed "
            f"jobs/s** (ratio to Dramatiq no-op {_num(ratio(e2e['per_s'], noop), 2)}); "
            f"submit→completed p50 {_num(e2e['p50_ms'])} ms, p99 {_num(e2e['p99_ms'])} ms; "
            f"{CPU}: {_cpu(e2e.get('cpu'))}.",
        ]
    drain = figures.get("backlog_drain")
    if drain:
        lines.append(
            f"Backlog the API runs left: {drain['jobs']:,} jobs worked off in "
            f"{drain['seconds']:.1f} s ({_num(drain['per_s'])} jobs/s)."
        )
    lines += _scale_table(figures.get("scale") or {})
    return [*lines, ""]


def _scale_table(scale: dict[str, Any]) -> list[str]:
    if not scale:
        return []
    lines = [
        "",
        "| jobs stored | gRPC GetJob p50 ms | p99 ms | REST get-job p50 ms | p99 ms "
        f"| server RSS MB | {CPU} |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, point in scale.items():
        lines.append(
            f"| {int(size):,} | {_num(point['grpc_p50_ms'], 2)} | "
            f"{_num(point['grpc_p99_ms'], 2)} | {_num(point['rest_p50_ms'], 2)} | "
            f"{_num(point['rest_p99_ms'], 2)} | {_num(point['rss_mb'], 1)} | "
            f"{_cpu(point.get('cpu'))} |"
        )
    return lines


def _latency_tables(results: dict[str, Any]) -> list[str]:
    latency, meta = results.get("latency") or {}, results["meta"]
    if not latency:
        return []
    lines = [
        "## Latency-bound workload",
        "",
        f"{meta['latency_jobs']:,} executions per run, each with its own prompt; the provider "
        f"(a fake, its own process) answers each after {meta['latency_s']:g} s, streamed. "
        "Completed jobs/s = jobs / (last completed - first started). Latencies in ms.",
        "",
        "| configuration | chunks | processes x concurrency | completed jobs/s | peak calls "
        "in flight | calls per job | most calls for one prompt | disconnects | queued→completed "
        f"p50 / p99 | started→completed p50 / p99 | RSS KB per job in flight | {CPU} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    memory = []
    for config, runs in latency.items():
        for run in runs.values():
            lines.append(
                f"| {config} | {run['chunks']} | {run['processes']} x {run['concurrency']} | "
                f"{_num(run['per_s'])} | {run['peak_in_flight']:,} | {run['calls_per_job']:.4f} "
                f"| {run['max_calls_per_prompt']} | {run['disconnects']} | "
                f"{_num(run['queued_p50_ms'])} / {_num(run['queued_p99_ms'])} | "
                f"{_num(run['run_p50_ms'])} / {_num(run['run_p99_ms'])} | "
                f"{_num(run['rss_per_job_in_flight_kb'], 1)} | {_cpu(run.get('cpu'))} |"
            )
            each = ", ".join(f"{p['before_mb']:.1f} → {p['peak_mb']:.1f}" for p in run["rss"])
            memory.append(f"{config}, {run['chunks']} chunks: {each}")
    lines += [
        "",
        "Resident memory of each engine process (and its children), before the drain → "
        "peak, MB, sampled every 0.5 s: " + "; ".join(memory) + ".",
        "",
    ]
    return lines
