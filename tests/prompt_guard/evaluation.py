"""The evaluation set (README.md beside this file) and how a guard is scored on it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent

# A guard: the text it refuses a prompt for, or None when it lets the prompt pass.
Guard = Callable[[str], str | None]


@dataclass(frozen=True)
class InjectionRecord:
    """One attack of the set: where it comes from, and how it was disguised."""

    source: str
    variant: str  # "original", or the obfuscation applied to it
    text: str


@cache
def benign_prompts() -> tuple[str, ...]:
    """Ordinary work, one prompt a line of benign.txt."""
    lines = (HERE / "benign.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line for line in lines if line.strip())


@cache
def injection_records() -> tuple[InjectionRecord, ...]:
    """The attacks of injections.jsonl, originals first."""
    lines = (HERE / "injections.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(InjectionRecord(**json.loads(line)) for line in lines if line)


@dataclass(frozen=True)
class Score:
    """How many of the attacks a guard caught, and how many ordinary prompts it refused."""

    caught: int
    attacks: int
    refused: int
    benign: int

    @property
    def recall(self) -> float:
        return self.caught / self.attacks

    @property
    def false_positive_rate(self) -> float:
        return self.refused / self.benign


def score(guard: Guard, *, variant: str | None = None) -> Score:
    """`guard` on the whole set, or on the attacks of one variant (with all benign prompts)."""
    attacks = [r.text for r in injection_records() if variant in (None, r.variant)]
    benign = benign_prompts()
    return Score(
        caught=sum(guard(text) is not None for text in attacks),
        attacks=len(attacks),
        refused=sum(guard(text) is not None for text in benign),
        benign=len(benign),
    )
