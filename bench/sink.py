"""The relay benchmark's sink: count UDP datagrams arriving at the peer host.

Runs inside the peer namespace (or on loopback) as its own process:
``python -m bench.sink --bind HOST:PORT``. It prints ``{"ready": [host, port]}`` once bound,
then counts every datagram it reads. On SIGUSR1 it prints one JSON line with the running
totals (``packets``, ``bytes``, ``rcvbuf_errors``), so the harness takes a snapshot before and
after each trial and uses the difference; SIGTERM (or ``--max-seconds``) ends it.

``rcvbuf_errors`` is the UDP RcvbufErrors counter of the sink's network namespace
(/proc/net/snmp): datagrams the kernel dropped because the sink did not read them in time. In
a namespace of its own that counter is the sink's alone, and a non-zero delta says the
measurement, not the relay, lost those packets.

Deliberately standard library only, and tight: one ``recv_into`` into a preallocated buffer
per datagram.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time

RCVBUF = 32 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
POLL_S = 0.2  # recv timeout: how often the loop checks its deadline when idle


def udp_rcvbuf_errors() -> int:
    """UDP RcvbufErrors of this network namespace, or -1 when unreadable."""
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return -1
    if len(lines) < 2:
        return -1
    header, values = lines[0], lines[1]
    try:
        return int(values[header.index("RcvbufErrors")])
    except (ValueError, IndexError):
        return -1


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sink")
    p.add_argument("--bind", required=True, help="HOST:PORT to receive on (port 0: any)")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="exit after this long")
    args = p.parse_args(argv)
    host, port = _split(args.bind)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
            break
        except OSError:
            continue
    sock.bind((host, port))
    sock.settimeout(POLL_S)
    counts = [0, 0]  # packets, bytes (a list: the signal handler reads it)
    base_errors = udp_rcvbuf_errors()

    def report(_signum: int = 0, _frame: object = None) -> None:
        errors = udp_rcvbuf_errors()
        line = {
            "packets": counts[0],
            "bytes": counts[1],
            "rcvbuf_errors": errors - base_errors if min(errors, base_errors) >= 0 else -1,
            "t": time.monotonic(),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    stop = [False]

    def terminate(_signum: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    name = sock.getsockname()
    sys.stdout.write(json.dumps({"ready": [name[0], name[1]], "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    deadline = time.monotonic() + args.max_seconds
    buf = bytearray(65536)
    recv_into = sock.recv_into
    while not stop[0]:
        try:
            # a bounded inner loop without clock reads; the timeout breaks it when idle
            for _ in range(65536):
                n = recv_into(buf)
                counts[0] += 1
                counts[1] += n
                if stop[0]:
                    break
        except TimeoutError:
            pass
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
    sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
