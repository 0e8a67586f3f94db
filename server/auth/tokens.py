"""Bearer-token authentication: verify and mint the HS256 JWTs of docs/contract.md §1.

`verify_bearer` checks, in this order, and reports only the first failure:

1. header format: `Missing Authorization header`, `Invalid Authorization header format`;
2. token format: three dot-separated parts that decode to a JSON header and payload,
   else `Invalid token`. The signature part alone may be empty at this step, so that an
   unsigned (`alg: none`) token is reported by step 3 rather than hidden behind step 2;
3. algorithm: the header's `alg` must be `HS256`, else `InvalidAlgorithm`. Only then is an
   empty signature part a format error (`Invalid token`);
4. signature, by pyjwt with the UTF-8 bytes of the secret: `InvalidSignature`;
5. validity window, with 60 s leeway either side: `Token expired` once `exp` has passed,
   and also before `nbf` (RFC 7519 §4.1.5): outside its window a token cannot be used now;
6. issuer: `InvalidIssuer`;
7. audience: `InvalidAudience` (or `MissingClaim(aud)` when one is configured and absent);
8. claims usable: `MissingClaim(<name>)` for a required claim that is absent or mistyped,
   an optional one (`tenant_id`, `nbf`) that is malformed, an `iat` in the future, an
   `exp - iat` beyond the configured maximum lifetime, and a tenant (`tenant_id`, else
   `sub`) that no tenant column can hold. To the server a claim it cannot use is a claim
   it does not have, and the contract has no other reason for it.

Steps 5 and 6 judge `exp`, `nbf` and `iss` only when present and of the right type; an
absent or mistyped claim is left to step 8, so each claim has one place that reports it.
`aud` is not a required claim, so step 7 judges it whole (absent, mistyped or mismatched).

pyjwt decodes and verifies the signature; the claim checks are made here rather than by
pyjwt's `verify_exp`/`verify_nbf`/`verify_iat` options because pyjwt checks times before
types and required claims in another order than the contract's, reads the wall clock
(callers and tests pass `now`), accepts float, boolean and numeric-string times, and treats
an empty `aud` as absent. pyjwt has no maximum lifetime option.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any, TypeGuard

import jwt

from server.auth.principal import Principal, is_non_empty_str, is_tenant_id
from server.errors import Unauthenticated

ALGORITHM = "HS256"
LEEWAY_S = 60

MISSING_HEADER = "Missing Authorization header"
INVALID_HEADER_FORMAT = "Invalid Authorization header format"
INVALID_TOKEN = "Invalid token"
# The private claim that names the API key a token was exchanged for.
API_KEY_CLAIM = "agentq_key_id"
TOKEN_EXPIRED = "Token expired"


def _validation_failed(reason: str) -> Unauthenticated:
    """The catch-all 401 of docs/contract.md §1 with its reason."""
    return Unauthenticated(f"Token validation failed: {reason}")


def _missing_claim(name: str) -> Unauthenticated:
    """The 401 for a required claim that is absent or of the wrong type."""
    return _validation_failed(f"MissingClaim({name})")


def _is_int(value: object) -> TypeGuard[int]:
    """True for a JSON integer; bool is an int subclass in Python but not a JWT time."""
    return isinstance(value, int) and not isinstance(value, bool)


def _bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value, or the format 401."""
    if not authorization:
        raise Unauthenticated(MISSING_HEADER)
    parts = authorization.split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise Unauthenticated(INVALID_HEADER_FORMAT)
    return parts[1]


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a token whose header and payload decode, else `Invalid token`."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise Unauthenticated(INVALID_TOKEN)
    try:
        decoded = jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(INVALID_TOKEN) from exc
    header: dict[str, Any] = decoded["header"]
    return header


def _verified_payload(token: str, secret: str) -> dict[str, Any]:
    """The payload of an HS256 token whose signature matches the secret."""
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key=secret.encode("utf-8"),
            algorithms=[ALGORITHM],
            # pyjwt's claim checks are all off: _check_claims makes them, in order.
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise _validation_failed("InvalidSignature") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise _validation_failed("InvalidAlgorithm") from exc
    except jwt.InvalidTokenError as exc:
        # The format step already decoded the token, so this is a defensive net only.
        # jwt.InvalidKeyError (a bad server secret) is deliberately not caught: it is
        # the server's fault and must surface as an internal error, not a 401.
        raise Unauthenticated(INVALID_TOKEN) from exc
    return payload


