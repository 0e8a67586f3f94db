"""Commands run in a real terminal: stdout on a pseudo-terminal, read as it arrives."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

READ_SIZE = 4096


@dataclass
class TerminalRun:
    """What a command printed to its terminal, piece by piece, and how it ended."""

    chunks: list[tuple[float, str]] = field(default_factory=list)  # (seconds in, text)
    stderr: str = ""
    returncode: int | None = None

    @property
    def stdout(self) -> str:
        """Everything on the terminal, with its line endings as a file would have them."""
        return "".join(text for _, text in self.chunks).replace("\r\n", "\n")

    def first_seen(self, text: str) -> float:
        """Seconds from the start until `text` had appeared on the terminal."""
        shown = ""
        for at, chunk in self.chunks:
            shown += chunk
            if text in shown.replace("\r\n", "\n"):
                return at
        raise AssertionError(f"{text!r} never appeared on the terminal:\n{self.stdout}")


def run_in_terminal(
    command: Sequence[str],
    *,
    env: dict[str, str],
    timeout_s: float = 60,
    on_output: Callable[[str], None] | None = None,
) -> TerminalRun:
    """Run `command` with a pseudo-terminal as stdin and stdout (stderr piped) to its end.

    `on_output` sees all of stdout so far each time more arrives.
    """
    run = TerminalRun()
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        list(command), stdin=secondary, stdout=secondary, stderr=subprocess.PIPE, env=env
    )
    os.close(secondary)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout_s:
            ready, _, _ = select.select([primary], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(primary, READ_SIZE)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            run.chunks.append((time.monotonic() - started, data.decode("utf-8", "replace")))
            if on_output is not None:
                on_output(run.stdout)
        run.returncode = process.wait(timeout=max(1.0, timeout_s - (time.monotonic() - started)))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
        reader.join(timeout=10)
    run.stderr = b"".join(errors).decode("utf-8", "replace")
    return run
