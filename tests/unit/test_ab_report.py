"""The side-by-side report: per round one ratio B / A, summed up by median and range."""

from __future__ import annotations

import pytest

from bench.ab_latency import variants
from bench.ab_report import Round, markdown, summary


def _round(a_per_s: float, b_per_s: float, a_cpu: float, b_cpu: float) -> Round:
    return {
        "a": {"per_s": a_per_s, "cpu_ms_per_call": a_cpu, "others_cores": 0.1},
        "b": {"per_s": b_per_s, "cpu_ms_per_call": b_cpu, "others_cores": 0.3},
    }


def test_each_ratio_is_the_median_of_the_rounds_ratios_with_their_range() -> None:
    rounds = [_round(100, 90, 2.0, 2.2), _round(200, 200, 2.0, 2.0), _round(100, 110, 1.0, 0.9)]

    found = summary(rounds)

    assert found["per_s"] == {"median": 1.0, "low": 0.9, "high": pytest.approx(1.1)}
    assert found["cpu_ms_per_call"]["median"] == 1.0
    assert found["cpu_ms_per_call"]["high"] == pytest.approx(1.1)
    assert (found["a_per_s"], found["b_per_s"]) == (100, 110)
    assert found["others_cores_max"] == 0.3


def test_a_workload_without_cpu_figures_reports_throughput_only() -> None:
    rounds = [
        {"a": {"per_s": 50.0, "others_cores": 0.0}, "b": {"per_s": 45.0, "others_cores": 0.0}}
    ]

    found = summary(rounds)

    assert found["per_s"]["median"] == 0.9
    assert "cpu_ms_per_call" not in found


def test_the_table_has_a_row_per_configuration_and_workload() -> None:
    side = {"label": "x", "agentq": "agentq", "env": {}}
    meta = {"started": "now", "a": side, "b": side, "rounds": 1, "e2e_rounds": 1}
    meta |= {"duration_s": 1.0, "in_flight": [64], "e2e_count": 10}
    results = {"meta": meta, "configs": {"embedded": {"grpc_get_job_64": [_round(10, 9, 1, 1)]}}}

    text = markdown(results)

    assert (
        "| embedded | grpc_get_job_64 | 10 | 9 | 0.900 (0.900-0.900) "
        "| 1.000 (1.000-1.000) | 0.30 | - |" in text
    )


def test_embedded_executes_report_the_jobs_each_side_finished_during_its_turns() -> None:
    rounds = [_round(100, 90, 2.0, 2.2), _round(100, 90, 2.0, 2.2)]
    for turn, (a, b) in zip(rounds, [(0.1, 0.8), (0.3, 0.6)], strict=True):
        turn["a"]["finished_per_call"], turn["b"]["finished_per_call"] = a, b

    found = summary(rounds)

    assert (found["finished_per_call_a"], found["finished_per_call_b"]) == (0.2, 0.7)


def test_latency_asks_for_both_latency_bound_runs_and_each_may_be_asked_alone() -> None:
    assert variants(["e2e", "latency"]) == {"latency_4": 4, "latency_200": 200}
    assert variants(["latency_200"]) == {"latency_200": 200}
    assert variants(["e2e", "grpc_get_job"]) == {}
