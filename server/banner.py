"""What `agentq serve` tells the operator at start: where it listens, and in
development mode, what that mode means and what to run next."""

from __future__ import annotations

import ipaddress
import shutil
import sys
from pathlib import Path

from server import dev_mode
from server.settings import Settings

# Hosts of a listen address that mean every interface of the machine.
_EVERY_INTERFACE = ("", "0.0.0.0", "::")


def interfaces(address: str) -> str:
    """Which interfaces a listen address covers: its host, or "every interface"."""
    host = address.rpartition(":")[0].strip("[]")
    return "every interface" if host in _EVERY_INTERFACE else host


def rest_url(address: str, port: int) -> str:
    """The URL that reaches, from this machine, the REST shim listening on `address`."""
    host = address.rpartition(":")[0].strip("[]")
    if host in _EVERY_INTERFACE:
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def dev_banner(settings: Settings, rest_url: str | None) -> str:
    """Says plainly that this is development mode, what that means, and what to run next.

    Never the secret itself: the banner names the file that holds it.
    """
    lines = ["", "agentq is running in DEVELOPMENT MODE: not for production."]
    if all(_is_loopback(address) for address in (settings.grpc_addr, settings.http_addr)):
        lines.append("  Only this machine can reach it: it listens on 127.0.0.1.")
    else:
        lines.append("  Other machines can reach it: AGENTQ_GRPC_ADDR/AGENTQ_HTTP_ADDR say so.")
    secret_file = None
    if settings.jwt_secret is None:
        secret_file = _shown(dev_mode.secret_file(settings.database_url))
        lines.append(
            f"  JWTs are signed with the secret in {secret_file} (readable by you only), "
            "kept across restarts."
        )
    if settings.admin_token is None:
        lines.append("  The admin API (/admin/...) is off: set AGENTQ_ADMIN_TOKEN to turn it on.")
    lines.append("Next, in another terminal: mint a token for yourself and call the API.")
    if secret_file is not None:
        lines.append(f'  export VEX_JWT_SECRET="$(cat {secret_file})"')
    lines.append(f'  export TOKEN="$({_agentq_command()} token --sub you --role user)"')
    if rest_url is not None:
        lines.append(f'  curl -H "Authorization: Bearer $TOKEN" {rest_url}/api/v1/agents')
    return "\n".join(lines) + "\n"


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is inside it, else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _agentq_command() -> str:
    """How a shell runs this agentq: by name when the PATH finds it, else by its path."""
    installed = Path(sys.executable).parent / "agentq"
    if not installed.exists() or shutil.which("agentq") == str(installed):
        return "agentq"
    return _shown(installed)
