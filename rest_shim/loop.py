"""The event loop agentq's processes run on.

It lives with the shim because the shim imports nothing of the server; `agentq
serve` and the benchmark's baselines take it from here so that all run on one loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop where it is installed (it costs less per callback), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without uvloop wheels
        return asyncio.new_event_loop
    return uvloop.new_event_loop