def _check_audience(payload: dict[str, Any], audience: str | None) -> None:
    """Reject `aud` unless an audience is configured, then require it to match (RFC 7519)."""
    if "aud" not in payload:
        if audience is not None:
            raise _missing_claim("aud")
        return
    aud = payload["aud"]
    if audience is None:
        raise _validation_failed("InvalidAudience")
    if isinstance(aud, str):
        matches = aud == audience
    elif isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        matches = audience in aud
    else:
        matches = False
    if not matches:
        raise _validation_failed("InvalidAudience")


def _check_required_claims(payload: dict[str, Any], *, max_ttl_s: int | None, now: float) -> None:
    """Every claim present, well typed and usable, in a fixed order (module docstring, step 8).

    An absent claim and a claim of the wrong type (a float `exp`, a string `iat`, an empty
    `sub`) both answer `MissingClaim(<name>)`: the contract has no separate reason for a bad
    type, and to the server a claim it cannot use is a claim it does not have.
    """
    checks = (
        ("sub", is_non_empty_str),
        ("exp", _is_int),
        ("iat", _is_int),
        ("iss", lambda value: isinstance(value, str)),
        ("role", lambda value: isinstance(value, str)),
    )
    for name, is_valid in checks:
        if name not in payload or not is_valid(payload[name]):
            raise _missing_claim(name)
    if "nbf" in payload and not _is_int(payload["nbf"]):
        raise _missing_claim("nbf")
    # A token cannot have been issued in the future; beyond the leeway, its issuer's clock
    # or the token is wrong, and its lifetime cannot be judged.
    if payload["iat"] > now + LEEWAY_S:
        raise _missing_claim("iat")
    if max_ttl_s is not None and payload["exp"] - payload["iat"] > max_ttl_s:
        raise _missing_claim("exp")
    # tenant_id is optional, but once present it must be usable: a malformed tenant must
    # never fall back to `sub` silently, or a caller could land in another tenant. Either
    # one, as the tenant, must fit the tenant columns.
    if not is_tenant_id(payload.get("tenant_id", payload["sub"])):
        raise _missing_claim("tenant_id")


def _validity(payload: dict[str, Any]) -> tuple[float, float]:
    """The first and last second a token may be used, leeway included; open ends unbounded."""
    exp, nbf = payload.get("exp"), payload.get("nbf")
    not_before = nbf - LEEWAY_S if _is_int(nbf) else -math.inf
    # exp + leeway is the first second refused, so the last one allowed is just before it.
    not_after = exp + LEEWAY_S if _is_int(exp) else math.inf
    return not_before, not_after


def _in_window(window: tuple[float, float], now: float) -> bool:
    """Whether `now` falls in a token's validity window (see `_validity`)."""
    not_before, not_after = window
    return not_before <= now < not_after


def _check_claims(
    payload: dict[str, Any],
    *,
    issuer: str,
    audience: str | None,
    max_ttl_s: int | None,
    now: float,
) -> None:
    """Validity window, issuer, audience, then every claim (module docstring, steps 5-8)."""
    if not _in_window(_validity(payload), now):
        raise Unauthenticated(TOKEN_EXPIRED)
    iss = payload.get("iss")
    if isinstance(iss, str) and iss != issuer:
        raise _validation_failed("InvalidIssuer")
    _check_audience(payload, audience)
    _check_required_claims(payload, max_ttl_s=max_ttl_s, now=now)


def verify_bearer(
    authorization: str | None,
    *,
    secret: str,
    issuer: str,
    audience: str | None = None,
    max_ttl_s: int | None = None,
    now: float | None = None,
) -> Principal:
    """Checks an `Authorization` header value; raises Unauthenticated with the contract's text.

    `max_ttl_s`, when set, is the longest `exp - iat` accepted.
    """
    principal, _ = _verify(
        authorization,
        secret=secret,
        issuer=issuer,
        audience=audience,
        max_ttl_s=max_ttl_s,
        now=time.time() if now is None else now,
    )
    return principal


