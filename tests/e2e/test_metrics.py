"""Every process serves Prometheus metrics that count exactly what happened (README: Metrics).

The scaled-out layout runs for real: `agentq serve --no-rest` and `agentq rest` on
PostgreSQL and Redis, `agentq worker --processes 2`, and the fake OpenAI provider in its
own process. A flow goes through REST with jobs completed, failed at once, retried until
they failed, cancelled while pending and while running, refused by a rate limit and by a
cap; then each endpoint is scraped and its text read by prometheus-client's parser. The
embedded default (`agentq serve` on SQLite) serves all of it on one endpoint.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from server.settings import Settings
from tests.e2e.access_helpers import ADMIN_TOKEN
from tests.e2e.cli_helpers import QUICK_EXIT_S, SECRET, clean_env, free_port
from tests.e2e.harness import (
    REST_LISTENING,
    FakeLLMProcess,
    fake_llm_process,
    settings_for,
)
from tests.e2e.metrics_helpers import (
    MetricsProcess,
    Tally,
    named,
    rest_serving,
    serving,
    working,
)
from tests.e2e.scale_helpers import BURST, TIERS, tenant_bearer
from tests.metric_samples import attempt_counts, job_counts, key, provider_counts
from tests.processes import run_agentq

ON_A_FREE_PORT = "127.0.0.1:0"
OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
ADMIN = {"X-Admin-API-Key": ADMIN_TOKEN}
ALICE = tenant_bearer("alice")
EXECUTE = "/api/v1/agents/{agent_id}/execute"
CANCEL = "/api/v1/jobs/{job_id}/cancel"
AGENT = {"name": "counted", "role": "You answer briefly."}
# The fake provider's directives (bench/fake_openai.py): an answer, a refusal that is not
# retried, an outage that is retried until the attempts run out, and a slow answer.
ANSWERED = ("first question", "second question", "third question")
REFUSED = "[status=400] a bad request"
UNAVAILABLE = "[status=503] a provider outage"
SLOW = "[delay=60] a slow answer"


@dataclass
class Deployment:
    serve: MetricsProcess
    rest: MetricsProcess
    tally: Tally
    fake: FakeLLMProcess
    settings: Settings


@pytest.fixture
def deployment(scaled_settings: Settings) -> Iterator[Deployment]:
    """The scaled-out processes, each serving metrics on a free port; no worker yet."""
    with ExitStack() as stack:
        fake = stack.enter_context(fake_llm_process(delay_s=0))
        settings = scaled_settings.model_copy(
            update={
                "metrics_addr": ON_A_FREE_PORT,
                "provider": "openai",
                "openai_base_url": fake.base_url,
                "openai_api_key": SecretStr("not-a-real-key"),
                "admin_token": SecretStr(ADMIN_TOKEN),
                "rate_tiers": TIERS,
            }
        )
        serve, grpc_port = stack.enter_context(serving(settings, "--no-rest"))
        rest, url = stack.enter_context(rest_serving(settings, grpc_port))
        tally = Tally(url)
        stack.callback(tally.close)
        yield Deployment(serve, rest, tally, fake, settings)


def _execute(tally: Tally, agent_id: str, prompt: str, headers: dict[str, str] = ALICE) -> str:
    response = tally.call("POST", EXECUTE, headers, json={"prompt": prompt}, agent_id=agent_id)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _pending_gauge(process: MetricsProcess, expected: float) -> None:
    """Wait for the database's count of pending jobs, cached for a few seconds, to read so."""
    deadline = time.monotonic() + 30
    while process.scrape().get(key("agentq_jobs_pending"), 0) != expected:
        assert time.monotonic() < deadline, process.scrape()
        time.sleep(0.5)


def _wait_in_flight(fake: FakeLLMProcess) -> None:
    """Wait for the fake provider to hold a call."""
    deadline = time.monotonic() + 30
    while fake.stats()["in_flight"] < 1:
        assert time.monotonic() < deadline, fake.stats()
        time.sleep(0.05)


