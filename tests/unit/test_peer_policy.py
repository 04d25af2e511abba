"""relay.turn.peer_policy: canonical folding, coturn range syntax, refusal order."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from relay.turn.peer_policy import (
    IPRange,
    PeerPolicy,
    canonical_peer,
    parse_ip_range,
)

# The active denied-peer-ip lines of the seed's turnserver.conf (seed 003, coturn guide), read
# from the verbatim copy in tests/data so the list has one source: 18 ranges, in order.
SEED_CONF = Path(__file__).resolve().parents[1] / "data" / "seed_turnserver.conf"
SEED_DENIED = tuple(
    line.split("=", 1)[1].strip()
    for line in SEED_CONF.read_text().splitlines()
    if line.startswith("denied-peer-ip=")
)
assert len(SEED_DENIED) == 18, SEED_DENIED


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def seed_policy(
    allowed: tuple[str, ...] = (), allow_loopback: bool = False, allow_multicast: bool = False
) -> PeerPolicy:
    # The seed sets no-loopback-peers and no-multicast-peers.
    return PeerPolicy.from_strings(SEED_DENIED, allowed, allow_loopback, allow_multicast)


# --- canonical_peer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
        ("::ffff:0.0.0.0", "0.0.0.0"),
        ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible
        ("::0.0.0.2", "0.0.0.2"),
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4: bits 16..47
        ("2002:c000:0201:ffff:1:2:3:4", "192.0.2.1"),
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b:1::7f00:1", "127.0.0.1"),  # RFC 8215 local-use, /96 position
        ("64:ff9b:1:abcd::0a01:0203", "10.1.2.3"),
        ("::", "::"),  # IPv6's own unspecified, not 0.0.0.0
        ("::1", "::1"),  # IPv6's own loopback, not 0.0.0.1
        ("2001:db8::1", "2001:db8::1"),
        ("ff02::1", "ff02::1"),
        ("fe80::1%eth0", "fe80::1"),  # zone dropped
        ("64:ff9b:2::7f00:1", "64:ff9b:2::7f00:1"),  # outside both NAT64 prefixes
    ],
)
def test_canonical_peer_folds_embedded_ipv4(given: str, expected: str) -> None:
    result = canonical_peer(ip(given))
    assert result == ip(expected)
    assert str(result) == expected


def test_canonical_peer_result_is_already_canonical() -> None:
    for text in ("::ffff:10.0.0.1", "2002:0a00:1::", "64:ff9b::a00:1", "::a00:1", "2001:db8::5"):
        once = canonical_peer(ip(text))
        assert canonical_peer(once) == once


# --- refusals with the seed's deny list -------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b:1::7f00:1", "loopback"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::ffff:224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "multicast"),  # coturn: every first octet above 223
        ("ff02::1", "multicast"),
        ("169.254.169.254", "denied-peer-ip"),
        ("::ffff:169.254.169.254", "denied-peer-ip"),
        ("64:ff9b::a9fe:a9fe", "denied-peer-ip"),
        ("10.1.2.3", "denied-peer-ip"),
        ("::ffff:10.1.2.3", "denied-peer-ip"),
        ("::10.1.2.3", "denied-peer-ip"),
        ("2002:0a01:0203::", "denied-peer-ip"),
        ("192.168.1.1", "denied-peer-ip"),
        ("fd00::1", "denied-peer-ip"),
        ("fe80::1%eth0", "denied-peer-ip"),
        ("2001:db8::1", "denied-peer-ip"),
        ("::ffff:8.8.8.8", "denied-peer-ip"),  # the seed denies ::ffff:0:0/96 wholesale
    ],
)
def test_peer_policy_refuses_every_encoding_with_seed_list(peer: str, reason: str) -> None:
    assert seed_policy().refusal(ip(peer)) == reason


@pytest.mark.parametrize(
    "peer",
    ["127.0.0.1", "::1", "::ffff:127.0.0.1", "::127.0.0.1", "2002:7f00:1::", "64:ff9b::7f00:1"],
)
def test_peer_policy_refuses_loopback_without_any_deny_list(peer: str) -> None:
    assert PeerPolicy().refusal(ip(peer)) == "loopback"


@pytest.mark.parametrize("peer", ["0.0.0.0", "::", "::ffff:0.0.0.0", "2002::", "64:ff9b::"])
def test_peer_policy_refuses_unspecified_even_with_allow_loopback(peer: str) -> None:
    policy = PeerPolicy(allowed=(parse_ip_range("0.0.0.0/0"),), allow_loopback=True)
    assert policy.refusal(ip(peer)) == "unspecified"


def test_peer_policy_absolute_refusals_beat_allowed_peer_ip() -> None:
    policy = seed_policy(allowed=("127.0.0.0/8", "224.0.0.0/4", "::1"))
    assert policy.refusal(ip("127.0.0.1")) == "loopback"
    assert policy.refusal(ip("::1")) == "loopback"
    assert policy.refusal(ip("224.0.0.1")) == "multicast"


def test_peer_policy_checks_multicast_before_loopback() -> None:
    # coturn good_peer_addr order; only the reason differs, both refuse.
    both = PeerPolicy(allow_multicast=False)
    assert both.refusal(ip("224.0.0.1")) == "multicast"
    assert both.refusal(ip("127.0.0.1")) == "loopback"


# --- allowed counterparts ---------------------------------------------------------------------


@pytest.mark.parametrize("peer", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2a00:1450::1"])
def test_peer_policy_allows_public_address_with_seed_list(peer: str) -> None:
    assert seed_policy().refusal(ip(peer)) is None


def test_peer_policy_allows_mapped_public_address_without_deny_list() -> None:
    assert PeerPolicy().refusal(ip("::ffff:8.8.8.8")) is None
    assert PeerPolicy().refusal(ip("64:ff9b::808:808")) is None


def test_peer_policy_allowed_peer_ip_overrides_denied_range() -> None:
    policy = seed_policy(allowed=("10.1.2.3", "172.16.5.0/24"))
    assert policy.refusal(ip("10.1.2.3")) is None
    assert policy.refusal(ip("172.16.5.200")) is None
    # Still the same host when re-encoded: allowed is matched on the canonical address.
    assert policy.refusal(ip("::ffff:10.1.2.3")) is None
    # Neighbours stay denied.
    assert policy.refusal(ip("10.1.2.4")) == "denied-peer-ip"
    assert policy.refusal(ip("172.16.6.1")) == "denied-peer-ip"


def test_peer_policy_ipv6_allow_range_does_not_admit_reencoded_ipv4() -> None:
    # An operator allowing 6to4 must not thereby allow 10.1.2.3 written as 2002:0a01:0203::.
    policy = seed_policy(allowed=("2002::/16", "::ffff:0:0/96"))
    assert policy.refusal(ip("2002:0a01:0203::")) == "denied-peer-ip"
    assert policy.refusal(ip("::ffff:10.1.2.3")) == "denied-peer-ip"
    # IPv6 allow ranges are inert for IPv4-embedding addresses; allow the IPv4 target instead.
    assert policy.refusal(ip("2002:0808:0808::")) == "denied-peer-ip"
    assert seed_policy(allowed=("8.8.8.8",)).refusal(ip("2002:0808:0808::")) is None
    # Native IPv6 addresses are matched as written.
    assert seed_policy(allowed=("2001:db8::/48",)).refusal(ip("2001:db8::1")) is None


def test_peer_policy_allows_loopback_when_configured() -> None:
    policy = seed_policy(allow_loopback=True)
    assert policy.refusal(ip("127.0.0.1")) is None
    assert policy.refusal(ip("127.1.2.3")) is None
    assert policy.refusal(ip("::1")) is None
    # The seed still denies the mapped form as a whole range.
    assert policy.refusal(ip("::ffff:127.0.0.1")) == "denied-peer-ip"
    assert PeerPolicy(allow_loopback=True).refusal(ip("::ffff:127.0.0.1")) is None


def test_peer_policy_allows_multicast_by_default() -> None:
    assert PeerPolicy().refusal(ip("224.0.0.1")) is None
    assert PeerPolicy().refusal(ip("ff02::1")) is None


def test_peer_policy_deny_range_matches_reencoded_ipv4() -> None:
    policy = PeerPolicy.from_strings(["203.0.113.0/24"], [])
    for text in ("203.0.113.9", "::ffff:203.0.113.9", "::203.0.113.9", "2002:cb00:7109::"):
        assert policy.refusal(ip(text)) == "denied-peer-ip", text
    assert policy.refusal(ip("64:ff9b::cb00:7109")) == "denied-peer-ip"
    assert policy.refusal(ip("203.0.114.1")) is None


# --- parse_ip_range ---------------------------------------------------------------------------


def test_parse_ip_range_single_address() -> None:
    r = parse_ip_range("10.0.0.1")
    assert r == IPRange(ip("10.0.0.1"), ip("10.0.0.1"))
    assert str(r) == "10.0.0.1"
    assert parse_ip_range("::1") == IPRange(ip("::1"), ip("::1"))


def test_parse_ip_range_first_last() -> None:
    r = parse_ip_range("172.16.0.0-172.31.255.255")
    assert r.contains(ip("172.16.0.0")) and r.contains(ip("172.31.255.255"))
    assert not r.contains(ip("172.32.0.0")) and not r.contains(ip("172.15.255.255"))
    assert str(r) == "172.16.0.0-172.31.255.255"
    v6 = parse_ip_range("fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    assert v6.contains(ip("fd12::1")) and not v6.contains(ip("fe00::"))


def test_parse_ip_range_cidr() -> None:
    assert parse_ip_range("10.0.0.0/8") == parse_ip_range("10.0.0.0-10.255.255.255")
    assert parse_ip_range("2001:db8::/32") == parse_ip_range(
        "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
    )
    assert parse_ip_range("192.0.2.7/32") == parse_ip_range("192.0.2.7")


def test_parse_ip_range_ignores_surrounding_spaces() -> None:
    assert parse_ip_range("  10.0.0.1 - 10.0.0.9 ") == parse_ip_range("10.0.0.1-10.0.0.9")


def test_parse_ip_range_accepts_the_whole_seed_list() -> None:
    ranges = [parse_ip_range(text) for text in SEED_DENIED]
    assert len(ranges) == len(SEED_DENIED)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "foo",
        "turn.example.com",
        "10.0.0.1-",
        "-10.0.0.1",
        "10.0.0.5-10.0.0.1",
        "10.0.0.1-::1",
        "10.1.2.3/8",  # host bits set: strict CIDR
        "10.0.0.0/33",
        "10.0.0.0/8-10.0.0.1",
        "10.0.0.0/",
        "fe80::1%eth0",
        "fe80::%eth0/64",
        "1.2.3.4-5.6.7.8-9.9.9.9",
        "256.0.0.1",
        "010.0.0.1",
        "[::1]",
    ],
)
def test_parse_ip_range_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ip_range(text)
    assert repr(text) in str(info.value)


def test_parse_ip_range_host_bits_error_is_explicit() -> None:
    with pytest.raises(ValueError, match="host bits set"):
        parse_ip_range("10.1.2.3/8")


def test_peer_policy_from_strings_names_bad_entry() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.300'")):
        PeerPolicy.from_strings(["10.0.0.0/8", "10.0.0.300"], [])
    with pytest.raises(ValueError, match=re.escape("'nope'")):
        PeerPolicy.from_strings([], ["nope"])


def test_ip_range_rejects_mixed_family_and_reversed_bounds() -> None:
    with pytest.raises(ValueError, match="mixes"):
        IPRange(ip("10.0.0.1"), ip("::1"))
    with pytest.raises(ValueError, match="before it starts"):
        IPRange(ip("10.0.0.2"), ip("10.0.0.1"))


def test_ip_range_ipv6_range_never_matches_ipv4() -> None:
    assert not parse_ip_range("::ffff:0:0/96").contains(ip("10.0.0.1"))
    assert not parse_ip_range("::/0").contains(ip("10.0.0.1"))
    assert parse_ip_range("0.0.0.0/0").contains(ip("::ffff:10.0.0.1"))
    assert not parse_ip_range("0.0.0.0/0").contains(ip("2001:db8::1"))
