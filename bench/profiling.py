"""Sampling profiles of agentq processes with py-spy, and their summaries.

`--profile` attaches `py-spy record --gil` to the server (or the workers) during the
top-concurrency run of each workload. With `--gil` a sample is taken only from the
thread holding the GIL, so the samples show where the process spends its one core of
Python, and samples / (seconds x rate) is how busy the GIL was (summed over the
processes profiled, so two busy worker processes show 200%). Each profile is kept
raw (collapsed stacks, for flamegraph.pl or speedscope) beside a Markdown summary.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RATE_HZ = 100
AGENTQ_CODE = re.compile(r"\((server|rest_shim)/")
_LINE = re.compile(r":\d+\)$")
_PROCESS = re.compile(r'^process \d+:"[^"]*";')


def find_py_spy() -> str | None:
    """py-spy on PATH or beside this Python, pip-installing it there when missing."""
    found = shutil.which("py-spy") or _beside_python("py-spy")
    if found:
        return found
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "py-spy",
        ],
        check=False,
        timeout=600,
    )
    return shutil.which("py-spy") or _beside_python("py-spy")


def _beside_python(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


@dataclass
class ProfileSummary:
    """The figures of one profile that the report shows."""

    label: str
    seconds: float
    samples: int
    gil_busy: float
    agentq_inclusive: list[tuple[str, float]]
    agentq_responsible: list[tuple[str, float]]
    self_by_package: list[tuple[str, float]]
    self_by_frame: list[tuple[str, float]]


@dataclass
class Profiler:
    """Records profiles into `directory` and keeps their summaries."""

    py_spy: str
    directory: Path
    summaries: list[ProfileSummary] = field(default_factory=list)

    @contextlib.contextmanager
    def record(self, label: str, pid: int) -> Iterator[None]:
        """Sample `pid` (and its children) while the block runs."""
        raw = self.directory / f"{label}.txt"
        argv = [self.py_spy, "record", "--pid", str(pid), "--gil", "--subprocesses"]
        argv += ["--rate", str(RATE_HZ), "--format", "raw", "--output", str(raw), "--nonblocking"]
        log = (self.directory / f"{label}.log").open("wb")
        spy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        began = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - began
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            log.close()
        if raw.exists():
            summary = summarize(label, raw.read_text(), seconds=seconds)
            self.summaries.append(summary)
            (self.directory / f"{label}.md").write_text(summary_markdown(summary))


def summarize(label: str, collapsed: str, *, seconds: float, top: int = 12) -> ProfileSummary:
    """Percentages of samples per agentq function, package and leaf frame."""
    inclusive: Counter[str] = Counter()
    responsible: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        # With --subprocesses each stack starts with its process: `process 12:"cmd";`.
        stack = _PROCESS.sub("", stack)
        count = int(count_text)
        total += count
        frames = [_LINE.sub(")", frame) for frame in stack.split(";") if "(" in frame]
        if not frames:
            continue
        for frame in {f for f in frames if AGENTQ_CODE.search(f)}:
            inclusive[frame] += count
        ours = [f for f in frames if AGENTQ_CODE.search(f)]
        responsible[ours[-1] if ours else "(no agentq frame)"] += count
        packages[_package(frames[-1])] += count
        leaves[frames[-1]] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100 * n / total) for name, n in counter.most_common(top)] if total else []

    expected = seconds * RATE_HZ
    return ProfileSummary(
        label=label,
        seconds=seconds,
        samples=total,
        gil_busy=total / expected if expected else 0.0,
        agentq_inclusive=shares(inclusive),
        agentq_responsible=shares(responsible),
        self_by_package=shares(packages),
        self_by_frame=shares(leaves),
    )


def _package(frame: str) -> str:
    path = frame[frame.rfind("(") + 1 :]
    return path.split("/", 1)[0] if "/" in path else path.split(":", 1)[0].rstrip(")")


def summary_markdown(summary: ProfileSummary) -> str:
    """A profile summary as Markdown tables."""
    lines = [
        f"### Profile `{summary.label}`",
        "",
        f"{summary.samples} GIL samples in {summary.seconds:.1f} s at {RATE_HZ} Hz: "
        f"the GIL was held {100 * summary.gil_busy:.0f}% of the time (summed over processes).",
        "",
    ]
    tables = (
        (
            "agentq function (inclusive: it or what it calls holds the GIL)",
            summary.agentq_inclusive,
        ),
        (
            "innermost agentq frame (library time charged to its agentq caller)",
            summary.agentq_responsible,
        ),
        ("package of the running frame (self)", summary.self_by_package),
        ("running frame (self)", summary.self_by_frame),
    )
    for title, rows in tables:
        lines += [f"| {title} | % of samples |", "|---|---:|"]
        lines += [f"| `{name}` | {pct:.1f} |" for name, pct in rows]
        lines.append("")
    return "\n".join(lines)
