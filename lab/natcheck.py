"""NATs are measured, not trusted (DESIGN.md): classify each NAT preset with an RFC 5780 probe
and compare with its declaration.

Two independent classifiers: our ``lab.agents.natprobe`` against our relay, and coturn's
``turnutils_natdiscovery`` against coturn's ``turnserver`` (both with two addresses on the
relay host). ``check_nat`` builds a two-NAT topology with the preset on side A, runs both, and
returns one row per classifier.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.agents.relays import RelaySpec, start_relay
from lab.nat.behavior import Mapping, declared
from lab.session import LabError, LabNetwork
from lab.topologies.addressing import RELAY_IPS
from lab.topologies.base import SideSpec
from lab.topologies.catalog import TwoNats

CLASSIFIERS = ("natprobe", "natdiscovery")
_DISCOVERY_RE = re.compile(
    r"NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) "
    r"(Mapping|Filtering)"
)


@dataclass(frozen=True)
class NatCheckRow:
    preset: str
    classifier: str
    declared_mapping: str
    declared_filtering: str
    observed_mapping: str
    observed_filtering: str
    error: str = ""

    @property
    def agrees(self) -> bool:
        return (
            not self.error
            and self.declared_mapping == self.observed_mapping
            and self.declared_filtering == self.observed_filtering
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "agrees": self.agrees}


def parse_natdiscovery(output: str) -> tuple[str, str]:
    """(mapping, filtering) in RFC 4787 long names from coturn's words ("Address and Port
    Dependent" is "address-and-port-dependent"); "NA" for what the output does not say."""
    found = {
        kind: Mapping(words.lower().replace(" ", "-")).value
        for words, kind in _DISCOVERY_RE.findall(output)
    }
    return found.get("Mapping", "NA"), found.get("Filtering", "NA")


def probe_with_natprobe(lab: LabNetwork, peer: str = "pa") -> tuple[str, str, str]:
    server = f"{RELAY_IPS[0]}:3478"
    result = lab.run(
        peer, [sys.executable, "-m", "lab.agents.natprobe", server, "--json", "--rto", "0.05"], 30
    )
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
        return str(data["mapping"]), str(data["filtering"]), ""
    except (IndexError, KeyError, ValueError):
        return "NA", "NA", f"natprobe failed ({result.returncode}): {result.stderr[-500:]}"


def probe_with_natdiscovery(lab: LabNetwork, peer: str = "pa") -> tuple[str, str, str]:
    result = lab.run(peer, ["turnutils_natdiscovery", "-m", "-f", RELAY_IPS[0]], 30)
    mapping, filtering = parse_natdiscovery(result.stdout + result.stderr)
    error = "" if "NA" not in (mapping, filtering) else f"natdiscovery: {result.stdout[-500:]}"
    return mapping, filtering, error


def check_nat(name: str, classifiers: tuple[str, ...] = CLASSIFIERS) -> list[NatCheckRow]:
    mapping, filtering = declared(name)
    rows = []
    with tempfile.TemporaryDirectory(prefix="natlab-natcheck-") as tmp:
        for classifier in classifiers:
            if classifier == "natdiscovery" and shutil.which("turnutils_natdiscovery") is None:
                rows.append(
                    NatCheckRow(
                        name,
                        classifier,
                        mapping,
                        filtering,
                        "NA",
                        "NA",
                        "coturn's turnutils_natdiscovery is not installed",
                    )
                )
                continue
            impl = "inrepo" if classifier == "natprobe" else "coturn"
            with LabNetwork(TwoNats, a=SideSpec(name), b=SideSpec("open")) as lab:
                try:
                    start_relay(lab, RelaySpec(impl=impl, udp_443=False), Path(tmp) / impl)
                except RuntimeError as err:
                    raise LabError(str(err)) from err
                probe = probe_with_natprobe if classifier == "natprobe" else probe_with_natdiscovery
                seen_mapping, seen_filtering, error = probe(lab)
                rows.append(
                    NatCheckRow(
                        name, classifier, mapping, filtering, seen_mapping, seen_filtering, error
                    )
                )
    return rows


def format_table(rows: list[NatCheckRow]) -> str:
    header = ("preset", "classifier", "declared", "observed", "ok")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.preset,
                r.classifier,
                f"{r.declared_mapping} / {r.declared_filtering}",
                f"{r.observed_mapping} / {r.observed_filtering}",
                "yes" if r.agrees else f"NO {r.error}".strip(),
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )
