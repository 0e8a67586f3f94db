"""The web console in a real browser, against a real server: sign in, create an agent, run
an execution and watch it complete live, and see nothing of another tenant.

Each test saves screenshots under build/console/. `UPDATE_CONSOLE_SCREENSHOT=1` also
copies the overview to docs/console.png, the picture in README.md (Console).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.access_helpers import ALL_SCOPES, admin_header, with_admin
from tests.e2e.browser import VIEWPORT, Problems, chromium
from tests.e2e.harness import RestThread, ServerThread, running_rest, running_server, token
from tests.e2e.harness import settings_for as base_settings

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "console"
README_SCREENSHOT = ROOT / "docs" / "console.png"
# Generous: the page polls every 2 s, and the machine may be busy.
LIVE_TIMEOUT_MS = 30_000
# Marks the page's window; still set after a step means the step did not reload the page.
MARKER = "window.__agentqConsoleMarker"
# Notes every text the streamed answer shows, however briefly, in window.__agentqStreamed.
WATCH_THE_STREAM = """
window.__agentqStreamed = [];
new MutationObserver(() => {
  const shown = document.querySelector("[data-answer=stream] pre");
  const text = shown ? shown.textContent : "";
  const seen = window.__agentqStreamed;
  if (text && seen[seen.length - 1] !== text) seen.push(text);
}).observe(document.body, { childList: true, subtree: true, characterData: true });
"""
# A browser and a server for some 20 s: a step of its own in scripts/test.sh.
pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The embedded default, whose built-in provider streams each answer over half a second
    and whose two execution slots leave a burst of jobs pending for a while."""
    database = tmp_path_factory.mktemp("console") / "agentq.db"
    settings = base_settings(
        database_url=f"sqlite:///{database}", builtin_latency_ms=500, worker_concurrency=2
    )
    with running_server(with_admin(settings), in_process_workers=True) as started:
        yield started


