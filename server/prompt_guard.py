"""The prompt guard: screens execute prompts, agent names and roles for injection attempts.

What it answers and when: docs/contract.md §3 and the README's Prompt guard section. Text is
normalised before the rules (`server/injection_rules.py`) read it, so case, compatibility
forms (fullwidth letters, ligatures), look-alike letters, accents, invisible characters and
runs of whitespace change nothing; the error quotes the input as it was sent.
"""

from __future__ import annotations

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
# U+0445) and 25 other common ones; then typographic quotes, read as the ASCII apostrophe.
# (Accented look-alikes such as \u0451 need no entry: their accents are dropped first.)
_LOOKALIKES = str.maketrans(
    "\u0430\u0432\u0435\u0456\u0458\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445"
    "\u0455\u04bb\u0501\u051b\u051d\u04cf\u03b1\u03b2\u03b5\u03b9\u03ba\u03bd\u03bf\u03c1"
    "\u03c4\u03c5\u03c7\u2018\u2019\u02bc\u2032",
    "abeijkmhopctyxshdqwlabeikvoptux''''",
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


def _fold(char: str) -> str:
    """One character as the rules read it: "" for an invisible one, " " for any space."""
    if unicodedata.category(char) == "Cf":
        return ""  # zero-width spaces and joiners, soft hyphens, direction marks
    # NFKD folds the compatibility forms NFKC folds (fullwidth, ligatures) and also splits
    # accents off, so that "ïgnore" reads "ignore"; a combining mark alone reads as nothing.
    bare = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    folded = unicodedata.normalize("NFKC", bare).casefold().translate(_LOOKALIKES)
    return " " if folded.isspace() else folded


class _Folds(dict[int, str]):
    """Each character's fold, worked out when first met, for `str.translate`."""

    def __missing__(self, code: int) -> str:
        folded = _fold(chr(code))
        if len(self) < _MAX_FOLDS_KEPT:
            self[code] = folded
        return folded


# Enough for every script a deployment meets; a text of rare characters cannot grow it without
# bound.
_MAX_FOLDS_KEPT = 1 << 16
_FOLDS = _Folds()
_SPACES = re.compile(" {2,}")


def _read(text: str) -> str:
    """normalise(text).text, an order of magnitude quicker: `str.translate` folds in C."""
    return _SPACES.sub(" ", text.translate(_FOLDS)).lstrip(" ")


def normalise(text: str) -> Normalised:
    """`text` with case, compatibility forms, look-alikes, accents and spacing folded away."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for index, char in enumerate(text):
        for folded in _FOLDS[ord(char)]:
            if folded == " " and (not chars or chars[-1] == " "):
                if chars:
                    ends[-1] = index + 1  # a run of whitespace reads as one space
                continue
            chars.append(folded)
            starts.append(index)
            ends.append(index + 1)
    return Normalised("".join(chars), tuple(starts), tuple(ends))


def _quote(typed: str, normalised: str) -> str:
    if len(typed) <= MAX_QUOTE_CHARS:
        return typed.strip()
    return normalised[:MAX_QUOTE_CHARS]


def find_injection(text: str) -> str | None:
    """The leftmost injection attempt in `text`, quoted as it was typed; None if there is none."""
    if search(_read(text)) is None:
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
