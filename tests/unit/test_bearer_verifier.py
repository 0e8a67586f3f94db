"""BearerVerifier: verify_bearer's answers, with tokens that passed remembered."""

from __future__ import annotations

from typing import Any

import pytest

from server.auth import tokens as auth_tokens
from server.auth.principal import Principal
from server.auth.tokens import BearerVerifier, verify_bearer
from server.errors import Unauthenticated
from tests.unit.jwt_tokens import ISSUER, NOW, SECRET, encode, make_claims


def _token(**overrides: Any) -> str:
    return encode(make_claims(**overrides))


def _verifier(capacity: int = 4096) -> BearerVerifier:
    return BearerVerifier(secret=SECRET, issuer=ISSUER, audience=None, capacity=capacity)


def _rejection(verifier: BearerVerifier, authorization: str | None, now: float = NOW) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(authorization, now=now)
    return caught.value.message


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every signature check made from now on."""
    checked: list[str] = []
    real = auth_tokens._verified_payload

    def counting(token: str, secret: str) -> dict[str, Any]:
        checked.append(token)
        return real(token, secret)

    monkeypatch.setattr(auth_tokens, "_verified_payload", counting)
    return checked


def test_a_token_is_verified_once_and_then_answered_from_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked = _count_decodes(monkeypatch)
    verifier, token = _verifier(), _token(tenant_id="acme")

    first = verifier.verify(f"Bearer {token}", now=NOW)
    second = verifier.verify(f"Bearer {token}", now=NOW + 10)

    assert first == second == Principal(subject="alice", role="user", tenant_id="acme")
    assert checked == [token]


def test_a_remembered_token_still_expires_with_the_same_message() -> None:
    verifier, token = _verifier(), _token()
    verifier.verify(f"Bearer {token}", now=NOW)

    # exp + 60 s of leeway is the first second it is refused.
    assert _rejection(verifier, f"Bearer {token}", now=NOW + 3600 + 60) == "Token expired"
    assert _rejection(verifier, f"Bearer {token}", now=NOW + 3600 + 60) == "Token expired"


def test_a_token_used_before_its_nbf_is_not_remembered_as_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked = _count_decodes(monkeypatch)
    verifier, token = _verifier(), _token(nbf=NOW + 600)

    assert _rejection(verifier, f"Bearer {token}") == "Token expired"
    assert _rejection(verifier, f"Bearer {token}") == "Token expired"
    assert verifier.verify(f"Bearer {token}", now=NOW + 600).subject == "alice"
    assert checked == [token] * 3


def test_a_remembered_token_is_refused_when_the_clock_goes_back_before_its_nbf() -> None:
    verifier, token = _verifier(), _token(nbf=NOW)
    verifier.verify(f"Bearer {token}", now=NOW)

    assert _rejection(verifier, f"Bearer {token}", now=NOW - 61) == "Token expired"
    assert verifier.verify(f"Bearer {token}", now=NOW).subject == "alice"


def test_the_maximum_lifetime_applies_to_tokens_checked_by_the_verifier() -> None:
    verifier = BearerVerifier(secret=SECRET, issuer=ISSUER, audience=None, max_ttl_s=600)
    message = _rejection(verifier, f"Bearer {_token()}")
    assert message == "Token validation failed: MissingClaim(exp)"
    assert verifier.verify(f"Bearer {_token(exp=NOW + 600)}", now=NOW).subject == "alice"


def test_a_refused_token_is_checked_again_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = _count_decodes(monkeypatch)
    verifier = _verifier()
    forged = _token()[:-4] + "AAAA"

    messages = [_rejection(verifier, f"Bearer {forged}") for _ in range(2)]

    assert messages == ["Token validation failed: InvalidSignature"] * 2
    assert len(checked) == 2


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic abc", "Bearer", "Bearer not.a.token", f"Bearer {_token(iss='other')}"],
)
def test_refusals_are_those_of_verify_bearer(authorization: str | None) -> None:
    with pytest.raises(Unauthenticated) as expected:
        verify_bearer(authorization, secret=SECRET, issuer=ISSUER, now=NOW)

    assert _rejection(_verifier(), authorization) == expected.value.message


def test_the_oldest_token_is_forgotten_when_memory_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked = _count_decodes(monkeypatch)
    verifier = _verifier(capacity=2)
    tokens = [_token(sub=name) for name in ("a", "b", "c")]
    for token in tokens:
        verifier.verify(f"Bearer {token}", now=NOW)

    verifier.verify(f"Bearer {tokens[2]}", now=NOW)  # remembered
    verifier.verify(f"Bearer {tokens[0]}", now=NOW)  # forgotten: checked again

    assert checked == [*tokens, tokens[0]]
