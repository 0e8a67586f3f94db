"""The server's Prometheus metrics: each defined once here, recorded where it happens.

Every layer records into this module and it imports nothing of them, so it sits beside the
layers like settings.py. The metrics live in prometheus-client's default registry, which
`agentq serve` and `agentq worker` serve at AGENTQ_METRICS_ADDR (server/cli/metrics.py);
README.md (Metrics) lists each name, its labels and what it counts.

Recording is on the hot paths, so a label set's child is looked up in prometheus-client
once and kept in a plain dict here: a call then costs a dict lookup and an increment
(plus a bucket search for a histogram), not a lock-guarded lookup and a tuple of labels.
A process that serves no metrics (AGENTQ_METRICS_ADDR empty) records none either:
`configure(recording=False)` makes every call here return at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# The server's metrics, apart from prometheus-client's default registry: `agentq serve`
# and `agentq worker` serve both, `agentq rest` (which loads this module with the
# settings) the default one alone, where the shim's metrics and the process's are.
REGISTRY = CollectorRegistry()

# Calls answered from memory take a millisecond; a stream may stay open for minutes.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Waiting in the queue, running an attempt, a provider call: milliseconds to minutes.
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

_GRPC_REQUESTS = Counter(
    "agentq_grpc_requests",
    "gRPC calls answered, by method and status code.",
    ["rpc", "code"],
    registry=REGISTRY,
)
_GRPC_DURATION = Histogram(
    "agentq_grpc_request_duration_seconds",
    "Time from a gRPC call's start to its answer, by method and status code.",
    ["rpc", "code"],
    buckets=FAST_BUCKETS,
    registry=REGISTRY,
)
_QUEUE_WAIT = Histogram(
    "agentq_job_queue_wait_seconds",
    "Time from when an attempt could start (the job queued, or its retry due) to its start.",
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
_RUN_TIME = Histogram(
    "agentq_job_run_seconds",
    "Time from an attempt's start (its claim) to its recorded outcome, by outcome.",
    ["outcome"],
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
_PROVIDER_CALLS = Counter(
    "agentq_provider_calls",
    "Provider calls made (vex_llm_calls_total).",
    ["provider", "model"],
    registry=REGISTRY,
)
_PROVIDER_ERRORS = Counter(
    "agentq_provider_errors",
    "Provider calls that failed (vex_llm_errors_total): kind retryable, fatal or time_limit.",
    ["provider", "model", "kind"],
    registry=REGISTRY,
)
_PROVIDER_DURATION = Histogram(
    "agentq_provider_call_duration_seconds",
    "Time a provider call took, whatever its outcome.",
    ["provider", "model"],
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
_PROVIDER_TOKENS = Counter(
    "agentq_provider_tokens",
    "Tokens the provider reported for its calls (vex_tokens_used_total).",
    ["provider", "model"],
    registry=REGISTRY,
)
_VERIFICATIONS = Counter(
    "agentq_verifications",
    "Completed adversarial runs, by whether the judge verified the answer.",
    ["verified"],
    registry=REGISTRY,
)
_DEBATE_ROUNDS = Counter(
    "agentq_debate_rounds", "Debate rounds of completed adversarial runs.", registry=REGISTRY
)
_SLOTS_IN_USE = Gauge(
    "agentq_worker_slots_in_use", "Execution slots holding a job now.", registry=REGISTRY
)
_SLOTS = Gauge(
    "agentq_worker_slots", "Execution slots of this process (its concurrency).", registry=REGISTRY
)

# The label values of each counter, bound once (see the module's docstring).
_verified = {True: _VERIFICATIONS.labels("true"), False: _VERIFICATIONS.labels("false")}
_calls: dict[tuple[str, str], tuple[Any, Any]] = {}
_run_time: dict[str, Any] = {}
# False in a process that serves no metrics: nobody could read what it records.
_recording = True


def grpc_call(rpc: str, code: str, duration_s: float) -> None:
    """One gRPC call answered (server/api/call_log.py)."""
    if not _recording:
        return
    bound = _calls.get((rpc, code))
    if bound is None:
        # The methods are those the server registered, the codes gRPC's: a bounded set.
        bound = (_GRPC_REQUESTS.labels(rpc, code), _GRPC_DURATION.labels(rpc, code))
        _calls[rpc, code] = bound
    bound[0].inc()
    bound[1].observe(duration_s)


class _JobCounters:
    """The job counters, by tenant or not (AGENTQ_METRICS_TENANT_LABELS)."""

    EVENTS = ("submitted", "started", "completed", "failed", "cancelled", "retried")

    def __init__(self, *, by_tenant: bool) -> None:
        self.by_tenant = by_tenant
        labels = ["tenant"] if by_tenant else []
        self.counters = {
            event: Counter(f"agentq_jobs_{event}", _JOB_HELP[event], labels, registry=REGISTRY)
            for event in self.EVENTS
        }
        self._bound: dict[tuple[str, str], Any] = {}

    def inc(self, event: str, tenant: str, amount: int = 1) -> None:
        if not self.by_tenant:
            self.counters[event].inc(amount)
            return
        child = self._bound.get((event, tenant))
        if child is None:
            child = self._bound[event, tenant] = self.counters[event].labels(tenant)
        child.inc(amount)

    def unregister(self) -> None:
        for counter in self.counters.values():
            REGISTRY.unregister(counter)


_JOB_HELP = {
    "submitted": "Jobs queued (a replayed idempotent submit is not counted again).",
    "started": "Attempts started: a job's claim by a worker, once per attempt.",
    "completed": "Jobs completed.",
    "failed": "Jobs failed, by their worker or by the sweeper.",
    "cancelled": "Jobs cancelled: pending ones by the API, running ones by their worker.",
    "retried": "Attempts that failed and gave their job back to the queue for another.",
}
_jobs = _JobCounters(by_tenant=False)


def configure(*, tenant_labels: bool, recording: bool = True) -> None:
    """Label the job counters by tenant (AGENTQ_METRICS_TENANT_LABELS), or not; record
    nothing at all unless `recording`."""
    global _jobs, _recording
    _recording = recording
    if tenant_labels != _jobs.by_tenant:
        _jobs.unregister()
        _jobs = _JobCounters(by_tenant=tenant_labels)


def jobs_counted(event: str, tenant: str, amount: int = 1) -> None:
    """`amount` jobs of `tenant` were submitted, started, completed, failed, cancelled or
    retried (one of _JobCounters.EVENTS)."""
    if amount and _recording:
        _jobs.inc(event, tenant, amount)


def attempt_started(tenant: str, waited_s: float) -> None:
    """An attempt was claimed after waiting `waited_s` since it could start."""
    if not _recording:
        return
    _jobs.inc("started", tenant)
    _QUEUE_WAIT.observe(max(0.0, waited_s))


# The outcome an attempt's job line names (server/worker/job_log.py) -> the job counter.
_OUTCOME_EVENTS = {
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "retrying": "retried",
}


def attempt_ended(tenant: str, outcome: str, ran_s: float) -> None:
    """An attempt recorded `outcome` (completed, failed, cancelled, retrying) after `ran_s`."""
    if not _recording:
        return
    _jobs.inc(_OUTCOME_EVENTS[outcome], tenant)
    child = _run_time.get(outcome)
    if child is None:
        child = _run_time[outcome] = _RUN_TIME.labels(outcome)
    child.observe(ran_s)


class ProviderMeter:
    """The provider metrics of one provider and model, bound once per worker."""

    def __init__(self, provider: str, model: str) -> None:
        self._calls = _PROVIDER_CALLS.labels(provider, model)
        self._duration = _PROVIDER_DURATION.labels(provider, model)
        self._tokens = _PROVIDER_TOKENS.labels(provider, model)
        self._errors = {
            kind: _PROVIDER_ERRORS.labels(provider, model, kind)
            for kind in ("retryable", "fatal", "time_limit")
        }

    def call(self, duration_s: float, tokens: int, error: str | None = None) -> None:
        """A call ended after `duration_s`, costing `tokens`; `error` is its kind if it failed."""
        if not _recording:
            return
        self._calls.inc()
        self._duration.observe(duration_s)
        if tokens:
            self._tokens.inc(tokens)
        if error is not None:
            self._errors[error].inc()


def verification(*, verified: bool, rounds: int) -> None:
    """An adversarial run completed, verified or not, after `rounds` debate rounds."""
    if not _recording:
        return
    _verified[verified].inc()
    if rounds:
        _DEBATE_ROUNDS.inc(rounds)


class _Count:
    """A counter with at most one label, each of its values bound once: `count(value)`."""

    def __init__(self, name: str, doc: str, label: str = "", values: tuple[str, ...] = ()):
        counter = Counter(name, doc, [label] if label else [], registry=REGISTRY)
        self._bound = {value: counter.labels(value) for value in values} if label else None
        self._counter = counter

    def __call__(self, value: str = "", amount: int = 1) -> None:
        if amount and _recording:
            (self._counter if self._bound is None else self._bound[value]).inc(amount)


agent_created = _Count("agentq_agents_created", "Agents created (vex_agents_created_total).")
# A call refused by a limit: rate_limit, cap (unfinished jobs) or auth_throttle.
refused = _Count(
    "agentq_refusals",
    "Calls refused by a limit: reason rate_limit, cap (unfinished jobs) or auth_throttle.",
    "reason",
    ("rate_limit", "cap", "auth_throttle"),
)
# A lost run the sweeper gave back: retried, failed or cancelled.
sweeper_recovered = _Count(
    "agentq_sweeper_recovered",
    "Running jobs whose worker was lost, recovered by the sweeper: outcome retried, failed "
    "or cancelled.",
    "outcome",
    ("retried", "failed", "cancelled"),
)
# sweeper_resent(amount=n): n overdue messages sent again.
sweeper_resent = _Count(
    "agentq_sweeper_resent", "Pending jobs whose message was overdue, sent again by the sweeper."
)
database_error = _Count(
    "agentq_database_errors", "Statements and connections the database did not answer."
)
# A Redis call that failed: rate_limit, send or ping.
redis_error = _Count(
    "agentq_redis_errors",
    "Redis calls that failed: operation rate_limit, send (a job message) or ping.",
    "operation",
    ("rate_limit", "send", "ping"),
)


def watch_slots(in_use: Callable[[], int], slots: int) -> None:
    """Report the execution slots of this process's engine, read at each scrape."""
    _SLOTS.set(slots)
    _SLOTS_IN_USE.set_function(in_use)


