"""lab/nat behaviours and their nftables rendering (pure: no root, no namespaces)."""

from __future__ import annotations

import pytest

from lab.nat.behavior import (
    CGNAT_CIDR,
    PRESETS,
    Filtering,
    Mapping,
    NatBehavior,
    PortAllocation,
    preset,
)
from lab.nat.nftables import (
    SEQUENTIAL_WINDOW,
    render_nat,
    render_open_router,
    router_sysctls,
    sysctl_commands,
)

WAN = "198.18.1.1"
KW = {"wan_if": "wan0", "lan_if": "lan0", "wan_ip": WAN, "lan_cidr": "10.0.0.0/24"}


def render(b: NatBehavior, **kw: object) -> str:
    return render_nat(b, **{**KW, **kw})  # type: ignore[arg-type]


def test_nat_enum_values_use_rfc4787_words() -> None:
    assert [m.value for m in Mapping] == [
        "endpoint-independent",
        "address-dependent",
        "address-and-port-dependent",
    ]
    assert [f.value for f in Filtering] == [m.value for m in Mapping]
    assert {p.value for p in PortAllocation} == {"preserve", "sequential", "random"}


def test_nat_preset_names_and_layers() -> None:
    assert set(PRESETS) == {
        "open",
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
        "symmetric",
        "cgnat",
    }
    assert preset("open").layers == () and preset("open").is_open
    declared = {
        "full-cone": (Mapping.EIM, Filtering.EIF),
        "restricted-cone": (Mapping.EIM, Filtering.ADF),
        "port-restricted-cone": (Mapping.EIM, Filtering.APDF),
        "symmetric": (Mapping.APDM, Filtering.APDF),
    }
    for name, (m, f) in declared.items():
        b = preset(name).behavior
        assert (b.mapping, b.filtering) == (m, f), name
        assert b.udp_timeout == 120 and b.rfc4787_timeout_ok
    assert preset("symmetric").behavior.port_allocation is PortAllocation.RANDOM
    home, cgn = preset("cgnat").layers
    assert home == preset("port-restricted-cone").behavior
    assert (cgn.mapping, cgn.filtering) == (Mapping.EIM, Filtering.APDF)
    assert CGNAT_CIDR == "100.64.0.0/10"


def test_nat_preset_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown NAT preset 'cone'.*full-cone.*symmetric"):
        preset("cone")


@pytest.mark.parametrize("name", ["open", "cgnat"])
def test_nat_preset_behavior_requires_exactly_one_layer(name: str) -> None:
    with pytest.raises(ValueError, match="NAT layers"):
        _ = preset(name).behavior


def test_nat_behavior_validation() -> None:
    with pytest.raises(ValueError, match="port preservation"):
        NatBehavior(Mapping.APDM, Filtering.APDF, PortAllocation.PRESERVE)
    with pytest.raises(ValueError, match="port preservation"):
        NatBehavior(Mapping.ADM, Filtering.APDF)
    with pytest.raises(ValueError, match="udp_timeout"):
        NatBehavior(Mapping.EIM, Filtering.EIF, udp_timeout=0)
    with pytest.raises(TypeError, match="mapping"):
        NatBehavior("endpoint-independent", Filtering.EIF)  # type: ignore[arg-type]
    short = NatBehavior(Mapping.EIM, Filtering.EIF, udp_timeout=3)
    assert not short.rfc4787_timeout_ok
    assert short.label == "EIM/EIF/preserve"


@pytest.mark.parametrize(
    "layer",
    [(n, i) for n, p in PRESETS.items() for i in range(len(p.layers))],
    ids=lambda x: f"{x[0]}-{x[1]}",
)
def test_nat_every_preset_layer_renders_an_idempotent_script(layer: tuple[str, int]) -> None:
    b = PRESETS[layer[0]].layers[layer[1]]
    s = render(b)
    assert s.startswith(
        "table ip natlab_nat {}\ndelete table ip natlab_nat\ntable ip natlab_nat {\n"
    )
    assert s.count("{") == s.count("}")
    assert "timeout 120s" in s
    assert "type filter hook prerouting priority dstnat + 10; policy accept;" in s
    assert 'iifname "wan0" ct state new counter drop comment "unsolicited inbound"' in s
    assert "update @rev { udp sport : ct original ip saddr . ct original proto-src }" in s
    assert "update @rev { udp sport : ct reply ip saddr . ct reply proto-src }" in s
    assert f"snat ip to {WAN}\n" in s  # TCP/ICMP
    assert render(b) == s  # pure


def test_nat_render_eim_preserve_eif() -> None:
    s = render(preset("full-cone").behavior)
    assert "map eim {" in s
    assert f"ip saddr . udp sport @eim snat ip to {WAN} : ip saddr . udp sport map @eim" in s
    assert f"udp sport != @rev snat ip to {WAN} : udp sport" in s
    assert f"snat ip to {WAN}:20000-59999 fully-random" in s  # fallback when the port is taken
    assert "update @eim { ct original ip saddr . ct original proto-src : udp sport }" in s
    assert "dnat ip to udp dport map @rev" in s.split("chain inbound_udp")[1].split("}")[0]
    assert "numgen" not in s


