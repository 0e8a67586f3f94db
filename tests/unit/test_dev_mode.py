"""Development mode's settings and keys: loopback by default, one kept secret, no constant key."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from server.bootstrap import api_key_pepper, jwt_secret, page_token_key
from server.settings import Settings

SECRET = "unit-test-secret-that-is-long-enough-0123456789"
PEPPER_LABEL = b"agentq api key pepper"


def _dev_settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings.model_validate(
        {"database_url": f"sqlite:///{tmp_path / 'agentq.db'}", **fields}
    ).in_dev_mode()


@pytest.fixture(autouse=True)
def _no_agentq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTQ_GRPC_ADDR", "AGENTQ_HTTP_ADDR", "AGENTQ_DEV_MODE", "VEX_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_dev_mode_listens_on_loopback_when_no_address_is_set(tmp_path: Path) -> None:
    settings = _dev_settings(tmp_path)

    assert settings.grpc_addr == "127.0.0.1:50051"
    assert settings.http_addr == "127.0.0.1:8080"


def test_dev_mode_keeps_an_address_set_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTQ_GRPC_ADDR", "0.0.0.0:50051")

    settings = _dev_settings(tmp_path)

    assert settings.grpc_addr == "0.0.0.0:50051"
    assert settings.http_addr == "127.0.0.1:8080"


def test_outside_dev_mode_the_addresses_stay_every_interface() -> None:
    settings = Settings()

    assert settings.grpc_addr == "0.0.0.0:50051"
    assert settings.http_addr == "0.0.0.0:8080"


def test_dev_mode_makes_one_private_secret_beside_the_database_and_reuses_it(
    tmp_path: Path,
) -> None:
    first = jwt_secret(_dev_settings(tmp_path))
    again = jwt_secret(_dev_settings(tmp_path))

    kept = tmp_path / "agentq.db.dev-secret"
    assert first == again == kept.read_text().strip()
    assert len(first) >= 32
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["agentq.db.dev-secret"]


def test_dev_mode_derives_the_api_key_pepper_and_page_key_from_its_kept_secret(
    tmp_path: Path,
) -> None:
    settings = _dev_settings(tmp_path)

    pepper = api_key_pepper(settings)

    secret = (tmp_path / "agentq.db.dev-secret").read_text().strip()
    assert pepper == hmac.new(secret.encode(), PEPPER_LABEL, hashlib.sha256).digest()
    assert pepper != hmac.new(b"", PEPPER_LABEL, hashlib.sha256).digest()
    assert page_token_key(settings) is not None


def test_without_any_secret_the_pepper_is_never_a_constant() -> None:
    settings = Settings()

    assert api_key_pepper(settings) != api_key_pepper(settings)
    assert api_key_pepper(settings) != hmac.new(b"", PEPPER_LABEL, hashlib.sha256).digest()


def test_dev_mode_with_vex_jwt_secret_set_signs_with_it_and_writes_no_file(
    tmp_path: Path,
) -> None:
    settings = _dev_settings(tmp_path, jwt_secret=SecretStr(SECRET))

    assert jwt_secret(settings) == SECRET
    assert not list(tmp_path.iterdir())
