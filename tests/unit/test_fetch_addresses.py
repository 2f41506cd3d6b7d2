"""Which resolved addresses and redirect targets the image downloader refuses (no I/O)."""

from __future__ import annotations

import pytest
from yarl import URL

from dahell.fetch import FetchFailed, _redirect_target, address_refused, explicit_addresses

EXPLICIT = explicit_addresses(["cdn.example.com", "127.0.0.1"])


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        # IPv4-mapped ::ffff:0:0/96: judged as the IPv4 address (and the allow-list's literal).
        ("::ffff:10.0.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("::ffff:8.8.8.8", False),
        ("::ffff:127.0.0.1", False),  # the allow-list names 127.0.0.1
        # IPv4-compatible ::/96 (deprecated): always refused.
        ("::127.0.0.1", True),
        ("::10.0.0.1", True),
        ("::8.8.8.8", True),
        # Well-known NAT64 64:ff9b::/96: judged by the IPv4 address it leads to.
        ("64:ff9b::127.0.0.1", True),  # an IPv4 literal in the allow-list does not cover it
        ("64:ff9b::10.0.0.1", True),
        ("64:ff9b::192.168.1.1", True),
        ("64:ff9b::169.254.169.254", True),
        ("64:ff9b::100.64.0.1", True),
        ("64:ff9b::8.8.8.8", False),
        # Local-use NAT64 64:ff9b:1::/48: always refused.
        ("64:ff9b:1::10.0.0.1", True),
        ("64:ff9b:1::8.8.8.8", True),
        # 6to4 2002::/16 carrying a loopback, private or link-local IPv4 address.
        ("2002:7f00:1::", True),
        ("2002:7f00:1::1", True),
        ("2002:a00:1::1", True),
        ("2002:c0a8:101::1", True),
        ("2002:a9fe:a9fe::1", True),
        ("2002:ac10:1::1", True),
        # Teredo 2001::/32: always refused (its client part is any IPv4 host).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),
        # IPv4-translated ::ffff:0:0:0/96.
        ("::ffff:0:7f00:1", True),
        ("::ffff:0:a00:1", True),
        # Plain public IPv6 still passes.
        ("2606:4700::6810:84e5", False),
        ("2a00:1450:4001:80b::200e", False),
    ],
)
def test_ipv6_forms_of_private_addresses_are_refused(address: str, refused: bool) -> None:
    assert address_refused(address, 443, EXPLICIT) is refused


@pytest.mark.parametrize(
    "location",
    [
        "http://evil\\example.com/x.jpg",
        "https://127.0.0.1\\@cdn.example.com/x.jpg",
        "http://[::1/x.jpg",
        "http://cdn.example.com:99999/x.jpg",
        "//[not-an-ip]/x.jpg",
    ],
)
def test_a_redirect_location_yarl_refuses_is_invalid_url_and_final(location: str) -> None:
    with pytest.raises(FetchFailed) as info:
        _redirect_target(URL("http://cdn.example.com/a.jpg"), location)
    assert info.value.reason == "invalid_url" and not info.value.transient


def test_a_relative_location_with_a_backslash_in_the_path_stays_on_the_host() -> None:
    target = _redirect_target(URL("http://cdn.example.com/a/b.jpg"), "\\\\evil.com/x")
    assert target.host == "cdn.example.com"
