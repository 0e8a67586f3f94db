"""`agentq token`, `migrate`, `worker`, `--version` and `--help` as an operator runs them.

Every test runs `python -m server.cli` in a child process with an environment cleared of
agentq settings and a temporary working directory, so what it sees is what a fresh shell
would see.
"""

from __future__ import annotations

import importlib.metadata
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from pydantic_settings import BaseSettings

from rest_shim.settings import RestSettings
from server.auth.principal import ROLES
from server.settings import Settings
from tests.e2e.cli_helpers import JWT_PATTERN, QUICK_EXIT_S, SECRET, clean_env
from tests.processes import COMMAND_TIMEOUT_S, run_agentq


def _decode(token: str, *, issuer: str = "vex-api") -> dict[str, object]:
    """The claims of a token, verified with the test secret, HS256 only."""
    claims: dict[str, object] = jwt.decode(
        token, SECRET.encode("utf-8"), algorithms=["HS256"], issuer=issuer
    )
    return claims


# --- agentq token -------------------------------------------------------------------------


def test_token_mints_an_hs256_jwt_with_the_requested_claims(tmp_path: Path) -> None:
    minted = run_agentq(
        "token",
        *("--sub", "alice", "--role", "agent", "--tenant", "acme", "--ttl", "120"),
        cwd=tmp_path,
        env=clean_env(VEX_JWT_SECRET=SECRET),
    )

    assert minted.returncode == 0, minted.stderr
    bearer = minted.stdout.strip()
    assert JWT_PATTERN.fullmatch(bearer), minted.stdout
    assert jwt.get_unverified_header(bearer)["alg"] == "HS256"
    claims = _decode(bearer)
    assert claims["sub"] == "alice"
    assert claims["role"] == "agent"
    assert claims["tenant_id"] == "acme"
    assert claims["iss"] == "vex-api"
    assert isinstance(claims["iat"], int)
    assert isinstance(claims["exp"], int)
    assert claims["exp"] - claims["iat"] == 120
    assert abs(claims["iat"] - time.time()) < 60


def test_token_uses_the_configured_issuer(tmp_path: Path) -> None:
    minted = run_agentq(
        "token",
        *("--sub", "alice"),
        cwd=tmp_path,
        env=clean_env(VEX_JWT_SECRET=SECRET, AGENTQ_JWT_ISSUER="custom"),
    )

    assert minted.returncode == 0, minted.stderr
    assert _decode(minted.stdout.strip(), issuer="custom")["iss"] == "custom"


def test_token_without_a_secret_exits_2_and_names_vex_jwt_secret(tmp_path: Path) -> None:
    refused = run_agentq("token", "--sub", "alice", cwd=tmp_path, env=clean_env())

    assert refused.returncode == 2
    assert "VEX_JWT_SECRET" in refused.stderr
    assert refused.stdout == ""
    assert "Traceback" not in refused.stderr


def test_token_with_a_lifetime_of_zero_exits_2_and_names_the_option(tmp_path: Path) -> None:
    refused = run_agentq(
        "token", "--sub", "alice", "--ttl", "0", cwd=tmp_path, env=clean_env(VEX_JWT_SECRET=SECRET)
    )

    assert refused.returncode == 2
    assert "--ttl" in refused.stderr
    assert refused.stdout == ""
    assert "Traceback" not in refused.stderr


# --- agentq migrate -----------------------------------------------------------------------


def _tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_migrate_creates_the_agents_and_jobs_tables_and_can_run_again(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    env = clean_env(AGENTQ_DATABASE_URL=f"sqlite:///{database}")

    first = run_agentq("migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert {"agents", "jobs"} <= _tables(database)

    second = run_agentq("migrate", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert {"agents", "jobs"} <= _tables(database)


# --- agentq worker ------------------------------------------------------------------------


def test_worker_without_a_redis_url_exits_and_says_it_needs_agentq_redis_url(
    tmp_path: Path,
) -> None:
    env = clean_env(VEX_JWT_SECRET=SECRET, AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}")

    refused = run_agentq("worker", cwd=tmp_path, env=env, timeout=QUICK_EXIT_S)

    assert refused.returncode != 0
    assert "AGENTQ_REDIS_URL" in refused.stderr
    assert "Traceback" not in refused.stderr


# --- agentq --version and --help ----------------------------------------------------------


def test_version_prints_the_installed_package_version(tmp_path: Path) -> None:
    shown = run_agentq("--version", cwd=tmp_path, env=clean_env())

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"agentq {importlib.metadata.version('agentq')}\n"


def _setting_names(*classes: type[BaseSettings]) -> set[str]:
    """The environment variable of every field of the settings classes."""
    names = set()
    for settings_class in classes:
        prefix = settings_class.model_config.get("env_prefix", "")
        for name, info in settings_class.model_fields.items():
            alias = info.validation_alias
            names.add(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


ENV_NAME = re.compile(r"\b(?:AGENTQ_[A-Z0-9_]+|VEX_JWT_SECRET)\b")


@pytest.mark.parametrize("command", ["serve", "rest", "worker", "token", "migrate"])
def test_each_command_help_describes_it_and_lists_only_real_environment_variables(
    tmp_path: Path, command: str
) -> None:
    shown = run_agentq(command, "--help", cwd=tmp_path, env=clean_env())

    assert shown.returncode == 0, shown.stderr
    description = shown.stdout.split("\n\n")[1]
    assert not description.lstrip().startswith(("-", "options")), shown.stdout
    epilog = shown.stdout.partition("environment:")[2]
    listed = set(ENV_NAME.findall(epilog))
    assert listed, shown.stdout
    assert listed <= _setting_names(Settings, RestSettings), listed - _setting_names(
        Settings, RestSettings
    )


def test_serve_help_lists_every_setting_and_rest_help_every_shim_setting(tmp_path: Path) -> None:
    serve = run_agentq("serve", "--help", cwd=tmp_path, env=clean_env())
    rest = run_agentq("rest", "--help", cwd=tmp_path, env=clean_env())

    assert _setting_names(Settings) <= set(ENV_NAME.findall(serve.stdout))
    assert _setting_names(RestSettings) <= set(ENV_NAME.findall(rest.stdout))


def test_token_help_offers_every_role(tmp_path: Path) -> None:
    shown = run_agentq("token", "--help", cwd=tmp_path, env=clean_env())

    for role in ROLES:
        assert role in shown.stdout


def test_token_with_an_unknown_role_exits_2_and_names_the_roles(tmp_path: Path) -> None:
    refused = run_agentq(
        "token",
        "--sub",
        "alice",
        "--role",
        "root",
        cwd=tmp_path,
        env=clean_env(VEX_JWT_SECRET=SECRET),
    )

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert all(role in refused.stderr for role in ROLES)


def test_token_without_a_secret_does_not_suggest_a_dev_flag_it_lacks(tmp_path: Path) -> None:
    refused = run_agentq("token", "--sub", "alice", cwd=tmp_path, env=clean_env())

    assert refused.returncode == 2
    assert "--dev" not in refused.stderr


HEAVY_MODULES = ("grpc", "sqlalchemy", "uvicorn", "pydantic", "jwt", "dramatiq", "fastapi")


def test_help_imports_none_of_the_server_libraries(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from server.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(set({HEAVY_MODULES!r}) & set(sys.modules)), file=sys.stderr)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )

    assert "usage: agentq" in shown.stdout
    assert shown.stderr.strip() == "[]"
