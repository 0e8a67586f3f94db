"""The prompt guard: screens execute prompts, agent names and roles for injection attempts.

What it answers and when: docs/contract.md §3 and the README's Prompt guard section. Text is
normalised before the rules (`server/injection_rules.py`) read it, so case, compatibility
forms (fullwidth letters, ligatures), look-alike letters, accents, invisible characters and
runs of whitespace change nothing; the error quotes the input as it was sent.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from server.errors import FieldViolation, InvalidArgument, PermissionDenied
from server.injection_rules import compiled, search

# `judge` screens with these rules too; the worker then has a model judge the prompt.
GuardMode = Literal["off", "patterns", "judge"]

FORBIDDEN = "Forbidden pattern detected: "
# Rules span a few words, so only runs of whitespace or invisible characters make a quote
# longer than this; such a quote is shown folded, so an error always fits in a trailer.
MAX_QUOTE_CHARS = 200

# Cyrillic and Greek letters that pass for Latin ones, in lowercase (they are matched after
# casefolding): the six vex-api folds (a e o p c x, U+0430 U+0435 U+043E U+0440 U+0441
# U+0445) and the other common ones; then typographic quotes, read as the ASCII apostrophe.
_LOOKALIKES = str.maketrans(
    "\u0430\u0432\u0435\u0451\u0456\u0457\u0458\u043a\u043c\u043d\u043e\u0440\u0441\u0442"
    "\u0443\u0445\u0455\u04bb\u0501\u051b\u051d\u04cf\u03b1\u03b2\u03b5\u03b9\u03ba\u03bd"
    "\u03bf\u03c1\u03c4\u03c5\u03c7\u2018\u2019\u02bc\u2032",
    "abeeiijkmhopctyxshdqwlabeikvoptux''''",
)


@dataclass(frozen=True)
class Normalised:
    """Text as the rules read it, and where in the original each of its characters came from."""

    text: str
    starts: tuple[int, ...]  # character i of `text` came from original[starts[i]:ends[i]]
    ends: tuple[int, ...]

    def original(self, source: str, start: int, end: int) -> str:
        """The part of `source` that became text[start:end]."""
        return source[self.starts[start] : self.ends[end - 1]]


_WHITESPACE = re.compile(r"\s+")


def _ascii_normalised(text: str) -> str:
    """normalise(text).text for ASCII text, where folding is lowercasing: most prompts."""
    return _WHITESPACE.sub(" ", text.lower()).lstrip(" ")


def _clusters(text: str) -> list[tuple[int, int]]:
    """Spans of each character with the combining marks that follow it."""
    spans: list[tuple[int, int]] = []
    for index, char in enumerate(text):
        if spans and unicodedata.combining(char):
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return spans


@functools.lru_cache(maxsize=4096)
def _fold(cluster: str) -> str:
    """One character (with its marks) as the rules read it; "" for an invisible one."""
    if all(unicodedata.category(c) == "Cf" for c in cluster):
        return ""  # zero-width spaces and joiners, soft hyphens, direction marks
    # NFKD folds the compatibility forms NFKC folds (fullwidth, ligatures) and also splits
    # accents off, so that "ïgnore" reads "ignore"; NFKC then recomposes what is left.
    bare = "".join(
        c for c in unicodedata.normalize("NFKD", cluster) if not unicodedata.combining(c)
    )
    folded = unicodedata.normalize("NFKC", bare).casefold().translate(_LOOKALIKES)
    return " " if folded.isspace() else folded


def normalise(text: str) -> Normalised:
    """`text` with case, compatibility forms, look-alikes, accents and spacing folded away."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for start, end in _clusters(text):
        for char in _fold(text[start:end]):
            if char == " " and (not chars or chars[-1] == " "):
                if chars:
                    ends[-1] = end  # a run of whitespace reads as one space
                continue
            chars.append(char)
            starts.append(start)
            ends.append(end)
    return Normalised("".join(chars), tuple(starts), tuple(ends))


def _quote(typed: str, normalised: str) -> str:
    if len(typed) <= MAX_QUOTE_CHARS:
        return typed.strip()
    return normalised[:MAX_QUOTE_CHARS]


def find_injection(text: str) -> str | None:
    """The leftmost injection attempt in `text`, quoted as it was typed; None if there is none."""
    if text.isascii() and search(_ascii_normalised(text)) is None:
        return None  # the common case, without keeping where each character came from
    normalised = normalise(text)
    found = search(normalised.text)
    if found is None:
        return None
    typed = normalised.original(text, found.start(), found.end())
    return _quote(typed, found.group(0))


class PromptGuard:
    """Refuses prompts, agent names and roles that try to inject instructions."""

    def __init__(self, mode: GuardMode = "patterns") -> None:
        self.mode = mode
        if mode != "off":
            compiled()  # at start, not on the first request

    def check_prompt(self, prompt: str) -> None:
        """PERMISSION_DENIED (REST 403 FORBIDDEN) quoting the attempt, as vex-api answers."""
        if self.mode == "off":
            return
        found = find_injection(prompt)
        if found is not None:
            raise PermissionDenied(FORBIDDEN + found)

    def check_agent(self, *, name: str, role: str) -> None:
        """INVALID_ARGUMENT (REST 422) for each of name and role that tries, as vex-api answers."""
        if self.mode == "off":
            return
        violations = [
            FieldViolation(field, f"Invalid {field}: Input contains forbidden pattern: {found}")
            for field, text in (("name", name), ("role", role))
            if (found := find_injection(text)) is not None
        ]
        if violations:
            raise InvalidArgument(violations)
