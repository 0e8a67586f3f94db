"""The server's field rules as JSON Schema, so the OpenAPI document states what is accepted.

Only documentation: the server alone judges a request and words its errors. The shim
never imports the server, so the limits are stated here once more; the tests hold each
to the constant the server checks (server/validation.py, server/paging.py,
server/access.py, server/auth.py). A value is documented as valid exactly when the
server accepts it, so generated clients and fuzzers agree with it both ways.
"""

from __future__ import annotations

from typing import Any

from pydantic import WithJsonSchema

# Agents and executions (server/validation.py).
NAME_CHARACTERS = "A-Za-z0-9 _-"
MIN_NAME_CHARS, MAX_NAME_CHARS = 1, 100
MIN_ROLE_CHARS, MAX_ROLE_CHARS = 3, 500
MAX_DEPTH_LIMIT = 10
MIN_PROMPT_CHARS, MAX_PROMPT_CHARS = 1, 50_000
MIN_DEBATE_ROUNDS, MAX_DEBATE_ROUNDS = 1, 10
MAX_REQUEST_KEY_CHARS = 255
CONTEXT_ID_CHARACTERS = "A-Za-z0-9._:-"
MAX_CONTEXT_ID_CHARS = 128
MIN_VERIFICATION_PROMPT_CHARS, MAX_VERIFICATION_PROMPT_CHARS = 1, 2000
# Lists (server/paging.py).
MAX_PAGE_SIZE = 100
# Access control (server/auth/, server/service/access.py, server/ratelimit.py).
MAX_TENANT_CHARS = 255
MAX_KEY_NAME_CHARS = 100
ROLES = ("admin", "user", "agent")
INVALID_ROLE = f"Invalid role: must be one of {', '.join(ROLES)}"
SCOPES = ("agents:read", "agents:write", "jobs:read", "jobs:write", "keys:write")
MAX_LIFETIME_S = 10 * 365 * 86400
DEFAULT_TIERS = ("free", "standard", "unlimited", "starter", "pro")

_NO_NUL = "^[^\\x00]*$"


# The characters str.strip() removes, as \u escapes, which JSON Schema's regexes (those of
# ECMA-262) and Python's read alike; `\s` would not do, as they disagree on some (U+0085,
# U+001C-U+001F). All of them lie in the Basic Multilingual Plane, which keeps this quick.
def _character_class(codes: list[int]) -> str:
    """The inside of a regex character class of `codes`, runs written as ranges."""
    runs: list[list[int]] = []
    for code in codes:
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return "".join(
        f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in runs
    )


WHITE_SPACE = _character_class([code for code in range(0x10000) if chr(code).isspace()])


def trimmed(low: int, high: int, *, characters: str | None = None) -> dict[str, Any]:
    """A string of `low` to `high` characters once white space is trimmed from both ends.

    `characters` (a regex class) limits what the trimmed string holds; else anything but
    NUL, which no database stores.
    """
    inner = f"[{characters}]" if characters else "[^\\x00]"
    edge = f"[{characters.replace(' ', '')}]" if characters else f"[^{WHITE_SPACE}\\x00]"
    if low == 1:
        body = f"{edge}(?:{inner}{{0,{high - 2}}}{edge})?"
    else:
        body = f"{edge}{inner}{{{low - 2},{high - 2}}}{edge}"
    return {"type": "string", "pattern": f"^[{WHITE_SPACE}]*{body}[{WHITE_SPACE}]*$"}


def text(low: int, high: int) -> dict[str, Any]:
    """A string of `low` to `high` characters, none of them NUL, kept as sent."""
    return {"type": "string", "minLength": low, "maxLength": high, "pattern": _NO_NUL}


def tenant_id() -> dict[str, Any]:
    """A tenant's name as stored: 1 to 255 characters, no NUL."""
    return text(1, MAX_TENANT_CHARS)


def uuid() -> dict[str, Any]:
    """A UUID."""
    return {"type": "string", "format": "uuid"}


def scopes() -> dict[str, Any]:
    """A non-empty list of scopes; repeats count once."""
    return {"type": "array", "items": one_of(SCOPES), "minItems": 1}


def request_key() -> dict[str, Any]:
    """An idempotency key: printable ASCII without spaces."""
    return {"type": "string", "pattern": f"^[!-~]{{1,{MAX_REQUEST_KEY_CHARS}}}$"}


def context_id() -> dict[str, Any]:
    """A context's name, kept as sent."""
    pattern = f"^[{CONTEXT_ID_CHARACTERS}]{{1,{MAX_CONTEXT_ID_CHARS}}}$"
    return {"type": "string", "pattern": pattern}


def integer(low: int | None = None, high: int | None = None) -> dict[str, Any]:
    """An integer, within bounds where given."""
    schema: dict[str, Any] = {"type": "integer"}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


def one_of(values: tuple[str, ...]) -> dict[str, Any]:
    """One of a closed set of strings."""
    return {"type": "string", "enum": list(values)}


def documented(schema: dict[str, Any], *, nullable: bool = False) -> WithJsonSchema:
    """The JSON Schema a field or parameter is documented with, in place of its type's."""
    return WithJsonSchema({"anyOf": [schema, {"type": "null"}]} if nullable else schema)
