"""Denied peers: the seed's coturn config (seed 003) used verbatim, and a hostile TURN user.

DESIGN.md: "The seed's coturn config denies 198.18.0.0/15 too. Scenarios that use it verbatim
must show exactly that (relay to lab peers refused), and the default lab config adds
allowed-peer-ip for the lab internet, as coturn's own docs advise for LAN deployments."

1. The seed's turnserver.conf, with only certificates, IPs, secret and realm filled in:
   a relay-needing cell (symmetric x symmetric) fails (403 to lab peers), a direct cell
   (full-cone x full-cone) still goes direct, and the same config plus
   ``allowed-peer-ip=198.18.0.0-198.19.255.255`` relays over UDP.
2. A hostile but authenticated client on the internet host allocates and tries to reach the
   relay's internal service, the metadata address and the relay's loopback in every address
   encoding, through CreatePermission, ChannelBind, Send and ChannelData. Every request is
   refused, and sniffers on the targets (and on the relay's ``lo``) see nothing; a permitted
   public peer does hear the same client (positive control).
3. The relay host itself reaches the internal service and the metadata host, so the refusals
   are the relay's policy, not routing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.session import lab_unavailable_reason

REASON = lab_unavailable_reason()
if REASON is not None:
    pytest.skip(REASON, allow_module_level=True)

from lab.agents.relays import RelaySpec, start_relay  # noqa: E402
from lab.certs import LabCerts, lab_certs  # noqa: E402
from lab.expectations import CellIntent  # noqa: E402
from lab.run import TURN_SECRET, CellResult, CellSpec, run_cell  # noqa: E402
from lab.session import LabNetwork  # noqa: E402
from lab.topologies.addressing import (  # noqa: E402
    INTERNAL_SERVICE_IP,
    METADATA_IP,
    RELAY_IPS,
    WEB_IP,
)
from lab.topologies.catalog import RelayLan  # noqa: E402

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
SEED_CONF = HERE.parent / "tests" / "data" / "seed_turnserver.conf"
HOSTILE_CLIENT = HERE / "hostile_client.py"
RELAY_IP = RELAY_IPS[0]
LAB_REALM = "natlab"
# coturn's docs: a LAN deployment adds an allow rule for its own range; the lab's internet
LAB_INTERNET_ALLOWED = "198.18.0.0-198.19.255.255"
LAB_INTERNET = ipaddress.ip_network("198.18.0.0/15")

COTURN_MISSING = shutil.which("turnserver") is None
RELAY_IMPLS = [
    pytest.param("inrepo", id="inrepo"),
    pytest.param(
        "coturn",
        id="coturn",
        marks=[
            pytest.mark.interop,
            pytest.mark.skipif(COTURN_MISSING, reason="coturn (turnserver) is not installed"),
        ],
    ),
]

# Payload ports of the hostile client: target n gets HOSTILE_PORT_BASE + n, so a leaked
# datagram names the encoding that leaked. The sniffers watch the whole range.
HOSTILE_PORT_BASE = 20000
SELF_CHECK_PORT = 20098  # sent by the relay *host* (not the relay) to prove each sniffer works
CONTROL_PORT = 20099  # the permitted public peer's echo
SNIFF_FILTER = f"udp and dst portrange {HOSTILE_PORT_BASE}-{CONTROL_PORT}"
SNIFF_MAX_PACKETS = 500  # tcpdump -c bound
SNIFF_MAX_SECONDS = 90  # `timeout` bound on each tcpdump


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("denied-peers")


@pytest.fixture(scope="module")
def certs(workdir: Path) -> LabCerts:
    # run_cell reuses the CA and certificate it finds in <workdir>/certs
    return lab_certs(workdir / "certs")


# ---------------------------------------------------------------------------- part 1: seed


def seed_config(dest: Path, impl: str, certs: LabCerts, extra: tuple[str, ...] = ()) -> Path:
    """The seed's turnserver.conf with only the substitutions documented in its header.

    Every substitution must match exactly one seed line, so a changed seed fails loudly
    instead of silently testing something else.
    """
    substitutions = [
        # $IP: the relay's lab address (seed: "Ersetzen <IP> mit der externen IP")
        ("listening-ip=$IP", f"listening-ip={RELAY_IP}"),
        ("relay-ip=$IP", f"relay-ip={RELAY_IP}"),
        # <secret_value>: the lab's TURN REST secret, which the lab's ICE agents use
        ("static-auth-secret=<secret_value>", f"static-auth-secret={TURN_SECRET}"),
        # <example.com>: the lab realm (the REST password does not depend on it)
        ("realm=<example.com>", f"realm={LAB_REALM}"),
        # Let's Encrypt paths: the lab CA's server certificate (IP SANs 198.18.0.2/.3)
        ("cert=/etc/turnserver/fullchain.pem", f"cert={certs.cert}"),
        ("pkey=/etc/turnserver/privkey.pem", f"pkey={certs.key}"),
    ]
    lines = SEED_CONF.read_text().splitlines()
    for old, new in substitutions:
        hits = [n for n, line in enumerate(lines) if line == old]
        assert len(hits) == 1, f"seed line {old!r} found {len(hits)} times in {SEED_CONF}"
        lines[hits[0]] = new
    header = [
        f"# Generated by {Path(__file__).name} from {SEED_CONF.name}. Substituted, nothing else:",
        *(f"#   {old}  ->  {new}" for old, new in substitutions),
        "# The unkeyed 'From https://ssl-config.mozilla.org/...' line and the cipher-list line",
        "# with dh-file= glued on are kept as they are: both relays start with them (coturn",
        "# passes the junk to OpenSSL, which skips the unknown cipher names; ours warns).",
        "# coturn 4.6 logs 'Bad configuration format' for 'From' and for no-loopback-peers",
        "# (it no longer knows that key: it refuses loopback peers unless allow-loopback-peers)",
        "# and goes on.",
    ]
    # TURN/STUN over UDP 443 for the lab's agents (seed 000) comes from lab.agents.relays:
    # --extra-udp-port 443 for our relay; coturn's DTLS listener on 443 answers plain UDP.
    if extra:
        header.append(f"# Appended by the scenario: {', '.join(extra)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join([*header, *lines, *extra]) + "\n")
    return dest


def cell_report(result: CellResult) -> str:
    """The row and the tails of the kept logs, for an assertion message."""
    parts = [json.dumps(result.row, indent=1, default=str)]
    if result.artifacts:
        for name in ("relay.log", "agent-a.log", "agent-b.log", "lab-error.txt"):
            path = result.artifacts / name
            if path.exists():
                parts.append(f"--- {name} (tail)\n{path.read_text(errors='replace')[-2500:]}")
    return "\n".join(parts)


def run_seed_cell(
    impl: str, workdir: Path, conf: Path, nat: str, refuses: bool, name: str
) -> CellResult:
    spec = CellSpec(
        CellIntent(
            nat_a=nat,
            nat_b=nat,
            ice_policy="all",
            turn_transports=("udp", "tcp", "tls"),
            relay_refuses_lab_peers=refuses,
        ),
        scenario=name,
        relay_impl=impl,
        relay_config_file=str(conf),
        # The seed config has one listening-ip, so no RFC 5780 (OTHER-ADDRESS): the NAT probe
        # cannot classify against it. The presets are verified in tests/lab/ and by the other
        # scenarios; here the relay config is what is under test.
        verify_nats=False,
        keep_artifacts=True,  # the relay's pcap is the evidence of its 403s
    )
    result = run_cell(spec, workdir)
    print(
        f"\n[{impl}] {name}: expected={result.row.expected} outcome={result.row.outcome}"
        f" path={result.row.path} relay_protocol={result.row.relay_protocol}"
        f" error={result.row.error}"
    )
    return result


@pytest.mark.parametrize("impl", RELAY_IMPLS)
def test_seed_config_refuses_lab_peers(impl: str, workdir: Path, certs: LabCerts) -> None:
    conf = seed_config(workdir / f"seed-{impl}" / "turnserver.conf", impl, certs)
    result = run_seed_cell(impl, workdir, conf, "symmetric", True, "seed-verbatim")
    report = cell_report(result)
    assert result.row.expected == "fail", report
    assert result.row.outcome == "fail", report
    assert not str(result.row.error or "").startswith("lab-error"), report
    # the failure is the relay's refusal (403 to peers in 198.18.0.0/15), not a broken lab:
    # read the relay's answers to the agents' CreatePermission/ChannelBind from the cell's
    # capture (run_cell keeps relay.pcap of a failed cell; UDP allocations only, TLS is opaque)
    assert result.artifacts is not None, report
    answers = permission_answers(result.artifacts / "relay.pcap")
    print(f"[{impl}] relay answers to permission requests (method, peer, answer): {answers}")
    lab_peer_403 = [
        key for key in answers if key[2] == "403" and ipaddress.ip_address(key[1]) in LAB_INTERNET
    ]
    granted = [key for key in answers if key[2] == "success"]
    assert lab_peer_403, f"no 403 to a lab peer in the capture: {answers}\n{report}"
    assert not granted, f"permissions granted under the seed config: {granted}\n{report}"


@pytest.mark.parametrize("impl", RELAY_IMPLS)
def test_seed_config_direct_cell_unaffected(impl: str, workdir: Path, certs: LabCerts) -> None:
    conf = seed_config(workdir / f"seed-{impl}" / "turnserver.conf", impl, certs)
    result = run_seed_cell(impl, workdir, conf, "full-cone", True, "seed-verbatim-direct")
    report = cell_report(result)
    assert result.row.expected == "direct", report
    assert result.row.outcome == "direct", report


@pytest.mark.parametrize("impl", RELAY_IMPLS)
def test_seed_config_with_allowed_lab_internet_relays(
    impl: str, workdir: Path, certs: LabCerts
) -> None:
    conf = seed_config(
        workdir / f"seed-allowed-{impl}" / "turnserver.conf",
        impl,
        certs,
        extra=(f"allowed-peer-ip={LAB_INTERNET_ALLOWED}",),
    )
    result = run_seed_cell(impl, workdir, conf, "symmetric", False, "seed-allowed")
    report = cell_report(result)
    assert result.row.expected == "relay-udp", report
    assert result.row.outcome == "relay-udp", report


def permission_answers(pcap: Path) -> dict[tuple[str, str, str], int]:
    """(method, peer IP, "success" or error code) -> count, for CreatePermission and
    ChannelBind over UDP in a capture: requests matched to answers by transaction id."""
    # a project dependency; imported only where needed
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    from relay.stun import (
        ErrorCodeAttr,
        MessageClass,
        Method,
        StunDecodeError,
        XorPeerAddress,
        decode_message,
    )

    peers: dict[bytes, list[str]] = {}
    answers: dict[tuple[str, str, str], int] = {}
    for packet in rdpcap(str(pcap)):
        if UDP not in packet:
            continue
        try:
            msg = decode_message(bytes(packet[UDP].payload))
        except StunDecodeError:
            continue
        if msg.method not in (Method.CREATE_PERMISSION, Method.CHANNEL_BIND):
            continue
        if msg.msg_class == MessageClass.REQUEST:
            peers[msg.transaction_id] = [str(a.ip) for a in msg.get_all(XorPeerAddress)]
            continue
        error = msg.get(ErrorCodeAttr)
        answer = "success" if msg.msg_class == MessageClass.SUCCESS else str(error and error.code)
        for peer in peers.get(msg.transaction_id, []):
            key = (Method(msg.method).name, peer, answer)
            answers[key] = answers.get(key, 0) + 1
    return answers


# ---------------------------------------------------------------------------- part 2: hostile


def seed_denied_peer_ips() -> tuple[str, ...]:
    """The seed's active denied-peer-ip lines (commented ones stay commented)."""
    values = tuple(
        line.split("=", 1)[1].strip()
        for line in SEED_CONF.read_text().splitlines()
        if line.startswith("denied-peer-ip=")
    )
    assert "198.18.0.0-198.19.255.255" in values and "10.0.0.0-10.255.255.255" in values
    return values