class JobCounts(Collector):
    """The pending and running jobs in the database, counted at most once per `max_age_s`.

    `count` answers {status: jobs} with one query; a scrape in between reads the last
    answer, so scrapes never add up to load on the database. When the count fails, the
    gauges are left out of that scrape rather than shown stale.
    """

    def __init__(self, count: Callable[[], Mapping[str, int]], *, max_age_s: float = 5.0) -> None:
        self._count = count
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._counted: Mapping[str, int] | None = None
        self._at = 0.0

    def _counts(self) -> Mapping[str, int] | None:
        with self._lock:
            now = time.monotonic()
            if self._counted is None or now - self._at >= self._max_age_s:
                try:
                    self._counted, self._at = self._count(), now
                except Exception:
                    log.warning("could not count the pending and running jobs", exc_info=True)
                    database_error()
                    return None
            return self._counted

    def describe(self) -> Iterator[Metric]:
        # The registry asks for the names when the collector is registered: answered
        # without a query (the database may not even be migrated yet).
        for status in ("pending", "running"):
            yield _job_gauge(status)

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        if counts is None:
            return
        for status in ("pending", "running"):
            yield _job_gauge(status, counts.get(status, 0))


def _job_gauge(status: str, value: int | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        f"agentq_jobs_{status}",
        f"Jobs {status} in the database (counted at most every few seconds).",
        value=value,
    )