def test_nat_render_adf_uses_learned_port_address_set() -> None:
    s = render(preset("restricted-cone").behavior)
    assert "set adf {" in s and "type inet_service . ipv4_addr" in s
    assert "udp dport . ip saddr @adf dnat ip to udp dport map @rev" in s
    assert "update @adf { udp sport . ct original ip daddr }" in s
    assert "update @adf { udp sport . ct reply ip daddr }" in s


def test_nat_render_apdf_admits_only_conntrack_replies() -> None:
    s = render(preset("port-restricted-cone").behavior)
    inbound = s.split("chain inbound_udp {")[1].split("}")[0]
    assert "dnat" not in inbound
    assert "set adf" not in s


def test_nat_render_symmetric_is_per_session() -> None:
    s = render(preset("symmetric").behavior)
    assert "map eim" not in s and "map adm" not in s
    assert f"meta l4proto udp snat ip to {WAN}:20000-59999 fully-random" in s
    assert "REQ-9" not in s  # hairpin off in this preset
    assert 'counter drop comment "no hairpin"' in s


def test_nat_render_adm_keys_by_remote_address() -> None:
    s = render(NatBehavior(Mapping.ADM, Filtering.APDF, PortAllocation.RANDOM))
    assert "type ipv4_addr . inet_service . ipv4_addr : inet_service" in s
    assert "ip saddr . udp sport . ct original ip daddr @adm snat ip to" in s
    assert "update @adm { ct original ip saddr . ct original proto-src . ct original ip daddr" in s


def test_nat_render_sequential_uses_counter_map() -> None:
    s = render(
        NatBehavior(Mapping.EIM, Filtering.APDF, PortAllocation.SEQUENTIAL),
        port_range=(30000, 30009),
    )
    assert "typeof numgen inc mod 10 : udp sport" in s
    assert "elements = { 0 : 30000, 1 : 30001," in s and "9 : 30009 }" in s
    assert f"snat ip to {WAN} : numgen inc mod 10 map @seq" in s
    big = render(NatBehavior(Mapping.APDM, Filtering.APDF, PortAllocation.SEQUENTIAL))
    assert f"mod {SEQUENTIAL_WINDOW} map @seq" in big


def test_nat_render_hairpin_on_and_off() -> None:
    on = render(NatBehavior(Mapping.EIM, Filtering.APDF, hairpin=True))
    assert (
        f'iifname "lan0" ip saddr 10.0.0.0/24 ip daddr {WAN} udp dport @rev '
        "dnat ip to udp dport map @rev"
    ) in on
    assert 'oifname "lan0" ct status dnat jump natout' in on
    off = render(NatBehavior(Mapping.EIM, Filtering.APDF, hairpin=False))
    assert "dnat" not in off.split("chain dstnat")[1].split("chain inbound_udp")[0]
    assert 'oifname "lan0" ct status dnat jump natout' not in off


def test_nat_render_timeout_and_sysctls() -> None:
    b = NatBehavior(Mapping.EIM, Filtering.EIF, udp_timeout=3)
    assert render(b).count("timeout 3s") == 2  # @eim and @rev
    assert router_sysctls(b) == {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.send_redirects": "0",
        "net.netfilter.nf_conntrack_udp_timeout": "3",
        "net.netfilter.nf_conntrack_udp_timeout_stream": "3",
    }
    assert not any(k.startswith("net.netfilter") for k in router_sysctls(None))
    assert ["sysctl", "-qw", "net.ipv4.ip_forward=1"] in sysctl_commands(router_sysctls(None))


def test_nat_render_custom_table_and_interfaces() -> None:
    s = render(preset("full-cone").behavior, table="natlab_nat2", wan_if="eth1", lan_if="br-x")
    assert s.startswith("table ip natlab_nat2 {}\ndelete table ip natlab_nat2\n")
    assert 'iifname "eth1"' in s and 'iifname "br-x"' in s


def test_nat_render_open_router() -> None:
    s = render_open_router(wan_if="wan0", lan_if="lan0")
    assert s.startswith("table ip natlab_nat {}\ndelete table ip natlab_nat\n")
    assert "policy accept" in s and "nat" not in s.replace("natlab_nat", "")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"wan_if": "x" * 16}, "wan_if"),
        ({"lan_if": "lan 0"}, "lan_if"),
        ({"lan_if": "wan0"}, "must differ"),
        ({"wan_ip": "198.18.1"}, "wan_ip"),
        ({"wan_ip": "10.0.0.9"}, "inside lan_cidr"),
        ({"lan_cidr": "10.0.0.1/24"}, "lan_cidr"),
        ({"table": "nat-lab"}, "table name"),
        ({"port_range": (1000, 2000)}, "port_range"),
        ({"port_range": (3000, 2000)}, "port_range"),
        ({"port_range": (2000, 70000)}, "port_range"),
    ],
)
def test_nat_render_rejects_bad_arguments(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render(preset("full-cone").behavior, **kw)


def test_nat_render_rejects_non_behavior() -> None:
    with pytest.raises(TypeError):
        render_nat(preset("cgnat"), **KW)  # type: ignore[arg-type]
