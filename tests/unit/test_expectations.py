"""The expected outcomes are DESIGN.md's tables, cell by cell."""

from __future__ import annotations

import pytest

from lab.expectations import CellIntent, combine_sides, expected_outcome

NATS = ["full-cone", "restricted-cone", "port-restricted-cone", "symmetric"]
# DESIGN.md "Expected hole-punching outcomes", row = A, column = B
DESIGN_MATRIX = [
    ["direct", "direct", "direct", "direct"],
    ["direct", "direct", "direct", "direct"],
    ["direct", "direct", "direct", "relay"],
    ["direct", "direct", "relay", "relay"],
]


@pytest.mark.parametrize("i", range(4))
@pytest.mark.parametrize("j", range(4))
def test_expectations_matrix_matches_design(i: int, j: int) -> None:
    intent = CellIntent(nat_a=NATS[i], nat_b=NATS[j])
    want = DESIGN_MATRIX[i][j]
    assert expected_outcome(intent) == ("direct" if want == "direct" else "relay-udp")
    stun_only = CellIntent(nat_a=NATS[i], nat_b=NATS[j], turn_transports=())
    assert expected_outcome(stun_only) == ("direct" if want == "direct" else "fail")


@pytest.mark.parametrize("nat", [*NATS, "open", "cgnat"])
def test_expectations_open_side_always_direct(nat: str) -> None:
    assert expected_outcome(CellIntent(nat_a="open", nat_b=nat)) == "direct"


def test_expectations_cgnat_behaves_like_port_restricted() -> None:
    assert expected_outcome(CellIntent(nat_a="cgnat", nat_b="symmetric")) == "relay-udp"
    assert expected_outcome(CellIntent(nat_a="cgnat", nat_b="port-restricted-cone")) == "direct"


@pytest.mark.parametrize(
    ("firewall", "want"),
    [
        ("open", "direct"),
        ("recommended", "direct"),
        ("minimal", "relay-udp"),
        ("udp-blocked", "relay-tls"),
    ],
)
def test_expectations_fallback_ladder(firewall: str, want: str) -> None:
    intent = CellIntent(nat_a="full-cone", nat_b="full-cone", firewall_a=firewall)
    assert expected_outcome(intent) == want


def test_expectations_recommended_firewall_makes_full_cone_port_restricted() -> None:
    intent = CellIntent(nat_a="full-cone", nat_b="symmetric", firewall_a="recommended")
    assert expected_outcome(intent) == "relay-udp"


def test_expectations_tcp_only_turn_is_blocked_by_recommended() -> None:
    intent = CellIntent(firewall_a="recommended", ice_policy="relay", turn_transports=("tcp",))
    assert expected_outcome(intent) == "fail"


def test_expectations_relay_only_tls_reaches_relay_tls() -> None:
    intent = CellIntent(firewall_a="udp-blocked", ice_policy="relay", turn_transports=("tls",))
    assert expected_outcome(intent) == "relay-tls"


def test_expectations_denied_lab_peers_fail_relay_cells_only() -> None:
    relay_cell = CellIntent(nat_a="symmetric", nat_b="symmetric", relay_refuses_lab_peers=True)
    direct_cell = CellIntent(nat_a="full-cone", nat_b="symmetric", relay_refuses_lab_peers=True)
    assert expected_outcome(relay_cell) == "fail"
    assert expected_outcome(direct_cell) == "direct"


def test_expectations_same_lan_is_direct_even_when_symmetric() -> None:
    intent = CellIntent(topology="same-lan", nat_a="symmetric", nat_b="symmetric")
    assert expected_outcome(intent) == "direct"


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("direct", "direct", "direct"),
        ("relay-udp", "relay-remote", "relay-udp"),
        ("relay-tls", "relay-udp", "relay-tls"),
        ("fail", "direct", "fail"),
        (None, "direct", "fail"),
        ("relay-remote", "relay-remote", "fail"),
    ],
)
def test_expectations_combine_sides(a: str | None, b: str | None, want: str) -> None:
    assert combine_sides(a, b) == want
