"""Where a webhook may send (README, Webhooks): the URL's rules and the addresses refused.

A URL is https (http too when private addresses are allowed), at most MAX_URL_CHARS,
with a host. Its host is resolved at creation, at each change of URL and again before
every attempt; an address that is loopback, private, link-local, multicast, reserved,
unspecified or otherwise not globally routable is refused unless private addresses are
allowed, and a cloud metadata address always is. The dispatcher then connects to the
address it checked, so the name cannot resolve elsewhere between check and connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from server.errors import InvalidArgument

MAX_URL_CHARS = 2000
# The instance metadata services of the clouds: never a receiver, whatever is allowed.
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
HTTPS_MESSAGE = f"Invalid url: must be an https URL of at most {MAX_URL_CHARS} characters"
HTTP_MESSAGE = f"Invalid url: must be an http or https URL of at most {MAX_URL_CHARS} characters"
UNRESOLVED_MESSAGE = "Invalid url: its host does not resolve"
REFUSED_MESSAGE = (
    "Invalid url: its host resolves to a refused address "
    "(loopback, private, link-local, multicast, reserved or cloud metadata)"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class RefusedTarget(Exception):
    """The URL may not be sent to; `message` says why, as a 422 would."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Target:
    """A URL checked and resolved: the address to connect to, the URL it stands for."""

    url: SplitResult
    address: IPAddress

    @property
    def host(self) -> str:
        """The URL's host name, for the Host header and TLS's server name."""
        assert self.url.hostname is not None
        return self.url.hostname

    @property
    def connect_url(self) -> str:
        """The URL with the checked address in place of its host."""
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        port = f":{self.url.port}" if self.url.port is not None else ""
        return self.url._replace(netloc=f"{host}{port}").geturl()


def parse_url(url: str, *, allow_private: bool) -> SplitResult:
    """The URL split, if it keeps the rule; else RefusedTarget."""
    schemes = ("http", "https") if allow_private else ("https",)
    message = HTTP_MESSAGE if allow_private else HTTPS_MESSAGE
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range raises here
    except ValueError:
        raise RefusedTarget(message) from None
    if (
        len(url) > MAX_URL_CHARS
        # The scheme as written, lowercase (urlsplit would lowercase it).
        or not url.startswith(tuple(f"{scheme}://" for scheme in schemes))
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        # Whitespace and control characters (NUL, DEL, ESC...): no request carries them.
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        raise RefusedTarget(message)
    return parts


# NAT64's well-known prefix (RFC 6052): its addresses reach the IPv4 address they end in.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _carried(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one reaches (IPv4-mapped, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refused(address: IPAddress, *, allow_private: bool) -> bool:
    """Whether no webhook may be sent to this address."""
    address = _carried(address)
    if address in METADATA:
        return True
    if allow_private:
        return False
    # Python counts some reserved ranges as global, ::/8 (IPv4-compatible ::a.b.c.d) one.
    return not address.is_global or address.is_multicast or address.is_reserved


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolves the host to."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve(url: SplitResult, *, allow_private: bool, resolver: Resolver) -> Target:
    """The URL's host resolved, each address checked; RefusedTarget if any is refused."""
    assert url.hostname is not None
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        found = [ipaddress.ip_address(a.split("%")[0]) for a in await resolver(url.hostname, port)]
    except (OSError, UnicodeError, ValueError):
        found = []
    if not found:
        raise RefusedTarget(UNRESOLVED_MESSAGE)
    # Any refused address refuses the name: a name is not half trusted.
    if any(refused(address, allow_private=allow_private) for address in found):
        raise RefusedTarget(REFUSED_MESSAGE)
    return Target(url, found[0])


async def check_target(url: str, *, allow_private: bool, resolver: Resolver) -> str:
    """The URL, if it keeps the rule and its host resolves to allowed addresses; else
    INVALID_ARGUMENT with the reason."""
    try:
        parts = parse_url(url, allow_private=allow_private)
        await resolve(parts, allow_private=allow_private, resolver=resolver)
    except RefusedTarget as refusal:
        raise InvalidArgument.field("url", refusal.message) from None
    return url
