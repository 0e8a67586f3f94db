"""Child processes of the tests: `agentq` commands and fakes, their output read as it comes.

A ChildProcess reads its process's stdout (and stderr, when it is piped apart) in threads
of its own, so the process never blocks on a full pipe and a test can wait for a line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal, Self

Stream = Literal["stdout", "stderr"]
# How long `agentq` commands that run to completion may take.
COMMAND_TIMEOUT_S = 30


def agentq_command(*args: str) -> list[str]:
    """The command line of `agentq ARGS`, run by this interpreter."""
    return [sys.executable, "-m", "server.cli", *args]


def run_agentq(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run one `agentq` command to completion, its output captured."""
    return subprocess.run(
        agentq_command(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    merge_stderr: bool = True,
) -> subprocess.Popen[str]:
    """Start `command` with its stdout piped, and its stderr into stdout or piped apart."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
    )


class ChildProcess:
    """A started process whose output lines are collected in `stdout` and `stderr`."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []  # stays empty when stderr goes into stdout
        self._changed = threading.Condition()
        self._open: set[Stream] = set()
        self._reading = False

    def start_reading(self) -> Self:
        """Start a reader thread per piped stream (once); returns the process."""
        with self._changed:
            if self._reading:
                return self
            self._reading = True
        pipes: list[tuple[Stream, IO[str] | None, list[str]]] = [
            ("stdout", self.process.stdout, self.stdout),
            ("stderr", self.process.stderr, self.stderr),
        ]
        for name, pipe, lines in pipes:
            if pipe is not None:
                self._open.add(name)
                threading.Thread(target=self._read, args=(name, pipe, lines), daemon=True).start()
        return self

    def _read(self, name: Stream, pipe: IO[str], lines: list[str]) -> None:
        for line in pipe:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._open.discard(name)
            self._changed.notify_all()

    def _lines(self, stream: Stream) -> list[str]:
        return self.stdout if stream == "stdout" else self.stderr

    def wait_line(
        self, pattern: str | re.Pattern[str] = "", *, stream: Stream = "stdout", timeout_s: float
    ) -> str | None:
        """The first line of `stream` in which `pattern` is found (by default its first
        line); None when the stream ends, or `timeout_s` passes, without one."""
        found = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._changed:
            while True:
                lines = self._lines(stream)
                for line in lines[seen:]:
                    if found.search(line):
                        return line
                seen = len(lines)
                left = deadline - time.monotonic()
                if stream not in self._open or left <= 0:
                    return None
                self._changed.wait(left)

    def wait_text(self, pattern: re.Pattern[str], *, stream: Stream, timeout_s: float) -> str:
        """All of `stream` so far, once `pattern` is found in it (it may span lines), the
        stream has ended, or `timeout_s` has passed."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                text = "".join(self._lines(stream))
                left = deadline - time.monotonic()
                if pattern.search(text) or stream not in self._open or left <= 0:
                    return text
                self._changed.wait(left)

    @property
    def output(self) -> str:
        """Everything it printed so far, for a failure's message."""
        if self.process.stderr is None:
            return "".join(self.stdout)
        return "stdout:\n" + "".join(self.stdout) + "\nstderr:\n" + "".join(self.stderr)

    def terminate(self) -> None:
        """SIGTERM, without waiting."""
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout_s: float = 30) -> bool:
        """SIGTERM, then SIGKILL if it still runs after `timeout_s`; False if it took that."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a machine dies."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def stop_all(children: Iterable[ChildProcess], timeout_s: float = 30) -> None:
    """SIGTERM to every one at once, then wait for each in turn."""
    children = list(children)
    for child in children:
        child.terminate()
    for child in children:
        child.stop(timeout_s)
