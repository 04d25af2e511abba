"""Seed 000 firewall tables as data, and their nftables rendering (pure)."""

from __future__ import annotations

import pytest

from lab.nat.firewall import (
    FIREWALL_ROWS,
    POLICIES,
    Direction,
    FirewallHosts,
    Proto,
    Role,
    policy,
    render_firewall,
)

HOSTS = FirewallHosts(web="198.18.0.20", signaling="198.18.0.30", turn=("198.18.0.2", "198.18.0.4"))
KW = {"hosts": HOSTS, "client_if": "lan0", "outside_if": "wan0"}
PEER = "198.18.5.5"


def rows(profile: str) -> list[tuple[str, str, str, str]]:
    return [
        (r.target, r.direction.value, r.proto_label, r.port_label)
        for r in FIREWALL_ROWS
        if r.profile == profile
    ]


def test_firewall_rows_are_the_seed_tables() -> None:
    web = [
        (h, "A", "TCP", p)
        for h in ("www.patientus.de", "security.patientus.de")
        for p in ("80", "443")
    ]
    common = [
        *web,
        ("xmpp-production.patientus.de", "A", "TCP", "443"),
        ("turn.patientus.de", "A", "TCP/UDP", "443"),
    ]
    assert rows("recommended") == [
        *common,
        ("PEER", "EA", "UDP", "1024-65535"),
        ("turn.patientus.de", "EA", "UDP", "32355-65535"),
        ("PEER", "EA", "ICMP", ""),
        ("xmpp-production.patientus.de", "EA", "ICMP", ""),
        ("turn.patientus.de", "EA", "ICMP", ""),
    ]
    assert rows("minimal") == common
    assert rows("udp-blocked") == [("any", "A", "TCP", "80"), ("any", "A", "TCP", "443")]
    roles = {r.target: r.role for r in FIREWALL_ROWS}
    assert roles["www.patientus.de"] is roles["security.patientus.de"] is Role.WEB
    assert roles["xmpp-production.patientus.de"] is Role.SIGNALING
    assert roles["turn.patientus.de"] is Role.TURN and roles["PEER"] is Role.PEER
    assert [r.dynamic for r in FIREWALL_ROWS if r.role is Role.PEER] == [True, False]
    assert len({r.id for r in FIREWALL_ROWS}) == len(FIREWALL_ROWS)


def test_firewall_policy_names() -> None:
    assert set(POLICIES) == {"open", "recommended", "minimal", "udp-blocked"}
    with pytest.raises(ValueError, match=r"unknown firewall policy 'strict'.*minimal.*udp-blocked"):
        policy("strict")


@pytest.mark.parametrize("name", ["recommended", "minimal", "udp-blocked"])
def test_firewall_every_row_becomes_commented_rules(name: str) -> None:
    s = render_firewall(policy(name), **KW)
    assert s.startswith("table ip natlab_fw {}\ndelete table ip natlab_fw\n")
    assert "type filter hook forward priority filter; policy drop;" in s
    assert "ct state invalid drop" in s
    assert "ct state established,related counter accept" in s
    assert " 53 " not in s and "dport 53" not in s  # no DNS
    for row in policy(name).rows:
        n = 2 if row.direction is Direction.BOTH else 1
        assert s.count(f'comment "{row.comment}') == n, row.comment
    # one rule per row and direction, plus the shared "replies" rule
    assert s.count("accept comment") == 1 + sum(
        2 if r.direction is Direction.BOTH else 1 for r in policy(name).rows
    )


def test_firewall_render_golden_rules() -> None:
    s = render_firewall(policy("recommended"), **KW)
    turn = "ip daddr { 198.18.0.2, 198.18.0.4 }"
    assert (
        f'iifname "lan0" oifname "wan0" {turn} meta l4proto {{ tcp, udp }} th dport 443 '
        'counter accept comment "seed000 recommended: turn TCP/UDP 443 STUNS/TURNS"'
    ) in s
    assert (
        'iifname "wan0" oifname "lan0" ip saddr { 198.18.0.2, 198.18.0.4 } udp sport '
        '32355-65535 counter accept comment "seed000 recommended: turn UDP 32355-65535 SRTP (E)"'
    ) in s
    assert (
        'iifname "wan0" oifname "lan0" udp sport 1024-65535 ct state established,related '
        "counter accept"
    ) in s
    assert 'iifname "lan0" oifname "wan0" udp dport 1024-65535 counter accept' in s
    assert 'ip daddr 198.18.0.20 tcp dport 80 counter accept comment "seed000 recommended: ' in s
    assert "(www.patientus.de)" in s and "(security.patientus.de)" in s
    m = render_firewall(policy("minimal"), **KW)
    assert "udp dport 1024-65535" not in m and "icmp" not in m and "32355" not in m
    u = render_firewall(policy("udp-blocked"), **KW)
    assert "udp" not in u.replace("udp-blocked", "")
    assert 'iifname "lan0" oifname "wan0" tcp dport 443 counter accept' in u
    o = render_firewall(policy("open"), **KW)
    assert "policy accept" in o and "drop" not in o


def test_firewall_model_allows() -> None:
    rec, mini, ub, op = (policy(n) for n in ("recommended", "minimal", "udp-blocked", "open"))
    out, inn = Direction.OUT, Direction.IN
    assert rec.allows(HOSTS, out, Proto.UDP, "198.18.0.4", 443)
    assert rec.allows(HOSTS, out, Proto.UDP, PEER, 5000)
    assert not rec.allows(HOSTS, inn, Proto.UDP, PEER, 5000)  # hole punching only
    assert rec.allows(HOSTS, inn, Proto.UDP, "198.18.0.2", 40000)
    assert not rec.allows(HOSTS, inn, Proto.UDP, "198.18.0.2", 443)
    assert not rec.allows(HOSTS, out, Proto.UDP, PEER, 53)
    assert rec.allows(HOSTS, out, Proto.ICMP, PEER)
    assert not mini.allows(HOSTS, out, Proto.UDP, "198.18.0.2", 3478)
    assert mini.allows(HOSTS, out, Proto.TCP, "198.18.0.30", 443)
    assert not mini.allows(HOSTS, out, Proto.TCP, "198.18.0.30", 80)
    assert ub.allows(HOSTS, out, Proto.TCP, PEER, 443)
    assert not ub.allows(HOSTS, out, Proto.UDP, "198.18.0.2", 443)
    assert op.allows(HOSTS, inn, Proto.UDP, PEER, 1)
    with pytest.raises(ValueError, match="one direction"):
        rec.allows(HOSTS, Direction.BOTH, Proto.UDP, PEER, 1)


def test_firewall_hosts_and_render_validation() -> None:
    with pytest.raises(ValueError, match="IPv4"):
        FirewallHosts(web="web.example", signaling="198.18.0.30", turn=("198.18.0.2",))
    with pytest.raises(ValueError, match="tuple"):
        FirewallHosts(web="198.18.0.20", signaling="198.18.0.30", turn="198.18.0.2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must differ"):
        render_firewall(policy("minimal"), hosts=HOSTS, client_if="x", outside_if="x")
    with pytest.raises(ValueError, match="client_if"):
        render_firewall(policy("minimal"), hosts=HOSTS, client_if="a;b", outside_if="x")
    with pytest.raises(ValueError, match="table"):
        render_firewall(policy("minimal"), **KW, table="fw;flush ruleset")
    with pytest.raises(TypeError):
        render_firewall("minimal", **KW)  # type: ignore[arg-type]
