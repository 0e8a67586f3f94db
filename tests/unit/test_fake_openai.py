"""The fake OpenAI server: answers, streaming, directives, counters, and its process mode."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_openai import FakeOpenAI
from tests.processes import ChildProcess, popen

ROOT = Path(__file__).resolve().parents[2]


def _body(prompt: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    return {"model": "fake", "messages": messages, **extra}


def _post(fake: FakeOpenAI, prompt: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{fake.base_url}/chat/completions", json=_body(prompt, **extra))


def _events(fake: FakeOpenAI, prompt: str, **extra: Any) -> tuple[httpx.Response, list[str]]:
    """A streamed request's response and the data of each of its SSE events."""
    url = f"{fake.base_url}/chat/completions"
    with httpx.stream("POST", url, json=_body(prompt, stream=True, **extra)) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response, data


def _deltas(data: list[str]) -> list[str]:
    chunks = [json.loads(item) for item in data if item != "[DONE]"]
    return [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]]


def test_a_plain_request_gets_the_echo_and_word_counts_as_usage(fake: FakeOpenAI) -> None:
    response = _post(fake, "hello there")

    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hello there"}
    # Prompt: "Be brief." + "hello there"; completion: "Echo: hello there".
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}


def test_a_streamed_request_gets_the_echo_in_chunks_then_usage_then_done(
    fake: FakeOpenAI,
) -> None:
    response, data = _events(fake, "hello there", stream_options={"include_usage": True})

    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    deltas = _deltas(data)
    assert len(deltas) == 4
    assert all(deltas)
    assert "".join(deltas) == "Echo: hello there"
    assert json.loads(data[-2]) == {
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
    }
    assert data[-1] == "[DONE]"


def test_a_streamed_request_without_include_usage_gets_no_usage_chunk(fake: FakeOpenAI) -> None:
    _, data = _events(fake, "hello there")

    assert len(data) == 5
    assert all("usage" not in item for item in data)
    assert data[-1] == "[DONE]"


def test_a_chunks_directive_sets_the_number_of_deltas_padding_a_short_answer(
    fake: FakeOpenAI,
) -> None:
    _, data = _events(fake, "hi [chunks=40]")

    deltas = _deltas(data)
    assert len(deltas) == 40
    assert all(deltas)
    assert "".join(deltas).startswith("Echo: hi [chunks=40]")


def test_a_status_directive_answers_that_status_with_an_openai_error_body(
    fake: FakeOpenAI,
) -> None:
    plain = _post(fake, "fail [status=503]")
    streamed, _ = _events(fake, "fail [status=429]")

    assert plain.status_code == 503
    assert plain.headers["content-type"] == "application/json"
    assert isinstance(plain.json()["error"]["message"], str)
    assert streamed.status_code == 429


def test_a_delay_directive_holds_the_answer_back(fake: FakeOpenAI) -> None:
    started = time.monotonic()
    response = _post(fake, "slow [delay=0.3]")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_concurrent_requests_are_all_in_flight_at_once_and_counted(fake: FakeOpenAI) -> None:
    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            url = f"{fake.base_url}/chat/completions"
            calls = [client.post(url, json=_body(f"p{i % 5} [delay=2]")) for i in range(50)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(send_all())

    assert {r.status_code for r in responses} == {200}
    stats = fake.stats()
    assert stats["calls"] == 50
    assert stats["peak_in_flight"] == 50
    assert stats["in_flight"] == 0
    assert stats["completed"] == 50
    assert stats["disconnects"] == 0
    assert stats["calls_per_prompt"] == {f"p{i} [delay=2]": 10 for i in range(5)}


def _allow_open_files(count: int) -> None:
    """Raise this process's open-file limit to `count`, or skip when it may not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= count:
        return
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"the open-file limit is {hard}, below the {count} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def test_a_thousand_slow_requests_are_served_at_once(fake: FakeOpenAI) -> None:
    # Each request holds a client and a server socket in this one process.
    _allow_open_files(2500)
    # The delay outlasts any stall of a busy machine: every request is still waiting for
    # its answer when the last one arrives, so the peak proves they are held at once.
    payload = json.dumps(_body("many [delay=60]")).encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (
        len(payload),
        payload,
    )

    async def hold_all() -> None:
        # Plain sockets: the point is the server's cost, not an HTTP client's.
        writers = []
        for connecting in asyncio.as_completed(
            [asyncio.open_connection("127.0.0.1", fake.port) for _ in range(1000)]
        ):
            _, writer = await connecting
            writer.write(request)
            writers.append(writer)
        deadline = time.monotonic() + 60
        while fake.stats()["in_flight"] < 1000 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for writer in writers:
            writer.close()

    asyncio.run(hold_all())

    assert fake.stats()["peak_in_flight"] == 1000
    deadline = time.monotonic() + 60
    while fake.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = fake.stats()
    assert stats["in_flight"] == 0
    assert stats["disconnects"] == 1000
    assert stats["completed"] == 0


def test_a_client_that_gives_up_mid_delay_is_counted_as_a_disconnect_at_once(
    fake: FakeOpenAI,
) -> None:
    async def give_up() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            call = asyncio.create_task(
                client.post(f"{fake.base_url}/chat/completions", json=_body("x [delay=5]"))
            )
            await asyncio.sleep(0.2)
            assert fake.stats()["in_flight"] == 1
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(give_up())

    deadline = time.monotonic() + 0.5
    while fake.stats()["disconnects"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = fake.stats()
    assert stats["disconnects"] == 1
    assert stats["in_flight"] == 0
    assert stats["completed"] == 0


def test_stats_and_reset_over_http_match_the_in_process_counters(fake: FakeOpenAI) -> None:
    root = fake.base_url.removesuffix("/v1")
    _post(fake, "once")

    over_http = httpx.get(f"{root}/stats").json()
    assert over_http == fake.stats()
    assert over_http["calls_per_prompt"] == {"once": 1}

    assert httpx.post(f"{root}/reset").status_code == 200
    assert fake.stats() == {
        "calls": 0,
        "in_flight": 0,
        "peak_in_flight": 0,
        "completed": 0,
        "disconnects": 0,
        "calls_per_prompt": {},
    }


def test_one_connection_carries_several_requests(fake: FakeOpenAI) -> None:
    async def two_on_one_socket() -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        heads = []
        for prompt in ("first", "second"):
            payload = json.dumps(_body(prompt)).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = head.split(b"Content-Length: ")[1].split(b"\r\n")[0]
            await reader.readexactly(int(length))
            heads.append(head)
        writer.close()
        return heads

    heads = asyncio.run(two_on_one_socket())

    assert all(head.startswith(b"HTTP/1.1 200 OK") for head in heads)
    assert fake.stats()["completed"] == 2


def test_the_module_runs_as_a_process_that_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "bench.fake_openai", "--delay", "0", "--chunks", "2"]
    process = ChildProcess(popen(command, cwd=ROOT, merge_stderr=False)).start_reading()
    try:
        line = process.wait_line(timeout_s=30) or ""
        match = re.fullmatch(r"fake-openai listening on port (\d+)\n", line)
        assert match, line
        base = f"http://127.0.0.1:{match.group(1)}"
        body = _body("hi", stream=True)
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
            data = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert len(data) == 3
        assert httpx.get(f"{base}/stats").json()["completed"] == 1

        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(timeout=5) == 0
    finally:
        process.kill()
