"""Bearer tokens' header, shape, algorithm and signature: the texts of docs/contract.md §1."""

from __future__ import annotations

import base64

import pytest

from server.auth.principal import Principal
from server.auth.tokens import verify_bearer
from tests.unit.jwt_tokens import (
    ISSUER,
    NOW,
    SECRET,
    encode,
    header_rejection,
    make_claims,
    rejection,
    segment,
)

# --- the Authorization header ---------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, ""])
def test_a_request_without_an_authorization_header_is_told_it_is_missing(
    authorization: str | None,
) -> None:
    assert header_rejection(authorization) == "Missing Authorization header"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_accepted_in_any_letter_case(scheme: str) -> None:
    principal = verify_bearer(
        f"{scheme} {encode(make_claims())}", secret=SECRET, issuer=ISSUER, now=NOW
    )
    assert principal == Principal(subject="alice", role="user", tenant_id="alice")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic x",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer  token",
        "Bearer\ttoken",
        "Token abc.def.ghi",
        "   ",
    ],
)
def test_a_header_that_is_not_bearer_and_one_token_is_an_invalid_format(
    authorization: str,
) -> None:
    assert header_rejection(authorization) == "Invalid Authorization header format"


# --- the token's shape ----------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "abc.def",
        "a.b.c.d",
        "nodots",
        ".def.ghi",
        "abc..ghi",
        "abc.def.ghi",
        "!!!.###.$$$",
    ],
)
def test_a_token_that_is_not_three_decodable_parts_is_an_invalid_token(token: str) -> None:
    assert rejection(token) == "Invalid token"


def test_a_header_part_that_is_json_but_not_an_object_is_an_invalid_token() -> None:
    token = f"{segment(['HS256'])}.{segment(make_claims())}.c2ln"
    assert rejection(token) == "Invalid token"


def test_a_payload_part_that_is_not_json_is_an_invalid_token_even_when_unsigned() -> None:
    # Format is checked before the algorithm, so the broken payload is what is reported.
    not_json = base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode("ascii")
    token = f"{segment({'alg': 'none'})}.{not_json}."
    assert rejection(token) == "Invalid token"


def test_an_hs256_token_with_an_empty_signature_part_is_an_invalid_token() -> None:
    token = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(make_claims())}."
    assert rejection(token) == "Invalid token"


# --- algorithm and signature ----------------------------------------------------------


def test_an_unsigned_alg_none_token_is_rejected_as_invalid_algorithm() -> None:
    token = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(make_claims())}."
    assert rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_a_token_whose_header_names_no_algorithm_is_rejected_as_invalid_algorithm() -> None:
    token = f"{segment({'typ': 'JWT'})}.{segment(make_claims())}.c2ln"
    assert rejection(token) == "Token validation failed: InvalidAlgorithm"


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_a_token_signed_with_the_right_secret_but_another_hmac_is_invalid_algorithm(
    algorithm: str,
) -> None:
    token = encode(make_claims(), algorithm=algorithm)
    assert rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_a_token_claiming_rs256_is_rejected_as_invalid_algorithm() -> None:
    token = f"{segment({'alg': 'RS256', 'typ': 'JWT'})}.{segment(make_claims())}.c2lnbmF0dXJl"
    assert rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_the_algorithm_is_reported_before_an_expired_or_badly_issued_token() -> None:
    claims = make_claims(exp=NOW - 3600, iss="someone-else", without=("role",))
    token = f"{segment({'alg': 'none'})}.{segment(claims)}."
    assert rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_a_token_signed_with_another_secret_has_an_invalid_signature() -> None:
    token = encode(make_claims(), secret="another-secret-also-at-least-32-bytes")
    assert rejection(token) == "Token validation failed: InvalidSignature"


def test_a_token_whose_payload_was_altered_after_signing_has_an_invalid_signature() -> None:
    header, _, signature = encode(make_claims()).split(".")
    forged = f"{header}.{segment(make_claims(role='admin'))}.{signature}"
    assert rejection(forged) == "Token validation failed: InvalidSignature"


def test_the_signature_is_reported_before_expiry() -> None:
    token = encode(make_claims(exp=NOW - 3600), secret="another-secret-also-at-least-32-bytes")
    assert rejection(token) == "Token validation failed: InvalidSignature"
