"""vex-api's injection screen, rebuilt from its description as the baseline agentq is measured
against (README.md, Prompt guard): its folding, then one case-insensitive regex of two
patterns and 65 plain substrings, with no word boundaries."""

from __future__ import annotations

import re

PATTERNS = [
    r"(ignore|disregard|forget)\s+(all\s+)?previous",
    r"(reveal|show|print|repeat)\s+(your\s+)?(instructions|prompt|rules)",
]

PHRASES = [
    "ignore previous instructions",
    "ignore all previous",
    "disregard previous",
    "forget previous",
    "forget everything",
    "new instructions:",
    "system prompt:",
    "override system",
    "replace system prompt",
    "you are now",
    "pretend you are",
    "act as if",
    "roleplay as",
    "simulate being",
    "imagine you are",
    "from now on you are",
    "your new identity",
    "dan mode",
    "developer mode",
    "god mode",
    "sudo mode",
    "admin mode",
    "unrestricted mode",
    "no restrictions",
    "without limitations",
    "without ethical",
    "without safety",
    "enabled: true",
    "jailbreak",
    "unlock",
    "bypass",
    "disable filter",
    "remove restrictions",
    "break free",
    "escape constraints",
    "override safety",
    "base64:",
    "decode base64",
    "\\x",
    "\\u00",
    "[system]",
    "[/system]",
    "<|im_start|>",
    "<|im_end|>",
    "hypothetically speaking",
    "for educational purposes",
    "in a fictional scenario",
    "for research purposes",
    "just between us",
    "repeat your instructions",
    "show me your prompt",
    "what are your rules",
    "print your system prompt",
    "reveal your instructions",
    "style of a research paper",
    "hypothetical scenario where",
    "ignore safety guidelines",
    "unfiltered response",
    "output raw content",
    "bypass audit chain",
    "disable cryptographic verification",
    "end of conversation",
    "new conversation",
    "reset context",
    "clear memory",
]

# Patterns first: at one position the first alternative that matches wins, as in vex-api's
# regex ("Please ignore previous instructions" reports `ignore previous`).
_INJECTION = re.compile("|".join([*PATTERNS, *(re.escape(p) for p in PHRASES)]), re.IGNORECASE)
_DELETED = dict.fromkeys(map(ord, "\u200b\u200c\u200d\ufeff\u00ad"))
_CYRILLIC = str.maketrans("\u0430\u0435\u043e\u0440\u0441\u0445", "aeopcx")
_FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}


def vex_fold(text: str) -> str:
    """vex-api's steps 1-3: trim, delete zero-width characters, fold look-alikes."""
    return text.strip().translate(_DELETED).translate(_CYRILLIC).translate(_FULLWIDTH)


def vex_match(text: str) -> str | None:
    """The text vex-api reports as the forbidden pattern, or None when it lets `text` pass."""
    found = _INJECTION.search(vex_fold(text))
    return found.group(0) if found else None
