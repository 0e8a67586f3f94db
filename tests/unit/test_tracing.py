"""Tracing's switch, and the traceparent a job keeps for every attempt (README.md, Tracing)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError
from sqlalchemy import select

from agentq.v1 import job_pb2
from rest_shim import render
from server import tracing
from server.api.convert import job_message
from server.service.recovery import Recovery
from server.settings import Settings
from server.store.event_log import job_event_id
from server.store.models import JobStatus
from server.store.tables import events
from server.store.traced import span_name
from server.worker.policy import RetryPolicy
from tests.fakes.provider import ScriptedProvider
from tests.world import ALICE, World, execute_request

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("switch", "environ", "wanted"),
    [
        (False, {}, False),
        (False, {"OTEL_SERVICE_NAME": "agentq"}, False),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        (False, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        (True, {}, True),
        (True, {"OTEL_SDK_DISABLED": "true"}, False),
        (
            False,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "TRUE"},
            False,
        ),
    ],
)
def test_tracing_is_on_only_when_an_endpoint_or_the_switch_asks(
    switch: bool, environ: dict[str, str], wanted: bool
) -> None:
    assert tracing.wanted(switch, environ) is wanted


@pytest.mark.parametrize(("value", "on"), [("on", True), ("ON", True), ("off", False), ("", None)])
def test_the_switch_is_the_setting_agentq_tracing(
    monkeypatch: pytest.MonkeyPatch, value: str, on: bool | None
) -> None:
    monkeypatch.setenv("AGENTQ_TRACING", value)
    if on is None:
        with pytest.raises(ValidationError):
            Settings()
    else:
        assert Settings().tracing is on


def test_off_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert tracing.install("serve") is None
    assert not tracing.enabled()
    assert tracing.provider() is None
    assert tracing.current_traceparent() is None
    with tracing.span("job.attempt") as span:
        assert span is None


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        (TRACEPARENT, TRACE_ID),
        (None, None),
        ("00-short-00f067aa0ba902b7-01", None),
        ("garbage", None),
    ],
)
def test_the_trace_id_is_read_from_a_stored_traceparent(
    traceparent: str | None, trace_id: str | None
) -> None:
    assert tracing.trace_id_of(traceparent) == trace_id


def _job(trace_id: str | None = None) -> job_pb2.Job:
    job = job_pb2.Job(job_id="j", agent_id="a", status=job_pb2.JOB_STATUS_PENDING)
    if trace_id is not None:
        job.trace_id = trace_id
    return job


def test_the_rest_body_has_a_trace_id_only_when_the_job_has_one() -> None:
    assert "trace_id" not in render.job(_job())
    assert render.job(_job(trace_id=TRACE_ID))["trace_id"] == TRACE_ID


async def test_off_a_job_keeps_no_traceparent_and_names_no_trace(world: World) -> None:
    agent = await world.add_agent()
    job_id = await world.jobs.execute(ALICE, agent.id, execute_request())
    job = await world.job(job_id)
    assert job is not None and job.traceparent is None
    assert not job_message(job).HasField("trace_id")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing installed in this process, into memory; taken down after the test."""
    kept = InMemorySpanExporter()
    installed = tracing.install("serve", exporter=kept)
    assert installed is not None
    try:
        yield kept
    finally:
        installed.uninstall()
    assert not tracing.enabled()


async def test_on_a_job_keeps_the_traceparent_of_the_span_that_queued_it(
    world: World, exporter: InMemorySpanExporter
) -> None:
    agent = await world.add_agent()
    with tracing.span("request") as request:
        assert request is not None
        job_id = await world.jobs.execute(ALICE, agent.id, execute_request())
    job = await world.job(job_id)
    assert job is not None and job.traceparent is not None
    context = request.get_span_context()
    # version, trace id, parent span id, flags (sampled, and random as the SDK sets it)
    assert job.traceparent.split("-")[:3] == [
        "00",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    ]
    assert job_message(job).trace_id == f"{context.trace_id:032x}"
    # The message was handed over inside the request.
    sent = [s for s in exporter.get_finished_spans() if s.name == "job.enqueue"]
    assert [s.parent.span_id for s in sent if s.parent] == [context.span_id]


async def test_a_recovered_job_is_claimed_again_with_its_traceparent(world: World) -> None:
    world.policy = RetryPolicy(max_attempts=3, time_limit_s=120, lease_grace_s=15)
    agent = await world.add_agent()
    started = world.clock() - timedelta(seconds=world.policy.lease_s + 1)
    job = await world.add_job(
        agent,
        status=JobStatus.RUNNING.value,
        attempts=1,
        started_at=started,
        run_token="lost-attempt",
        lease_expires_at=started + timedelta(seconds=world.policy.lease_s),
        traceparent=TRACEPARENT,
    )
    recovery: Recovery = world.recovery()
    assert await recovery.sweep() == 1
    attempt = await world.runner(ScriptedProvider()).claim(job.id)
    assert attempt is not None
    assert (attempt.number, attempt.traceparent) == (2, TRACEPARENT)


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({}, "agentq"),
        ({"OTEL_SERVICE_NAME": "queue-east"}, "queue-east"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=queue-west,team=ml"}, "queue-west"),
    ],
)
def test_the_service_is_named_agentq_unless_the_otel_variables_name_it(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], name: str
) -> None:
    for variable in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    installed = tracing.install("worker", exporter=InMemorySpanExporter())
    assert installed is not None
    try:
        attributes = installed.provider.resource.attributes
        assert (attributes["service.name"], attributes["agentq.process"]) == (name, "worker")
    finally:
        installed.uninstall()


def test_a_statement_is_named_as_its_own_database_compiles_it() -> None:
    # The event log's ids use a construct only PostgreSQL and SQLite can render.
    statement = select(job_event_id(events.c.job_id, events.c.sequence))

    assert span_name(statement, "postgresql") == "SELECT job_events"
    assert span_name(statement, "sqlite") == "SELECT job_events"
