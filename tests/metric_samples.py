"""Reading agentq's metrics in tests: every sample by name and labels, and what changed.

The unit tests read prometheus-client's registry in the process; the end-to-end tests
parse what a process serves with prometheus-client's own parser. Both come down to the
same samples, so both compare counts the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from server import metrics

# A sample: its name and its labels, sorted.
Key = tuple[str, tuple[tuple[str, str], ...]]
# What a histogram's buckets and sum hold is timing, never a count a test can know.
_TIMINGS = ("_bucket", "_sum", "_created")


def key(name: str, **labels: str) -> Key:
    """The key of the sample `name` with `labels`."""
    return name, tuple(sorted(labels.items()))


def samples(families: Iterable[Metric]) -> dict[Key, float]:
    """Every sample of agentq's metrics but timings: counters, gauges, histogram counts."""
    found: dict[Key, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name.startswith("agentq_") and not sample.name.endswith(_TIMINGS):
                found[key(sample.name, **sample.labels)] = sample.value
    return found


def in_process() -> dict[Key, float]:
    """The samples of this process's registries now: the server's, the shim's."""
    return samples([*metrics.REGISTRY.collect(), *REGISTRY.collect()])


def parsed(text: str) -> dict[Key, float]:
    """The samples of a scrape's text, read by prometheus-client's parser."""
    return samples(text_string_to_metric_families(text))


def changes(before: Mapping[Key, float], after: Mapping[Key, float]) -> dict[Key, float]:
    """The samples whose value is not what it was (a new sample was 0), and by how much."""
    return {
        name: value - before.get(name, 0.0)
        for name, value in after.items()
        if value != before.get(name, 0.0)
    }


def provider_counts(
    labels: Mapping[str, str], *, calls: int, tokens: int, **errors: int
) -> dict[Key, float]:
    """The provider samples of `calls` calls under `labels` (provider, model) that cost
    `tokens`, `errors` of them failing, by kind (retryable, fatal, time_limit)."""
    counts = {
        key("agentq_provider_calls_total", **labels): float(calls),
        key("agentq_provider_call_duration_seconds_count", **labels): float(calls),
        key("agentq_provider_tokens_total", **labels): float(tokens),
    }
    for kind, failed in errors.items():
        counts[key("agentq_provider_errors_total", kind=kind, **labels)] = float(failed)
    return counts


def job_counts(**events: int) -> dict[Key, float]:
    """The job counters of `events` (submitted=2, cancelled=1, ...), untouched by tenant."""
    return {key(f"agentq_jobs_{event}_total"): float(jobs) for event, jobs in events.items()}


def attempt_counts(**outcomes: int) -> dict[Key, float]:
    """What attempts ending in `outcomes` (completed=1, retrying=2, ...) count: each was
    started after a wait, and each outcome has its job counter and its run times."""
    started = float(sum(outcomes.values()))
    counts = {
        key("agentq_jobs_started_total"): started,
        key("agentq_job_queue_wait_seconds_count"): started,
    }
    for outcome, attempts in outcomes.items():
        counts[key("agentq_job_run_seconds_count", outcome=outcome)] = float(attempts)
        event = "retried" if outcome == "retrying" else outcome
        counts[key(f"agentq_jobs_{event}_total")] = float(attempts)
    return counts
