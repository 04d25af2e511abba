"""RFC 4787 NAT behaviours as data, and the named presets of DESIGN.md "NAT model"."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# RFC 4787 REQ-5: a UDP mapping timer MUST NOT expire in less than two minutes.
RFC4787_MIN_UDP_TIMEOUT_S = 120
CGNAT_CIDR = "100.64.0.0/10"  # RFC 6598 shared address space, between CGN and home router


class Mapping(Enum):
    """RFC 4787 section 4.1: what decides whether an existing mapping is reused."""

    EIM = "endpoint-independent"
    ADM = "address-dependent"
    APDM = "address-and-port-dependent"


class Filtering(Enum):
    """RFC 4787 section 5: which inbound packets a mapping admits."""

    EIF = "endpoint-independent"
    ADF = "address-dependent"
    APDF = "address-and-port-dependent"


class PortAllocation(Enum):
    """RFC 4787 section 4.2.1: how the external port of a new mapping is chosen."""

    PRESERVE = "preserve"
    SEQUENTIAL = "sequential"
    RANDOM = "random"


@dataclass(frozen=True)
class NatBehavior:
    mapping: Mapping
    filtering: Filtering
    port_allocation: PortAllocation = PortAllocation.PRESERVE
    hairpin: bool = True  # RFC 4787 REQ-9: a NAT MUST support hairpinning
    udp_timeout: int = RFC4787_MIN_UDP_TIMEOUT_S

    def __post_init__(self) -> None:
        for name, cls in (
            ("mapping", Mapping),
            ("filtering", Filtering),
            ("port_allocation", PortAllocation),
        ):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        if not isinstance(self.udp_timeout, int) or self.udp_timeout < 1:
            raise ValueError(
                f"udp_timeout must be a positive int (seconds), got {self.udp_timeout!r}"
            )
        if self.mapping is not Mapping.EIM and self.port_allocation is PortAllocation.PRESERVE:
            # Keeping the internal port for every remote would make each mapping the same
            # port, i.e. observably EIM (RFC 5780 section 4.3 could not tell them apart).
            raise ValueError(
                f"{self.mapping.value} mapping cannot use port preservation "
                "(every mapping would get the same port, which is endpoint-independent)"
            )

    @property
    def rfc4787_timeout_ok(self) -> bool:
        """False for the short timeouts tests use; RFC 4787 REQ-5 wants >= 120 s."""
        return self.udp_timeout >= RFC4787_MIN_UDP_TIMEOUT_S

    @property
    def label(self) -> str:
        return f"{self.mapping.name}/{self.filtering.name}/{self.port_allocation.value}"


@dataclass(frozen=True)
class NatPreset:
    """A named stack of NAT layers, ordered from the client outwards.

    `layers == ()` is the `open` preset: the client has a routable address, no NAT at all.
    """

    name: str
    layers: tuple[NatBehavior, ...]
    description: str

    @property
    def is_open(self) -> bool:
        return not self.layers

    @property
    def behavior(self) -> NatBehavior:
        """The single layer; raises for `open` and for multi-layer presets such as `cgnat`."""
        if len(self.layers) != 1:
            raise ValueError(f"preset {self.name!r} has {len(self.layers)} NAT layers, not 1")
        return self.layers[0]


_HOME = NatBehavior(Mapping.EIM, Filtering.APDF, PortAllocation.PRESERVE, hairpin=True)
# RFC 6888 REQ-1 (EIM) and REQ-7 (hairpinning) for CGNs; ports randomised as CGNs do.
_CGN = NatBehavior(Mapping.EIM, Filtering.APDF, PortAllocation.RANDOM, hairpin=True)

PRESETS: dict[str, NatPreset] = {
    p.name: p
    for p in (
        NatPreset("open", (), "no NAT: the client's address is routable"),
        NatPreset(
            "full-cone",
            (NatBehavior(Mapping.EIM, Filtering.EIF, PortAllocation.PRESERVE),),
            "EIM/EIF",
        ),
        NatPreset(
            "restricted-cone",
            (NatBehavior(Mapping.EIM, Filtering.ADF, PortAllocation.PRESERVE),),
            "EIM/ADF",
        ),
        NatPreset("port-restricted-cone", (_HOME,), "EIM/APDF, a typical home router"),
        NatPreset(
            "symmetric",
            (NatBehavior(Mapping.APDM, Filtering.APDF, PortAllocation.RANDOM, hairpin=False),),
            "APDM/APDF with random ports",
        ),
        NatPreset(
            "cgnat",
            (_HOME, _CGN),
            f"home router (port-restricted) behind a CGN (EIM/APDF, random), {CGNAT_CIDR} between",
        ),
    )
}


def short_form(mapping: str, filtering: str) -> str:
    """ "EIM/APDF" from RFC 4787 long names ("endpoint-independent", ...); a value that is
    not an RFC 4787 behaviour (a probe's "NA", say) is kept as it is."""
    m = next((x.name for x in Mapping if x.value == mapping), mapping)
    f = next((x.name for x in Filtering if x.value == filtering), filtering)
    return f"{m}/{f}"


_STRICTNESS = [m.value for m in Mapping]  # the same three words order Filtering too


def declared(name: str) -> tuple[str, str]:
    """The mapping and filtering (RFC 4787 long names) that a probe from the innermost LAN
    of preset ``name`` must observe. ``open`` behaves as endpoint-independent in both
    respects; for stacked layers (``cgnat``) the stricter layer shows through."""
    layers = preset(name).layers
    if not layers:
        return Mapping.EIM.value, Filtering.EIF.value
    mapping = max((b.mapping.value for b in layers), key=_STRICTNESS.index)
    filtering = max((b.filtering.value for b in layers), key=_STRICTNESS.index)
    return mapping, filtering


def declared_short(name: str) -> str:
    """``declared`` in short form, e.g. "APDM/APDF" for ``symmetric``."""
    return short_form(*declared(name))


def preset(name: str) -> NatPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown NAT preset {name!r}; valid: {', '.join(sorted(PRESETS))}"
        ) from None
