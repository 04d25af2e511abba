"""Start a TURN/STUN relay on a lab host: ours (``inrepo``) or coturn (``coturn``), with
equivalent settings, so a scenario can swap one for the other.

Both are started with command-line flags (our relay takes coturn's), or from a turnserver.conf
when a scenario wants to use one verbatim. Readiness is checked the same way for both: a STUN
Binding request to the listening address gets an answer from inside the relay host.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lab.topologies.addressing import RELAY_IPS
from reports.vocabulary import RELAY_IMPLS, RelayImpl

if TYPE_CHECKING:
    from lab.session import LabNetwork

READY_TIMEOUT = 10.0

# A tiny STUN Binding check run inside the relay host: exit 0 when the server answers.
_PROBE = """
import os, socket, sys
from relay.stun.message import Message, decode_message, encode_message
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
req = encode_message(Message.request(0x001, os.urandom(12)))
for _ in range(5):
    s.sendto(req, (sys.argv[1], int(sys.argv[2])))
    try:
        decode_message(s.recvfrom(2048)[0]); sys.exit(0)
    except (socket.timeout, Exception):
        pass
sys.exit(1)
"""


@dataclass(frozen=True)
class RelaySpec:
    impl: str = RelayImpl.INREPO
    listening_ips: tuple[str, ...] = RELAY_IPS
    port: int = 3478
    tls_port: int = 443
    udp_443: bool = True  # seed 000: STUN/TURN on UDP 443 too
    rfc5780: bool = True
    realm: str = "natlab"
    secret: str = "natlab-rest-secret"
    min_port: int = 32355  # seed 000's relay range
    max_port: int = 65535
    denied_peer_ips: tuple[str, ...] = ()
    allowed_peer_ips: tuple[str, ...] = ()
    cert: str | None = None
    pkey: str | None = None
    config_file: str | None = None  # use this turnserver.conf instead of flags
    extra_flags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.impl not in RELAY_IMPLS:
            raise ValueError(f"unknown relay {self.impl!r}; valid: {', '.join(RELAY_IMPLS)}")


def relay_command(spec: RelaySpec, log_file: Path) -> list[str]:
    if spec.impl == RelayImpl.INREPO:
        argv = [sys.executable, "-m", "relay", "--log-file", str(log_file)]
    else:
        binary = shutil.which("turnserver") or "turnserver"
        argv = [binary, "--log-file", str(log_file), "--simple-log", "--no-stdout-log"]
        # no --no-dtls: coturn's UDP listener on the TLS port (DTLS) also answers plain
        # STUN/TURN, which is how coturn serves TURN over UDP on 443 (seed 000)
        argv += ["--no-cli", "--pidfile", str(log_file.with_suffix(".pid"))]
    if spec.config_file:
        # the file as written; only what a lab cell needs on top of it comes as flags
        argv += ["-c", spec.config_file]
        if spec.impl == RelayImpl.INREPO and spec.udp_443:
            argv += ["--extra-udp-port", str(spec.tls_port)]
        argv += [f"--denied-peer-ip={ip}" for ip in spec.denied_peer_ips]
        argv += [f"--allowed-peer-ip={ip}" for ip in spec.allowed_peer_ips]
        return [*argv, *spec.extra_flags]
    argv += ["-n", "-p", str(spec.port), "--min-port", str(spec.min_port)]
    argv += ["--max-port", str(spec.max_port), "-r", spec.realm, "--fingerprint"]
    argv += ["--use-auth-secret", "--static-auth-secret", spec.secret]
    for ip in spec.listening_ips:
        argv += ["-L", ip]
    argv += ["-E", spec.listening_ips[0]]
    if spec.impl == RelayImpl.INREPO:
        if spec.rfc5780 and len(spec.listening_ips) > 1:
            argv.append("--rfc5780")
        if spec.udp_443:
            argv += ["--extra-udp-port", str(spec.tls_port)]
    elif not spec.rfc5780:
        argv.append("--no-rfc5780")
    if spec.cert and spec.pkey:
        argv += ["--tls-listening-port", str(spec.tls_port), "--cert", spec.cert]
        argv += ["--pkey", spec.pkey]
    else:
        argv.append("--no-tls")
    for ip in spec.denied_peer_ips:
        argv.append(f"--denied-peer-ip={ip}")
    for ip in spec.allowed_peer_ips:
        argv.append(f"--allowed-peer-ip={ip}")
    return [*argv, *spec.extra_flags]


@dataclass
class RelayProcess:
    spec: RelaySpec
    role: str
    proc: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_relay(lab: LabNetwork, spec: RelaySpec, workdir: Path, role: str = "rly") -> RelayProcess:
    """Start the relay on ``role`` and wait until it answers a Binding request."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / f"relay-{spec.impl}.log"
    argv = relay_command(spec, log_file)
    proc = lab.popen(
        role, argv, stdout=subprocess.DEVNULL, stderr=log_file.with_suffix(".err").open("wb")
    )
    relay = RelayProcess(spec, role, proc, log_file)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        check = lab.run(
            role, [sys.executable, "-c", _PROBE, spec.listening_ips[0], str(spec.port)], timeout=5
        )
        if check.returncode == 0:
            return relay
    err = (
        log_file.with_suffix(".err").read_text(errors="replace")
        if log_file.with_suffix(".err").exists()
        else ""
    )
    raise RuntimeError(
        f"{spec.impl} relay did not come up on {spec.listening_ips[0]}:{spec.port}\n"
        f"command: {' '.join(argv)}\nstderr: {err[-2000:]}\nlog: {relay.log()[-2000:]}"
    )
