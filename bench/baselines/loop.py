"""The event loop every baseline server runs on: the one `agentq serve` runs on.

agentq runs on uvloop where it is installed; a baseline on asyncio's own loop
would charge agentq less for the libraries it wraps than they cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop where it is installed, else asyncio's, as `agentq serve` chooses."""
    try:
        import uvloop
    except ImportError:  # a platform without uvloop wheels
        return asyncio.new_event_loop
    return uvloop.new_event_loop
