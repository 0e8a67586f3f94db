"""Tokens for the tests of bearer-token verification: claim sets, encoders and the 401s."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest

from server.auth.principal import Principal
from server.auth.tokens import verify_bearer
from server.errors import Unauthenticated

# 64 bytes, so pyjwt signs the HS512 test token with the same secret without warning.
SECRET = "unit-test-secret-long-enough-for-hs256-hs384-and-hs512-signing!!"
ISSUER = "vex-api"
NOW = 1_700_000_000


def make_claims(*, without: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """A valid claim set at NOW, with some claims replaced or removed."""
    claims: dict[str, Any] = {
        "sub": "alice",
        "role": "user",
        "iss": ISSUER,
        "iat": NOW,
        "exp": NOW + 3600,
    }
    claims.update(overrides)
    for name in without:
        del claims[name]
    return claims


def encode(claims: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A token signed by pyjwt, claims exactly as given."""
    return jwt.encode(claims, key=secret.encode("utf-8"), algorithm=algorithm)


def segment(value: object) -> str:
    """One base64url JWT segment holding JSON, unpadded."""
    raw = json.dumps(value).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign_by_hand(claims: dict[str, Any]) -> str:
    """An HS256 token of claims pyjwt refuses to encode (such as a non-string iss)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(claims)}"
    digest = hmac.new(SECRET.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256)
    signature = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
    return f"{signing_input}.{signature}"


def verify(
    token: str, *, audience: str | None = None, max_ttl_s: int | None = None, now: float = NOW
) -> Principal:
    """verify_bearer on a well-formed header carrying this token."""
    return verify_bearer(
        f"Bearer {token}",
        secret=SECRET,
        issuer=ISSUER,
        audience=audience,
        max_ttl_s=max_ttl_s,
        now=now,
    )


def header_rejection(authorization: str | None) -> str:
    """The 401 message verify_bearer gives for this Authorization value."""
    with pytest.raises(Unauthenticated) as caught:
        verify_bearer(authorization, secret=SECRET, issuer=ISSUER, now=NOW)
    return caught.value.message


def rejection(
    token: str, *, audience: str | None = None, max_ttl_s: int | None = None, now: float = NOW
) -> str:
    """The 401 message verify_bearer gives for this token."""
    with pytest.raises(Unauthenticated) as caught:
        verify(token, audience=audience, max_ttl_s=max_ttl_s, now=now)
    return caught.value.message
