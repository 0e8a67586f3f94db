"""GET /api/v1/jobs/{id}/stream: a job's events as Server-Sent Events over WatchJob."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import StreamingResponse

from rest_shim import render
from rest_shim.backend import Backend
from rest_shim.errors import HTTP_STATUS, rpc_error_parts

log = logging.getLogger(__name__)

STREAM_OPEN = ("x-agentq-stream", "open")


def sse(name: str, data: dict[str, Any], *, event_id: int | None = None) -> bytes:
    """One SSE message."""
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {name}", f"data: {json.dumps(data, separators=(',', ':'))}"]
    return ("\n".join(lines) + "\n\n").encode()


async def respond(request: Request, method: Callable[..., Any], message: Any) -> StreamingResponse:
    """Open the watch; once the server has accepted it, its events as an SSE response."""
    backend: Backend = request.app.state.backend
    watch = backend.watch(
        method, message, headers=request.headers, request_id=request.state.request_id
    )
    if not await opened(watch):
        await raise_refusal(watch)  # 401, 404, ...; returns if the stream just ended
    keepalive_s = request.app.state.stream_keepalive_s
    return StreamingResponse(
        events(watch, keepalive_s=keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def opened(call: Any) -> bool:
    """Wait until the server accepted the watch (True) or refused it (False)."""
    metadata = await call.initial_metadata()
    return STREAM_OPEN in list(metadata or ())


async def raise_refusal(call: Any) -> None:
    """Raise the error of a watch the server refused; return if it ended cleanly."""
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(
            code,
            await call.initial_metadata(),
            await call.trailing_metadata(),
            await call.details(),
        )


async def events(call: Any, *, keepalive_s: float) -> AsyncIterator[bytes]:
    """The SSE bytes of an accepted watch: its events, keep-alives, in-band errors."""
    replies = call.__aiter__()
    next_reply: asyncio.Task[Any] | None = None
    try:
        while True:
            next_reply = next_reply or asyncio.ensure_future(replies.__anext__())
            done, _ = await asyncio.wait({next_reply}, timeout=keepalive_s)
            if not done:
                yield b": keep-alive\n\n"
                continue
            reply = next_reply.result()
            next_reply = None
            name, data = render.event(reply.event)
            yield sse(name, data, event_id=reply.event.sequence)
    except StopAsyncIteration:
        return
    except grpc.aio.AioRpcError as error:
        # The stream had opened: report the failure in-band, then end it.
        code, message, _ = rpc_error_parts(error)
        log.warning("event stream ended by %s: %s", error.code().name, error.details())
        yield sse("error", {"code": code, "message": message, "status": HTTP_STATUS[code]})
    except Exception:
        log.exception("event stream failed")
        yield sse(
            "error",
            {"code": "INTERNAL_ERROR", "message": "An internal error occurred", "status": 500},
        )
    finally:
        if next_reply is not None:
            next_reply.cancel()
        call.cancel()
