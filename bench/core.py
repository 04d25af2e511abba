"""Sans-IO relay core figures: codec and allocation throughput, no sockets involved.

The baseline is the cost of a bare ``bytes`` copy of the same packets, measured in the same
run, so the ratios say how far from "free" each path is on this machine.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable

import pandas as pd

from relay.stun.attributes import Data, Nonce, Realm, RequestedTransport, Username, XorPeerAddress
from relay.stun.channeldata import ChannelData
from relay.stun.constants import Method
from relay.stun.integrity import long_term_key
from relay.stun.message import Message, decode_message, encode_message
from relay.turn.addresses import FiveTuple, Transport
from relay.turn.auth import RestSecret, StaticUsers, rest_password
from relay.turn.config import TurnConfig
from relay.turn.core import TurnCore
from relay.turn.ports import MemoryRelayPorts, PortPool

N = 20_000


def _rate(fn: Callable[[int], float | None], n: int, repeat: int) -> float:
    """Median operations per second of ``fn(n)`` over ``repeat`` runs; a ``fn`` that times
    itself (to leave its set-up out) returns the seconds it measured."""
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        measured = fn(n)
        elapsed = measured if measured is not None else time.perf_counter() - start
        rates.append(n / elapsed)
    return statistics.median(rates)


def _core() -> tuple[TurnCore, bytes]:
    cfg = TurnConfig(realm="bench", authenticator=StaticUsers((("u", "p"),)))
    ports = MemoryRelayPorts(("198.18.0.2",), PortPool(1024, 65535, random.Random(0)))
    return TurnCore(cfg, ports), long_term_key("u", "bench", "p")


def run_core_benchmarks(repeat: int = 5) -> pd.DataFrame:
    import ipaddress

    peer = XorPeerAddress(ipaddress.ip_address("198.18.2.20"), 5000)
    payload = os.urandom(1200)
    send = encode_message(Message.indication(Method.SEND, os.urandom(12), peer, Data(payload)))
    channel = ChannelData(0x4000, payload).encode()

    def copy(n: int) -> None:
        for _ in range(n):
            bytes(bytearray(send))

    def decode(n: int) -> None:
        for _ in range(n):
            decode_message(send)

    def relay_channel(n: int) -> None:
        core, key = _core()
        now = 1_800_000_000.0
        ft = FiveTuple(("198.18.1.10", 4000), ("198.18.0.2", 3478), Transport.UDP)
        nonce = core.config.nonces.issue(now, ft.client[0])
        creds = (Username("u"), Realm("bench"), Nonce(nonce))
        msg = Message.request(Method.ALLOCATE, os.urandom(12), RequestedTransport(17), *creds)
        core.handle_client(now, ft, encode_message(msg, key=key))
        from relay.stun.attributes import ChannelNumber

        bind = Message.request(
            Method.CHANNEL_BIND, os.urandom(12), ChannelNumber(0x4000), peer, *creds
        )
        core.handle_client(now, ft, encode_message(bind, key=key))
        for _ in range(n):
            core.handle_client(now, ft, channel)

    def allocate(n: int) -> None:
        core, key = _core()
        now = 1_800_000_000.0
        for i in range(n):
            ft = FiveTuple(
                (f"198.18.{1 + i // 60000}.{i % 250}", 1024 + i % 60000),
                ("198.18.0.2", 3478),
                Transport.UDP,
            )
            nonce = core.config.nonces.issue(now, ft.client[0])
            msg = Message.request(
                Method.ALLOCATE,
                os.urandom(12),
                RequestedTransport(17),
                Username("u"),
                Realm("bench"),
                Nonce(nonce),
            )
            core.handle_client(now, ft, encode_message(msg, key=key))

    def full_allocation(n: int) -> float:
        """The server's side of n allocations as a TURN REST client makes them: Allocate ->
        401 (REALM, NONCE), then the authenticated Allocate. The requests are built first,
        with nonces issued as the core would (they are stateless), and only the core is timed."""
        secret, realm, now = "bench-secret", "bench", 1_800_000_000.0
        cfg = TurnConfig(realm=realm, authenticator=RestSecret((secret,)))
        core = TurnCore(cfg, MemoryRelayPorts(("198.18.0.2",), PortPool(1024, 65535)))
        username = f"{int(now) + 86400}:bench"
        key = long_term_key(username, realm, rest_password(secret, username))
        requests = []
        for i in range(n):
            ft = FiveTuple(
                (f"198.18.{1 + i // 60000}.{i % 250}", 1024 + i % 60000),
                ("198.18.0.2", 3478),
                Transport.UDP,
            )
            bare = Message.request(Method.ALLOCATE, os.urandom(12), RequestedTransport(17))
            creds = (Username(username), Realm(realm), Nonce(cfg.nonces.issue(now, ft.client[0])))
            auth = Message.request(Method.ALLOCATE, os.urandom(12), RequestedTransport(17), *creds)
            requests.append(
                (ft, encode_message(bare), encode_message(auth, key=key, fingerprint=True))
            )
        handle = core.handle_client
        start = time.perf_counter()
        for ft, first, second in requests:
            handle(now, ft, first)
            handle(now, ft, second)
        elapsed = time.perf_counter() - start
        assert core.counters["allocations_total"] == n, core.counters
        return elapsed

    baseline = _rate(copy, N, repeat)
    rows = []
    for name, fn, n in (
        ("decode Send indication (1200 B)", decode, N),
        ("core: ChannelData client->peer (1200 B)", relay_channel, N),
        ("core: authenticated Allocate", allocate, 3000),
        ("core: allocation (401 + REST Allocate)", full_allocation, 3000),
    ):
        rate = _rate(fn, n, repeat)
        rows.append({"figure": name, "ops_per_s": round(rate), "vs_bytes_copy": rate / baseline})
    rows.append(
        {
            "figure": "baseline: bytes copy (1200 B)",
            "ops_per_s": round(baseline),
            "vs_bytes_copy": 1.0,
        }
    )
    return pd.DataFrame(rows)
