"""Child processes the harness starts: readiness by a printed line, RSS, and a sure stop."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.machine import read_processes

STOP_GRACE_S = 20.0
RSS_SAMPLE_S = 0.5


class ProcessError(RuntimeError):
    """A child exited early or never printed what it should."""


class ManagedProcess:
    """One child in its own process group, its output in log files under `log_dir`."""

    def __init__(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # Its own group, so stopping it also stops whatever it spawned.
                start_new_session=True,
                # The checkout, so `python -m bench.baselines...` finds its package.
                cwd=Path(__file__).resolve().parent.parent,
            )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._popen.pid

    def output(self) -> str:
        """Everything the child printed so far, stdout then stderr."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def wait_for(self, pattern: str, *, count: int = 1, timeout_s: float = 60.0) -> list[str]:
        """Wait until the output matches `pattern` `count` times; return the matches' groups."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            found = regex.findall(self.output())
            if len(found) >= count:
                return [str(item) for item in found]
            if self._popen.poll() is not None:
                raise ProcessError(
                    f"{self.name} exited ({self._popen.returncode}):\n{self._tail()}"
                )
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name} printed no {pattern!r} in {timeout_s:g}s")
            time.sleep(0.05)

    def wait_for_port(self, pattern: str, *, timeout_s: float = 60.0) -> int:
        """The port in the first line matching `pattern` (one group: the port number)."""
        return int(self.wait_for(pattern, timeout_s=timeout_s)[0])

    def rss_bytes(self) -> int:
        """Resident memory of the child itself (not its children), from /proc."""
        rss = _rss_bytes(self.pid)
        if rss is None:
            raise ProcessError(f"no VmRSS for {self.name}")
        return rss

    def pause(self) -> None:
        """SIGSTOP the child's group: it keeps its memory and connections but runs nothing."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the child's group after `pause`."""
        self._signal_group(signal.SIGCONT)

    def stop(self, *, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the group, then SIGKILL it if the child is still there after `grace_s`."""
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            # A paused group would not act on the SIGTERM until continued.
            self._signal_group(signal.SIGCONT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=grace_s)
        # Whatever the leader left behind in its group goes too.
        self._signal_group(signal.SIGKILL)
        if self._popen.poll() is None:
            self._popen.wait(timeout=10)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class ProcessSet:
    """Every process started in a run, so a failure anywhere still stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[ManagedProcess] = []

    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str]) -> ManagedProcess:
        """Start a child; its name must be unique in this run (it names the log files)."""
        process = ManagedProcess(name, argv, env=env, log_dir=self.log_dir)
        self._running.append(process)
        return process

    def roots(self) -> dict[int, str]:
        """pid -> name of every child still running."""
        return {process.pid: process.name for process in self._running}

    def stop(self, process: ManagedProcess) -> None:
        """Stop one child and forget it."""
        process.stop()
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        while self._running:
            self.stop(self._running[-1])


def _rss_bytes(pid: int) -> int | None:
    """VmRSS of one process, or None once it is gone (or a zombie, which has none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _name, _ticks) in read_processes().items():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return sorted(tree)


class RssSampler:
    """The resident memory of a process and its descendants, every `interval_s`.

    `start()` takes the first sample at once (the "before" of each process); a thread
    takes the next ones until `stop()`, which takes a last one. A process that appears
    later has its first sample as its "before".
    """

    def __init__(self, root: int, *, interval_s: float = RSS_SAMPLE_S) -> None:
        self.root = root
        self.interval_s = interval_s
        self.before: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        """Sample now, then keep sampling in the background."""
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take a last sample."""
        self._stopped.set()
        self._thread.join(timeout=10)
        self.sample()

    def sample(self) -> None:
        """Read every process of the tree once."""
        for pid in process_tree(self.root):
            rss = _rss_bytes(pid)
            if rss is None:
                continue
            self.before.setdefault(pid, rss)
            self.peak[pid] = max(self.peak.get(pid, 0), rss)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.sample()
