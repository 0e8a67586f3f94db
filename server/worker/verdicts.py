"""Reading what the critic, the judge and the safety judge answer: strictly, never guessing.

- A critique is immaterial only when the whole answer is `NO MATERIAL ISSUES` (case,
  surrounding white space and one final full stop aside). Anything else counts as a
  material critique, so a critic that rambles costs a round rather than ending the
  debate on a misreading.
- A verdict is one JSON object, alone (a single Markdown code fence around it is
  allowed), with exactly the keys `confidence` (a number from 0 to 1, not a boolean) and
  `evidence` (a non-empty string). The safety judge's is the same with `allow` (a
  boolean) and `reason` (a non-empty string). Anything else is unreadable, with a reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from server.worker.prompts import NOTHING_MATERIAL

_FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*)\n[ \t]*```", re.DOTALL)


class Unreadable(Exception):
    """An answer that is not in the form asked for; the message says how."""


@dataclass(frozen=True)
class Verdict:
    """A judge's verdict on an answer."""

    confidence: float
    evidence: str


@dataclass(frozen=True)
class SafetyVerdict:
    """The safety judge's decision on a prompt."""

    allow: bool
    reason: str


def is_material(critique: str) -> bool:
    """Whether the critic found something material (anything but the sentinel)."""
    said = critique.strip().removesuffix(".").strip()
    return said.upper() != NOTHING_MATERIAL


def read_verdict(text: str) -> Verdict:
    """The judge's verdict, or Unreadable."""
    found = _object(text, keys=("confidence", "evidence"))
    confidence = found["confidence"]
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0 <= confidence <= 1
    ):
        raise Unreadable("confidence is not a number from 0 to 1")
    return Verdict(float(confidence), _text(found, "evidence"))


def read_safety(text: str) -> SafetyVerdict:
    """The safety judge's decision, or Unreadable."""
    found = _object(text, keys=("allow", "reason"))
    if not isinstance(found["allow"], bool):
        raise Unreadable("allow is not true or false")
    return SafetyVerdict(found["allow"], _text(found, "reason"))


def _text(found: dict[str, Any], key: str) -> str:
    value = found[key]
    if not isinstance(value, str) or not value.strip():
        raise Unreadable(f"{key} is not a non-empty string")
    return value.strip()


def _object(text: str, *, keys: tuple[str, ...]) -> dict[str, Any]:
    """The one JSON object `text` is, with exactly `keys`."""
    body = text.strip()
    fenced = _FENCED.fullmatch(body)
    if fenced is not None:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body, object_pairs_hook=_no_repeats, parse_constant=_no_constant)
    except ValueError as exc:
        raise Unreadable(f"it is not JSON ({_first_line(exc)})") from None
    if not isinstance(value, dict):
        raise Unreadable("it is not a JSON object")
    if set(value) != set(keys):
        raise Unreadable(f"it has the keys {sorted(value)} instead of {list(keys)}")
    return value


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key is repeated")
    return found


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, though Python's parser takes them by default.
    raise ValueError(f"{name} is not a JSON number")


def _first_line(error: ValueError) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