def test_each_process_counts_exactly_what_a_scaled_out_flow_did(deployment: Deployment) -> None:
    tally = deployment.tally
    for tenant, limits in (("limited", {"tier": "tiny"}), ("capped", {"max_unfinished_jobs": 0})):
        response = tally.call(
            "PUT", "/admin/tenants/{tenant_id}/limits", ADMIN, limits, tenant_id=tenant
        )
        assert response.status_code == 200, response.text
    created = tally.call("POST", "/api/v1/agents", ALICE, AGENT)
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    # No worker runs yet: these two are cancelled while pending, the third waits.
    for job_id in [_execute(tally, agent_id, "never run") for _ in range(2)]:
        response = tally.call("POST", CANCEL, ALICE, job_id=job_id)
        assert response.json()["status"] == "cancelled", response.text
    waiting = _execute(tally, agent_id, "asked before any worker ran")
    _pending_gauge(deployment.serve, 1)
    limited = [
        tally.call("GET", "/api/v1/agents", tenant_bearer("limited")) for _ in range(BURST + 1)
    ]
    assert [r.status_code for r in limited] == [200] * BURST + [429]
    capped = tally.call("POST", "/api/v1/agents", tenant_bearer("capped"), AGENT)
    assert capped.status_code == 201, capped.text
    refused = tally.call(
        "POST",
        EXECUTE,
        tenant_bearer("capped"),
        {"prompt": "no room"},
        agent_id=capped.json()["id"],
    )
    assert refused.status_code == 429, refused.text

    with working(deployment.settings, processes=2) as workers:
        prompts = (*ANSWERED, REFUSED, UNAVAILABLE)
        job_ids = [waiting, *(_execute(tally, agent_id, prompt) for prompt in prompts)]
        jobs = [tally.wait_status(job_id, ALICE) for job_id in job_ids]
        # Cancelled once its provider call is under way, so that the call is one to count.
        slow = _execute(tally, agent_id, SLOW)
        _wait_in_flight(deployment.fake)
        assert tally.call("POST", CANCEL, ALICE, job_id=slow).status_code == 200
        jobs.append(tally.wait_status(slow, ALICE))
        assert [job["status"] for job in jobs] == ["completed"] * 4 + ["failed"] * 2 + ["cancelled"]
        _pending_gauge(deployment.serve, 0)
        worked = workers.scrape()
    served, rested = deployment.serve.scrape(), deployment.rest.scrape()

    # The shim counted each request the client sent, and nothing else; the server's metrics
    # are not in its process at all.
    assert named(rested, "agentq_") == tally.http_counts()
    assert {name for name, _ in rested if not name.startswith("agentq_http_")} == set()
    # Behind each, the server answered one call, under the code of the shim's status.
    assert named(served, "agentq_grpc_") == tally.grpc_counts()
    assert named(served, "agentq_jobs_", "agentq_refusals", "agentq_agents") == {
        key("agentq_agents_created_total"): 2,
        **job_counts(submitted=9, cancelled=2),
        key("agentq_refusals_total", reason="rate_limit"): 1,
        key("agentq_refusals_total", reason="cap"): 1,
    }
    assert served[key("agentq_jobs_running")] == 0
    # The 503 job ran three attempts, two of them retried; the rest ran one each.
    calls = deployment.fake.stats()["calls"]
    assert calls == 9
    tokens = sum(job["result"]["tokens_used"] for job in jobs if job["result"])
    assert tokens > 0
    assert named(worked, "agentq_jobs_", "agentq_provider", "agentq_job_") == {
        **attempt_counts(completed=4, failed=2, retrying=2, cancelled=1),
        **provider_counts(OPENAI, calls=calls, tokens=tokens, fatal=1, retryable=3),
    }
    assert worked[key("agentq_worker_slots")] == 2 * deployment.settings.worker_concurrency
    for nothing in ("agentq_sweeper_", "agentq_database_errors", "agentq_redis_errors"):
        assert named({**served, **worked}, nothing) == {}


def test_the_embedded_default_serves_every_count_on_one_endpoint(tmp_path: Path) -> None:
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}",
        http_addr="127.0.0.1:0",
        metrics_addr=ON_A_FREE_PORT,
    )
    with serving(settings) as (serve, _):
        found = REST_LISTENING.search(serve.wait_for(REST_LISTENING.pattern))
        assert found is not None
        tally = Tally(f"http://127.0.0.1:{found.group(1)}")
        created = tally.call("POST", "/api/v1/agents", ALICE, AGENT)
        agent_id = created.json()["id"]
        jobs = [tally.wait_status(_execute(tally, agent_id, p), ALICE) for p in ANSWERED]
        assert [job["status"] for job in jobs] == ["completed"] * 3
        assert tally.call("GET", "/health", {}).status_code == 200
        served = serve.scrape()
        tally.close()

    builtin = {"provider": "builtin", "model": "builtin"}
    tokens = sum(job["result"]["tokens_used"] for job in jobs)
    assert named(served, "agentq_http_") == tally.http_counts()
    assert named(served, "agentq_grpc_") == tally.grpc_counts()
    assert named(served, "agentq_jobs_", "agentq_job_", "agentq_provider_") == {
        **job_counts(submitted=3),
        **attempt_counts(completed=3),
        **provider_counts(builtin, calls=3, tokens=tokens),
    }
    assert served[key("agentq_worker_slots")] == settings.worker_concurrency
    assert served[key("agentq_worker_slots_in_use")] == 0


@pytest.mark.parametrize("command", ["serve", "rest", "worker"])
def test_a_metrics_address_in_use_stops_the_command_with_status_2(
    tmp_path: Path, command: str
) -> None:
    # The other addresses are free, and Redis is never reached: the metrics come first.
    free = {f"AGENTQ_{face}_ADDR": f"127.0.0.1:{free_port()}" for face in ("GRPC", "HTTP")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = {"AGENTQ_METRICS_ADDR": f"127.0.0.1:{port}", "VEX_JWT_SECRET": SECRET}
        env = clean_env(**free, **settings, AGENTQ_REDIS_URL="redis://127.0.0.1:1/0")
        refused = run_agentq(command, cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"agentq: cannot listen on 127.0.0.1:{port} (AGENTQ_METRICS_ADDR): address already in use"
    )


@pytest.mark.parametrize("address", ["9464", "localhost", ":9464", "127.0.0.1:http", "h:70000"])
def test_a_malformed_metrics_address_stops_every_command_naming_the_variable(
    tmp_path: Path, address: str
) -> None:
    refused = run_agentq("migrate", cwd=tmp_path, env=clean_env(AGENTQ_METRICS_ADDR=address))

    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "agentq: AGENTQ_METRICS_ADDR must be HOST:PORT (a port of 0 to 65535), "
        "or empty for no metrics"
    )
