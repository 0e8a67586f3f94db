"""Where the machine's CPU went while a run was measured.

Each run reports the cores used by each party: the agentq (or baseline) processes the
harness started, PostgreSQL, Redis, the load generator, and `others`, programs outside
the harness altogether. On a shared 2-core machine another program's test suite can
halve a figure, so a disturbed figure shows; and the split shows which process ran out
of CPU first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# Servers the workloads themselves keep busy, by command name.
SERVICES = {"postgres": "postgres", "redis-server": "redis"}
LOAD_TOOLS = frozenset({"h2load", "wrk"})
LOAD_GENERATOR = "load generator"
HARNESS = "harness"
OTHERS = "others"


def read_processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks used) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # After the name: state, ppid, ... utime and stime are the 12th and 13th.
        found[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return found


def _labelled_ticks(roots: Mapping[int, str]) -> dict[int, tuple[str, int]]:
    """pid -> (who, CPU ticks) of every process: a root's label for its whole tree,
    `load generator` or `harness` for the rest of ours, the service, or `others`."""
    processes = read_processes()
    me = os.getpid()

    def owner(pid: int) -> str:
        name = processes[pid][1]
        if name in SERVICES:
            return SERVICES[name]
        seen = 0
        while pid in processes and seen < 64:
            if pid in roots:
                return roots[pid]
            if pid == me:
                return LOAD_GENERATOR if name in LOAD_TOOLS else HARNESS
            pid, seen = processes[pid][0], seen + 1
        return OTHERS

    return {pid: (owner(pid), ticks) for pid, (_, _, ticks) in processes.items()}


@dataclass
class CpuMeter:
    """Started before a run; `split()` after it is the cores each party used meanwhile."""

    _roots: dict[int, str]
    _ticks: dict[int, tuple[str, int]]
    _began: float

    @classmethod
    def start(cls, roots: Mapping[int, str] | None = None) -> CpuMeter:
        """Read every process's CPU time now; `roots` names the harness's children."""
        roots = dict(roots or {})
        return cls(roots, _labelled_ticks(roots), time.monotonic())

    def split(self) -> dict[str, float]:
        """Cores used since start by each party (0.5 = half of one core), busiest first."""
        elapsed = time.monotonic() - self._began
        used: dict[str, float] = {}
        for pid, (who, ticks) in _labelled_ticks(self._roots).items():
            before = self._ticks.get(pid, (who, 0))[1]
            used[who] = used.get(who, 0.0) + (ticks - before) / TICKS_PER_S / max(elapsed, 1e-9)
        return dict(
            sorted(
                ((k, round(v, 3)) for k, v in used.items() if v >= 0.005), key=lambda item: -item[1]
            )
        )

    def share(self) -> float:
        """Cores other programs used since start."""
        return self.split().get(OTHERS, 0.0)


def wait_until_quiet(*, max_wait_s: float, threshold: float = 0.15, window_s: float = 0.5) -> float:
    """Wait up to `max_wait_s` for a moment when other programs use under `threshold` cores.

    Returns the share of the last window looked at (so the caller can tell whether the
    machine did quieten down); returns 0.0 at once when `max_wait_s` is 0.
    """
    deadline = time.monotonic() + max_wait_s
    share = 0.0
    while time.monotonic() < deadline:
        meter = CpuMeter.start()
        time.sleep(window_s)
        share = meter.share()
        if share < threshold:
            break
    return share
