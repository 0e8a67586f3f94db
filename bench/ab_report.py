"""The side-by-side comparison's report: per workload, the median ratio B / A of its rounds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

# A round: {"a": figures, "b": figures}; figures: per_s, p50_ms, cpu_ms_per_call, ...
Round = dict[str, dict[str, float]]


def ratios(rounds: list[Round], figure: str) -> list[float]:
    """B / A of `figure`, one per round that measured it on both sides."""
    return [
        r["b"][figure] / r["a"][figure]
        for r in rounds
        if figure in r["a"] and figure in r["b"] and r["a"][figure] > 0
    ]


def summary(rounds: list[Round]) -> dict[str, Any]:
    """The median and range of each ratio, and each side's median throughput."""
    result: dict[str, Any] = {
        "a_per_s": statistics.median(r["a"]["per_s"] for r in rounds),
        "b_per_s": statistics.median(r["b"]["per_s"] for r in rounds),
        "others_cores_max": max(
            max(r["a"]["others_cores"], r["b"]["others_cores"]) for r in rounds
        ),
    }
    if "finished_per_call" in rounds[0]["a"]:
        result["finished_per_call_a"] = statistics.median(
            r["a"]["finished_per_call"] for r in rounds
        )
        result["finished_per_call_b"] = statistics.median(
            r["b"]["finished_per_call"] for r in rounds
        )
    for figure in ("per_s", "cpu_ms_per_call"):
        found = ratios(rounds, figure)
        if found:
            result[figure] = {
                "median": statistics.median(found),
                "low": min(found),
                "high": max(found),
            }
    return result


def brief(rounds: list[Round]) -> str:
    """One line for the progress output."""
    s = summary(rounds)
    text = f"B/A throughput {_ratio(s['per_s'])}"
    if "cpu_ms_per_call" in s:
        text += f", CPU per call {s['cpu_ms_per_call']['median']:.3f}"
    if "finished_per_call_a" in s:
        text += f", jobs finished in the turn per call {_finished(s)}"
    return text


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# agentq side by side ({meta['started']})",
        "",
        f"- A: {meta['a']['label']} (`{meta['a']['agentq']}`, {_env(meta['a']['env'])})",
        f"- B: {meta['b']['label']} (`{meta['b']['agentq']}`, {_env(meta['b']['env'])})",
        f"- {meta['rounds']} turns of {meta['duration_s']:g} s per API workload and concurrency "
        f"{meta['in_flight']}; {meta['e2e_rounds']} turns of {meta['e2e_count']} executions end "
        "to end; turns alternate AB, BA, ...",
        *_latency_line(results),
        "",
        "| configuration | workload | A /s | B /s | B/A throughput, median (range) "
        "| B/A server CPU per call, median (range) | others, max cores "
        "| jobs finished in the turn per call, A / B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, workloads in results["configs"].items():
        for label, rounds in workloads.items():
            s = summary(rounds)
            cpu = _ratio(s["cpu_ms_per_call"]) if "cpu_ms_per_call" in s else "-"
            lines.append(
                f"| {kind} | {label} | {s['a_per_s']:,.0f} | {s['b_per_s']:,.0f} "
                f"| {_ratio(s['per_s'])} | {cpu} | {s['others_cores_max']:.2f} "
                f"| {_finished(s) if 'finished_per_call_a' in s else '-'} |"
            )
    return "\n".join(lines) + "\n"


def _latency_line(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    labels = {label for workloads in results["configs"].values() for label in workloads}
    if not any(label.startswith("latency") for label in labels):
        return []
    return [
        f"- latency-bound: {meta['latency_rounds']} turns of each run of "
        f"{meta['latency_jobs']} executions, the provider answering after {meta['latency_s']:g} s"
    ]


def _finished(s: dict[str, Any]) -> str:
    """Embedded executes: the jobs the server's engine finished during the turn, per call."""
    return f"{s['finished_per_call_a']:.2f} / {s['finished_per_call_b']:.2f}"


def _ratio(figure: dict[str, float]) -> str:
    return f"{figure['median']:.3f} ({figure['low']:.3f}-{figure['high']:.3f})"


def _env(env: dict[str, str]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in env.items()) or "the benchmark's settings"


def write(results: dict[str, Any], run_dir: Path) -> str:
    """Write results.json and results.md in `run_dir`; the markdown."""
    text = markdown(results)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "results.md").write_text(text)
    return text
