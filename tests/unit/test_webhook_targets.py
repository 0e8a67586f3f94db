"""Where a webhook may send (README, Webhooks): which addresses are refused, with private
addresses allowed or not, and the address a checked URL is connected to."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from server.service.webhook_dispatch import backoff_delay
from server.service.webhook_targets import (
    REFUSED_MESSAGE,
    UNRESOLVED_MESSAGE,
    RefusedTarget,
    parse_url,
    refused,
    resolve,
)
from server.service.webhooks import new_secret


# (address, refused without private addresses allowed, refused with them allowed)
@pytest.mark.parametrize(
    ("address", "refused_by_default", "refused_when_private_allowed"),
    [
        ("8.8.8.8", False, False),
        ("2606:4700:4700::1111", False, False),
        ("127.0.0.1", True, False),
        ("10.0.0.1", True, False),
        ("172.16.0.1", True, False),
        ("192.168.1.1", True, False),
        ("169.254.1.1", True, False),
        ("100.64.0.1", True, False),
        ("0.0.0.0", True, False),
        ("224.0.0.1", True, False),
        ("::1", True, False),
        ("fe80::1", True, False),
        ("fc00::1", True, False),
        ("::ffff:10.0.0.1", True, False),
        # IPv6 forms that carry an IPv4 address: judged by the address they carry, and
        # the reserved ones refused whatever they carry.
        ("::7f00:1", True, False),
        ("64:ff9b::7f00:1", True, False),
        ("2002:7f00:1::", True, False),
        ("2002:808:808::", False, False),
        ("64:ff9b::808:808", False, False),
        ("64:ff9b::a9fe:a9fe", True, True),
        ("2002:a9fe:a9fe::", True, True),
        # Metadata addresses are refused even where private addresses are allowed.
        ("169.254.169.254", True, True),
        ("fd00:ec2::254", True, True),
        ("::ffff:169.254.169.254", True, True),
    ],
)
def test_which_addresses_are_refused(
    address: str, refused_by_default: bool, refused_when_private_allowed: bool
) -> None:
    ip = ipaddress.ip_address(address)
    assert refused(ip, allow_private=False) is refused_by_default
    assert refused(ip, allow_private=True) is refused_when_private_allowed


async def test_a_name_with_any_refused_address_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "10.0.0.1"]

    async def nothing(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    url = parse_url("https://example.test/hook", allow_private=False)
    with pytest.raises(RefusedTarget, match="refused address") as refusal:
        await resolve(url, allow_private=False, resolver=resolver)
    assert refusal.value.message == REFUSED_MESSAGE
    with pytest.raises(RefusedTarget) as unresolved:
        await resolve(url, allow_private=False, resolver=nothing)
    assert unresolved.value.message == UNRESOLVED_MESSAGE


async def test_the_checked_address_is_connected_to_under_the_urls_name() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("example.test", 8443)
        return ["2606:4700:4700::1111"]

    url = parse_url("https://example.test:8443/a/b?c=d", allow_private=False)
    target = await resolve(url, allow_private=False, resolver=resolver)
    assert target.connect_url == "https://[2606:4700:4700::1111]:8443/a/b?c=d"
    assert target.host == "example.test"


def test_a_secret_is_one_standardwebhooks_signs_and_verifies_with() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 44
    webhook = Webhook(secret)
    now = datetime.now(UTC)
    signature = webhook.sign("evt_1", now, '{"a":1}')
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    assert webhook.verify('{"a":1}', headers) == {"a": 1}


def test_retry_delays_are_full_jitter_under_a_doubling_ceiling() -> None:
    delays = [backoff_delay(3, base_s=2, max_s=60) for _ in range(200)]
    assert all(0 <= d <= 8 for d in delays) and max(delays) > 4
    assert all(0 <= backoff_delay(40, base_s=2, max_s=60) <= 60 for _ in range(50))