@pytest.fixture(scope="module")
def shim(server: ServerThread) -> Iterator[RestThread]:
    with running_rest(f"127.0.0.1:{server.port}") as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile per test: its own session storage, no cookies."""
    opened = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    opened.set_default_timeout(LIVE_TIMEOUT_MS)
    try:
        yield opened
    finally:
        opened.close()


def call(shim: RestThread, credential: str, method: str, path: str, **body: Any) -> Any:
    """One REST call as a client would make it; the parsed body of a 2xx answer."""
    headers = {"Authorization": f"Bearer {credential}"}
    response = httpx.request(
        method, shim.url + path, headers=headers, json=body or None, timeout=15
    )
    assert response.is_success, response.text
    return response.json()


def sign_in(page: Page, shim: RestThread, credential: str) -> Problems:
    problems = Problems(page)
    page.goto(shim.url + "/console")
    page.fill("#credential", credential)
    page.click("button:has-text('Sign in')")
    expect(page.locator("header.top")).to_be_visible()
    return problems


def save(page: Page, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=full_page)
    return path


def test_sign_in_create_an_agent_run_it_and_watch_it_complete_live(
    shim: RestThread, context: BrowserContext
) -> None:
    page = context.new_page()
    problems = sign_in(page, shim, token("console-user"))
    page.evaluate(f"{MARKER} = true")

    page.fill("#create-agent [name=name]", "research-bot")
    page.fill("#create-agent [name=role]", "You are a concise research assistant.")
    page.click("#create-agent button")
    agent = page.locator("[data-agent]", has_text="research-bot")
    expect(agent).to_be_visible()
    agent_id = agent.get_attribute("data-agent")
    expect(page.locator("#execute [name=agent]")).to_have_value(agent_id or "")

    page.evaluate(WATCH_THE_STREAM)
    page.fill("#execute [name=prompt]", "Summarize the benefits of queue-based agent execution.")
    page.click("#execute button")

    # The job's page follows it from queued to completed through its event stream.
    page.wait_for_url("**/console#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("section.job [data-status]")).to_have_text("completed")
    answer = call(shim, token("console-user"), "GET", f"/api/v1/jobs/{job_id}")["result"]
    expect(page.locator("[data-answer=result] pre")).to_have_text(answer["response"])
    # Before the result, the answer grew on the page as its tokens arrived.
    streamed: list[str] = page.evaluate("window.__agentqStreamed")
    assert streamed, "no token was shown before the result"
    assert all(answer["response"].startswith(text) for text in streamed), streamed
    events = page.locator(".timeline [data-event]")
    expect(events.first).to_have_attribute("data-event", "queued")
    expect(events.last).to_have_attribute("data-event", "completed")
    for kind in ("started", "token"):
        expect(page.locator(f".timeline [data-event={kind}]")).to_have_count(1)
    save(page, "job")

    # Back on the overview, the jobs list shows it, and then jobs queued by another client.
    page.click("text=← Overview")
    row = page.locator(f"tr[data-job='{job_id}']")
    expect(row.locator("[data-status]")).to_have_text("completed")
    queued = [
        call(shim, token("console-user"), "POST", f"/api/v1/agents/{agent_id}/execute", prompt=p)
        for p in ("What is a queue?", "Name three message brokers.", "What is back-pressure?")
    ]
    for ack in queued:
        done = page.locator(f"tr[data-job='{ack['job_id']}'] [data-status]")
        expect(done).to_have_text("completed")
    assert page.evaluate(MARKER) is True, "the page was reloaded"

    regenerating = bool(os.environ.get("UPDATE_CONSOLE_SCREENSHOT"))
    if regenerating:
        _busy_minute(shim, page, f"/api/v1/agents/{agent_id}/execute")
    overview = save(page, "overview", full_page=False)  # what a screen shows
    if regenerating:
        shutil.copyfile(overview, README_SCREENSHOT)
    assert problems.seen == []


def _busy_minute(shim: RestThread, page: Page, execute: str) -> None:
    """Bursts of jobs, one cancelled, for README.md's picture: the two execution slots
    leave each burst pending a while, and the charts sample every 5 s."""
    credential = token("console-user")
    for burst in range(4):
        acks = [
            call(shim, credential, "POST", execute, prompt=f"Question {burst}.{n}")
            for n in range(6)
        ]
        if burst == 1:
            call(shim, credential, "POST", f"/api/v1/jobs/{acks[-1]['job_id']}/cancel")
        page.wait_for_timeout(5_000)
    page.wait_for_timeout(6_000)


def test_filters_pick_jobs_by_status_and_agent(shim: RestThread, context: BrowserContext) -> None:
    credential = token("console-filters")
    # Markup in a value is shown as text, never made into elements.
    markup = '<img src="x" onerror="window.__agentqInjected = true">You answer.'
    first = call(shim, credential, "POST", "/api/v1/agents", name="first", role=markup)
    second = call(shim, credential, "POST", "/api/v1/agents", name="second", role="You answer.")
    mine = call(shim, credential, "POST", f"/api/v1/agents/{first['id']}/execute", prompt="One?")
    theirs = call(shim, credential, "POST", f"/api/v1/agents/{second['id']}/execute", prompt="Two")
    page = context.new_page()
    problems = sign_in(page, shim, credential)
    for ack in (mine, theirs):
        expect(page.locator(f"tr[data-job='{ack['job_id']}'] [data-status]")).to_have_text(
            "completed"
        )

    expect(page.locator(f"[data-agent='{first['id']}'] .role")).to_have_text(markup)
    expect(page.locator("main img")).to_have_count(0)
    assert page.evaluate("window.__agentqInjected") is None

    page.select_option("select[name=agent_id]", first["id"])
    expect(page.locator("tr[data-job]")).to_have_count(1)
    expect(page.locator(f"tr[data-job='{mine['job_id']}']")).to_be_visible()
    page.select_option("select[name=status]", "failed")
    expect(page.locator("tr[data-job]")).to_have_count(0)
    page.select_option("select[name=status]", "completed")
    expect(page.locator("tr[data-job]")).to_have_count(1)

    page.click("button:has-text('Sign out')")
    expect(page.locator("#credential")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert problems.seen == []


def test_a_jobs_page_shows_each_step_of_a_debate_with_its_timings(
    shim: RestThread, context: BrowserContext
) -> None:
    credential = token("console-steps")
    agent = call(shim, credential, "POST", "/api/v1/agents", name="debater", role="You argue.")
    # "[wrong]" makes the built-in provider's critic object and its judge score the answer
    # low, so the answer is revised (README.md, Adversarial verification).
    ack = call(
        shim,
        credential,
        "POST",
        f"/api/v1/agents/{agent['id']}/execute",
        prompt="Explain [wrong] why queues smooth out load.",
        enable_adversarial=True,
        max_debate_rounds=1,
        enable_self_correction=True,
    )
    page = context.new_page()
    problems = sign_in(page, shim, credential)

    page.goto(f"{shim.url}/console#/jobs/{ack['job_id']}")

    expect(page.locator("section.job [data-status]")).to_have_text("completed")
    steps = page.locator(".timeline [data-event=step] summary")
    expect(steps).to_have_count(6)
    kinds = [text.split(",")[0] for text in steps.all_inner_texts()]
    assert kinds == ["answer", "critique", "defence", "verdict", "revision", "verdict"]
    timings = dict(
        zip(
            page.locator(".timings dt").all_inner_texts(),
            page.locator(".timings dd").all_inner_texts(),
            strict=True,
        )
    )
    assert timings["attempts"] == "1"
    assert all(timings[name] != "—" for name in ("queued", "started", "finished", "ran"))
    assert problems.seen == []


def test_another_tenants_agents_and_jobs_never_appear(
    shim: RestThread, context: BrowserContext
) -> None:
    theirs = call(shim, token("mallory"), "POST", "/api/v1/agents", name="secret", role="Hide.")
    their_path = f"/api/v1/agents/{theirs['id']}/execute"
    their_job = call(shim, token("mallory"), "POST", their_path, prompt="A secret prompt.")
    mine = call(shim, token("console-tenant"), "POST", "/api/v1/agents", name="mine", role="Hi.")
    my_path = f"/api/v1/agents/{mine['id']}/execute"
    my_job = call(shim, token("console-tenant"), "POST", my_path, prompt="A prompt of mine.")
    page = context.new_page()
    problems = sign_in(page, shim, token("console-tenant"))

    expect(page.locator(f"tr[data-job='{my_job['job_id']}']")).to_be_visible()
    expect(page.locator("[data-agent]")).to_have_count(1)
    page.wait_for_timeout(2_500)  # one more refresh of the list
    content = page.content()
    assert their_job["job_id"] not in content
    assert theirs["id"] not in content
    # Their job's page is a 404 for this tenant, as over the API.
    page.goto(f"{shim.url}/console#/jobs/{their_job['job_id']}")
    expect(page.locator("section.job .problem")).to_have_text(
        f"Job {their_job['job_id']} not found"
    )
    assert "secret" not in page.content()
    assert all("status of 404" in problem for problem in problems.seen), problems.seen


def test_an_api_key_is_kept_in_session_storage_only_and_its_revocation_signs_out(
    shim: RestThread, context: BrowserContext
) -> None:
    body = {"tenant_id": "console-keys", "name": "console", "scopes": ALL_SCOPES}
    created = httpx.post(
        shim.url + "/admin/api-keys", json=body, headers=admin_header(), timeout=15
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    agent = call(shim, key, "POST", "/api/v1/agents", name="keyed", role="You answer.")
    page = context.new_page()
    problems = sign_in(page, shim, key)

    expect(page.locator(f"[data-agent='{agent['id']}']")).to_be_visible()
    expect(page.locator("header .who")).to_have_text(f"API key {key[:8]}…")
    stored = page.evaluate("sessionStorage.getItem('agentq.console.credential')")
    assert stored == key
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    assert context.cookies() == []

    # Revoked, the key is refused from the next call on, and the page signs out.
    revoked = httpx.delete(
        f"{shim.url}/admin/api-keys/{created.json()['id']}", headers=admin_header(), timeout=15
    )
    assert revoked.status_code == 204, revoked.text
    expect(page.locator(".signin .problem")).to_have_text(
        "Signed out: the server refused the credential (Invalid API key)."
    )
    assert page.evaluate("sessionStorage.length") == 0
    assert all("status of 401" in problem for problem in problems.seen), problems.seen


def test_a_refused_credential_is_not_kept(shim: RestThread, context: BrowserContext) -> None:
    refused = httpx.get(
        shim.url + "/api/v1/jobs", headers={"Authorization": "Bearer not-a-token"}, timeout=15
    )
    assert refused.status_code == 401
    page = context.new_page()
    problems = Problems(page)
    page.goto(shim.url + "/console")

    page.fill("#credential", "not-a-token")
    page.click("button:has-text('Sign in')")

    expect(page.locator(".signin .problem")).to_have_text(
        f"The server refused it: {refused.json()['error']['message']}"
    )
    assert page.evaluate("sessionStorage.length") == 0
    assert all("status of 401" in problem for problem in problems.seen), problems.seen