def encodings(v4: str) -> list[tuple[str, str]]:
    """(encoding name, address) of one IPv4 target in each IPv4-in-IPv6 form."""
    ip = ipaddress.IPv4Address(v4)
    value = int(ip)
    return [
        ("ipv4", str(ip)),
        ("v4-mapped", f"::ffff:{ip}"),
        ("v4-compatible", f"::{ip}"),
        ("6to4", str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80)))),
        ("nat64", f"64:ff9b::{ip}"),
    ]


def hostile_targets() -> list[dict[str, Any]]:
    named = [
        ("svc", INTERNAL_SERVICE_IP),
        ("metadata", METADATA_IP),
        ("loopback", "127.0.0.1"),
    ]
    targets = [(f"{name} {kind}", address) for name, v4 in named for kind, address in encodings(v4)]
    targets += [
        ("unspecified v4", "0.0.0.0"),
        ("unspecified v6", "::"),
        ("loopback 127.1.2.3", "127.1.2.3"),
    ]
    return [
        {"label": label, "ip": ip, "port": HOSTILE_PORT_BASE + n}
        for n, (label, ip) in enumerate(targets)
    ]


class Sniffer:
    """tcpdump on one interface of one lab host, bounded in packets and seconds."""

    def __init__(self, lab: LabNetwork, role: str, intf: str) -> None:
        self.role, self.intf = role, intf
        argv = ["timeout", str(SNIFF_MAX_SECONDS), "tcpdump", "-i", intf, "-n", "-l"]
        argv += ["-c", str(SNIFF_MAX_PACKETS), SNIFF_FILTER]
        self.proc = lab.popen(role, argv, text=False)
        self.err = b""
        deadline = time.monotonic() + 10
        assert self.proc.stderr is not None
        while b"listening on" not in self.err and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if ready:
                self.err += os.read(self.proc.stderr.fileno(), 4096)
        if b"listening on" not in self.err:
            raise AssertionError(f"tcpdump on {role}:{intf} did not start: {self.err!r}")

    def stop(self) -> list[str]:
        """Stop (SIGTERM to its own process group, by PID) and return the captured lines."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate(timeout=5)
        self.err += err or b""
        return [line for line in out.decode(errors="replace").splitlines() if " > " in line]


def dst_port(line: str) -> int | None:
    # "12:00:00.000000 IP 10.10.0.2.40000 > 10.10.0.5.20003: UDP, length 40"
    match = re.search(r" > \S+\.(\d+): ", line)
    return int(match.group(1)) if match else None


def intf_of(lab: LabNetwork, role: str) -> str:
    return str(lab.node(role).defaultIntf().name)


UDP_ECHO = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(0.5)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[3])
for _ in range(1000):
    if time.monotonic() > deadline:
        break
    try:
        data, src = s.recvfrom(65535)
    except socket.timeout:
        continue
    s.sendto(b"ECHO " + data, src)
    print(src[0], src[1], data[:60], flush=True)
"""

UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for ip in sys.argv[2:]:
    s.sendto(b"self-check from the relay host", (ip, int(sys.argv[1])))
"""


def wait_ready(proc: subprocess.Popen[Any], what: str, timeout: float = 10.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            buffered += os.read(proc.stdout.fileno(), 4096)
            if b"ready" in buffered:
                return
    raise AssertionError(f"{what} did not start: {buffered!r}")


def reachability_from_relay_host(lab: LabNetwork) -> dict[str, str]:
    """Part 3: the relay host pings the internal service and the metadata host."""
    results = {}
    for target in (INTERNAL_SERVICE_IP, METADATA_IP):
        ping = lab.run("rly", ["ping", "-c", "2", "-W", "1", "-i", "0.2", target], timeout=10)
        results[target] = "ok" if ping.returncode == 0 else f"FAILED: {ping.stdout[-300:]}"
    return results


def results_table(results: list[dict[str, Any]], leaks: dict[int, list[str]]) -> str:
    header = ("target", "address", "CreatePermission", "ChannelBind", "Send", "ChannelData")
    rows = [(*header, "leaked pkts")]
    for r in results:
        rows.append(
            (
                r["label"],
                r["ip"],
                r["create_permission"],
                r["channel_bind"],
                r["send"],
                r["channel_data"],
                str(len(leaks.get(r["port"], []))),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


REFUSED = re.compile(r"^(403|443)\b")


@pytest.mark.parametrize("impl", RELAY_IMPLS)
def test_hostile_client_cannot_reach_internal_targets(impl: str, workdir: Path) -> None:
    cell_dir = workdir / f"hostile-{impl}"
    spec = RelaySpec(
        impl=impl,
        secret=TURN_SECRET,
        denied_peer_ips=seed_denied_peer_ips(),
        allowed_peer_ips=(LAB_INTERNET_ALLOWED,),  # the lab default: the lab internet is public
        # as the seed; coturn 4.6 refuses loopback peers by default (allow-loopback-peers
        # turns them on) and no longer knows --no-loopback-peers (prints its usage, exits)
        extra_flags=(
            ("--no-loopback-peers", "--no-multicast-peers")
            if impl == "inrepo"
            else ("--no-multicast-peers",)
        ),
    )
    targets = hostile_targets()
    with LabNetwork(RelayLan) as lab:
        # part 3 first: the relay host reaches both internal targets by routing
        reach = reachability_from_relay_host(lab)
        print(f"\n[{impl}] relay host -> internal targets: {reach}")
        assert all(v == "ok" for v in reach.values()), reach

        relay = start_relay(lab, spec, cell_dir)
        echo = lab.popen(
            "web", [sys.executable, "-c", UDP_ECHO, WEB_IP, str(CONTROL_PORT), "60"], text=False
        )
        wait_ready(echo, "UDP echo on the web host")
        sniffers = [
            Sniffer(lab, "svc", intf_of(lab, "svc")),
            Sniffer(lab, "md", intf_of(lab, "md")),
            Sniffer(lab, "rly", "lo"),
            Sniffer(lab, "web", intf_of(lab, "web")),
        ]
        # self-check: the relay *host* sends one datagram to each sniffed target; each sniffer
        # must see it (and it proves UDP from the relay host to 10.10.0.5 is routed)
        self_check = lab.run(
            "rly",
            [
                sys.executable,
                "-c",
                UDP_SEND,
                str(SELF_CHECK_PORT),
                INTERNAL_SERVICE_IP,
                METADATA_IP,
                "127.0.0.1",
                WEB_IP,
            ],
            timeout=10,
        )
        assert self_check.returncode == 0, self_check.stderr

        hostile = lab.run(
            "hos",
            [
                sys.executable,
                str(HOSTILE_CLIENT),
                "--server",
                f"{RELAY_IP}:{spec.port}",
                "--secret",
                TURN_SECRET,
                "--targets",
                json.dumps(targets),
                "--control",
                f"{WEB_IP}:{CONTROL_PORT}",
            ],
            timeout=90,
        )
        time.sleep(1.0)  # let anything in flight arrive before the sniffers stop
        captured = {(s.role, s.intf): s.stop() for s in sniffers}
        relay_alive = relay.alive()
        relay_log = relay.log()

    assert hostile.returncode == 0, f"hostile client: {hostile.stdout}\n{hostile.stderr}"
    report = json.loads(hostile.stdout.strip().splitlines()[-1])
    results = report["results"]
    hostile_ports = {t["port"]: t["label"] for t in targets}
    leaks: dict[int, list[str]] = {}
    self_seen: dict[tuple[str, str], int] = {}
    for where, lines in captured.items():
        for line in lines:
            port = dst_port(line)
            if port is not None and port in hostile_ports:
                leaks.setdefault(port, []).append(f"{where[0]}:{where[1]}: {line}")
            elif port == SELF_CHECK_PORT:
                self_seen[where] = self_seen.get(where, 0) + 1
    control_lines = [
        line
        for (role, _), lines in captured.items()
        if role == "web"
        for line in lines
        if dst_port(line) == CONTROL_PORT
    ]

    print(f"[{impl}] allocation {report.get('allocation')} for {report['username']}")
    print(results_table(results, leaks))
    print(
        f"[{impl}] control peer {WEB_IP}:{CONTROL_PORT}: {report.get('control')}, "
        f"{len(control_lines)} datagram(s) captured at the peer"
    )
    print(f"[{impl}] sniffer self-check packets seen: {self_seen}")

    problems = []
    for r in results:
        for step in ("create_permission", "channel_bind"):
            if not REFUSED.match(r[step]):
                problems.append(f"{r['label']} [{r['ip']}]: {step} -> {r[step]}")
    for port, lines in leaks.items():
        problems.append(f"LEAK to {hostile_ports[port]}: {lines[:3]}")
    for where in captured:
        if self_seen.get(where, 0) == 0:
            problems.append(f"sniffer {where} saw no self-check packet: the capture is blind")
    control = report.get("control") or {}
    if control.get("create_permission") != "success" or control.get("channel_bind") != "success":
        problems.append(f"positive control refused: {control}")
    if not control_lines:
        problems.append("positive control: the permitted peer captured nothing from the relay")
    for phase in ("send_echoes", "channel_data_echoes"):
        # an echo comes back as a Data indication, or as ChannelData once the channel is bound
        if not sum(control.get(phase, {}).values()):
            problems.append(f"positive control: no echo came back ({phase}): {control}")
    if not relay_alive:
        problems.append("the relay died during the run")
    assert not problems, "\n".join(problems) + f"\n--- relay log (tail)\n{relay_log[-3000:]}"