def _verify(
    authorization: str | None,
    *,
    secret: str,
    issuer: str,
    audience: str | None,
    max_ttl_s: int | None,
    now: float,
) -> tuple[Principal, tuple[float, float]]:
    """The principal of a bearer token, and the window in which the token may be used."""
    token = _bearer_token(authorization)
    header = _unverified_header(token)
    if header.get("alg") != ALGORITHM:
        raise _validation_failed("InvalidAlgorithm")
    if not token.rsplit(".", 1)[1]:
        raise Unauthenticated(INVALID_TOKEN)
    payload = _verified_payload(token, secret)
    _check_claims(payload, issuer=issuer, audience=audience, max_ttl_s=max_ttl_s, now=now)
    principal = Principal(
        subject=payload["sub"],
        role=payload["role"],
        tenant_id=payload.get("tenant_id", payload["sub"]),
        scopes=_scopes(payload),
        api_key_id=_api_key_id(payload),
    )
    return principal, _validity(payload)


class BearerVerifier:
    """`verify_bearer` for one secret, remembering the tokens that passed.

    A client sends the same token with every call, and decoding it and checking
    its signature costs more than the rest of a cheap call. A token that passed
    every check is remembered with its principal and its validity window (`nbf`
    to `exp`); later calls re-check only the window, as the other checks do not
    change with the time. Outside it the token is checked in full again, so the
    answer is `verify_bearer`'s. Failures are not remembered, so each is reported
    as `verify_bearer` reports it.
    """

    def __init__(
        self,
        *,
        secret: str,
        issuer: str,
        audience: str | None,
        max_ttl_s: int | None = None,
        capacity: int = 4096,
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._max_ttl_s = max_ttl_s
        self._capacity = capacity
        self._passed: dict[str, tuple[Principal, tuple[float, float]]] = {}

    def verify(self, authorization: str | None, *, now: float | None = None) -> Principal:
        """The caller of an `Authorization` header value; raises like `verify_bearer`."""
        if not authorization:
            raise Unauthenticated(MISSING_HEADER)
        at = time.time() if now is None else now
        remembered = self._passed.get(authorization)
        if remembered is not None:
            principal, window = remembered
            if _in_window(window, at):
                return principal
            self._passed.pop(authorization, None)
        principal, window = _verify(
            authorization,
            secret=self._secret,
            issuer=self._issuer,
            audience=self._audience,
            max_ttl_s=self._max_ttl_s,
            now=at,
        )
        if len(self._passed) >= self._capacity:
            # Dicts keep insertion order: the oldest token makes room.
            self._passed.pop(next(iter(self._passed)), None)
        self._passed[authorization] = (principal, window)
        return principal


def _scopes(payload: dict[str, Any]) -> frozenset[str] | None:
    # A token exchanged for an API key keeps the key's scopes; a malformed
    # list must not widen into "no scopes claim" (role only).
    if "scopes" not in payload:
        return None
    scopes = payload["scopes"]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise _missing_claim("scopes")
    return frozenset(scopes)


def _api_key_id(payload: dict[str, Any]) -> str | None:
    # A token exchanged for an API key names it, so that revoking the key ends it.
    if API_KEY_CLAIM not in payload:
        return None
    key_id = payload[API_KEY_CLAIM]
    if not is_non_empty_str(key_id):
        raise _missing_claim(API_KEY_CLAIM)
    return str(key_id)


def mint_token(
    *,
    secret: str,
    subject: str,
    role: str,
    issuer: str = "vex-api",
    tenant_id: str | None = None,
    lifetime_s: int = 3600,
    audience: str | None = None,
    scopes: Collection[str] | None = None,
    api_key_id: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 JWT with sub, role, iss, iat, exp (integers) and tenant_id/aud/scopes if given."""
    # Refuse to mint what verify_bearer would refuse to accept.
    if not subject:
        raise ValueError("subject must be a non-empty string")
    if not is_tenant_id(subject if tenant_id is None else tenant_id):
        raise ValueError("the tenant (tenant_id, else subject) must be 1 to 255 characters")
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iss": issuer,
        "iat": issued_at,
        "exp": issued_at + lifetime_s,
    }
    if tenant_id is not None:
        claims["tenant_id"] = tenant_id
    if audience is not None:
        claims["aud"] = audience
    if scopes is not None:
        claims["scopes"] = sorted(scopes)
    if api_key_id is not None:
        claims[API_KEY_CLAIM] = api_key_id
    return jwt.encode(claims, key=secret.encode("utf-8"), algorithm=ALGORITHM)
