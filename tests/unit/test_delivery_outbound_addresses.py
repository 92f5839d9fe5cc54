"""Which addresses outbound HTTP refuses: every internal kind, in IPv4 and IPv6 forms."""

from __future__ import annotations

import ipaddress

import pytest

from beacon.deliveries.outbound import LOOPBACK, OutboundPolicy, allow_networks, refusal


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address under test, not a bind)
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),
        ("192.0.2.10", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a00:1", "private"),
    ],
)
def test_internal_addresses_are_refused_naming_their_kind(address: str, kind: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_an_allowed_network_lets_its_addresses_through_and_no_others() -> None:
    allowed = allow_networks(["10.20.0.0/16", "::1"])

    assert refusal(ipaddress.ip_address("10.20.3.4"), allow=allowed) is None
    assert refusal(ipaddress.ip_address("::1"), allow=allowed) is None
    assert refusal(ipaddress.ip_address("10.21.0.1"), allow=allowed) == "private"
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow=allowed) == "loopback"
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allow=LOOPBACK) is None


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'10.0.0.0/33' is not an IP network"):
        allow_networks(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="timeout must be positive"):
        OutboundPolicy(timeout=0)
