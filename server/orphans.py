"""A worker's child processes stop when their parent dies, even by SIGKILL.

On Linux the kernel sends the child SIGTERM when its parent exits (PR_SET_PDEATHSIG);
elsewhere, and as a backstop, a thread notices that the parent process is gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# How often the backstop thread looks at its parent.
_WATCH_INTERVAL_S = 1.0


def parent_gone(parent_pid: int) -> bool:
    """True once the process that started this one has exited (we were re-parented)."""
    return os.getppid() != parent_pid


def stop_with_parent(parent_pid: int, stop: threading.Event) -> None:
    """Set `stop` when the parent process dies; at once if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("could not ask to be signalled when the parent dies; polling instead")

    def watch() -> None:
        while not stop.wait(_WATCH_INTERVAL_S):
            if parent_gone(parent_pid):
                log.warning("parent process %d is gone; stopping", parent_pid)
                stop.set()

    # The parent may have died before the death signal was asked for.
    if parent_gone(parent_pid):
        stop.set()
    threading.Thread(target=watch, name="agentq-parent-watch", daemon=True).start()
