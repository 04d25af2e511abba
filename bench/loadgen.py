"""The relay benchmark's load generator: one TURN client per process, driven over stdin.

Runs inside the client namespace (or on loopback) as ``python -m bench.loadgen`` and reads one
JSON command per line on stdin, answering each with one JSON line on stdout:

- ``{"cmd": "setup", "mode": "channel"|"send"|"direct", "server": [h, p], "peer": [h, p],
  "secret": S}``: for ``channel`` allocate (TURN REST credentials, the 401 dance) and bind
  channel 0x4000 to the peer; for ``send`` allocate and create a permission for the peer; for
  ``direct`` only connect the socket to the peer (the ceiling: no relay in the path).
- ``{"cmd": "blast", "size": N, "rate": PPS, "duration": S}``: send one pre-built datagram
  (ChannelData, Send indication or the bare payload) ``rate`` times a second (0: as fast as
  possible) for ``duration`` seconds; answers ``sent``, ``errors``, ``elapsed``, ``cpu``.
- ``{"cmd": "allocate", "server": [h, p], "secret": S, "count": N, "window": W,
  "hold": bool}``: N clients, each on its own UDP socket (its own 5-tuple), do the
  unauthenticated Allocate -> 401 -> authenticated Allocate dance, W of them in flight at
  once; answers ``ok``, ``failed``, ``elapsed`` and the generator's own ``cpu`` seconds.
  With ``hold`` the sockets (and so the allocations) stay open until ``{"cmd": "release"}``.
- ``{"cmd": "ping", "server": [h, p]}``: a STUN Binding request until answered.
- ``{"cmd": "quit"}``.

Every loop is bounded by a duration or a deadline. The data path is a tight loop of
``socket.send`` on a connected socket with a pre-built ``bytes`` object: Python has no
sendmmsg, so this is as cheap as a datagram gets from Python.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time
from collections import deque
from typing import Any

from relay.stun.attributes import (
    ChannelNumber,
    Data,
    ErrorCodeAttr,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
)
from relay.stun.constants import UDP_PROTOCOL, MessageClass, Method
from relay.stun.integrity import long_term_key
from relay.stun.message import Message, decode_message, encode_message
from relay.turn.auth import rest_password

CHANNEL = 0x4000
REQUEST_TIMEOUT_S = 2.0
ALLOCATE_SUCCESS = b"\x01\x03"  # Allocate success response (RFC 8656 §7.2)
ALLOCATE_ERROR = b"\x01\x13"
RTO_S = 0.5
MAX_TRIES = 5
MAX_BATCH = 256
Address = tuple[str, int]


def rest_username(ttl: int = 3600, user: str = "bench") -> str:
    return f"{int(time.time()) + ttl}:{user}"


def channel_data(payload: bytes, channel: int = CHANNEL) -> bytes:
    """A ChannelData frame (RFC 8656 §12.4); over UDP no padding is needed."""
    return struct.pack("!HH", channel, len(payload)) + payload


def send_indication(peer: Address, payload: bytes) -> bytes:
    ip = ipaddress.ip_address(peer[0])
    msg = Message.indication(
        Method.SEND, os.urandom(12), XorPeerAddress(ip, peer[1]), Data(payload)
    )
    return encode_message(msg)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _udp_socket(server: Address) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in server[0] else socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(server)
    return sock


class TurnSession:
    """One blocking TURN client (setup only: the data path never decodes anything)."""

    def __init__(self, server: Address, secret: str) -> None:
        self.server = server
        self.sock = _udp_socket(server)
        self.username = rest_username()
        self.password = rest_password(secret, self.username)
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None

    def request(self, method: int, *attrs: Any) -> Message:
        deadline = time.monotonic() + 4 * REQUEST_TIMEOUT_S
        for _ in range(4):
            tid = os.urandom(12)
            msg = Message.request(method, tid, *attrs)
            if self.key is not None:
                assert self.realm is not None and self.nonce is not None
                msg = msg.with_attributes(
                    Username(self.username), Realm(self.realm), Nonce(self.nonce)
                )
                data = encode_message(msg, key=self.key, fingerprint=True)
            else:
                data = encode_message(msg, fingerprint=True)
            self.sock.send(data)
            response = self._response(tid, deadline)
            err = response.get(ErrorCodeAttr) if response.msg_class == MessageClass.ERROR else None
            nonce, realm = response.get(Nonce), response.get(Realm)
            if err is not None and err.code in (401, 438) and nonce is not None:
                if err.code == 401 and self.key is not None:
                    return response
                self.realm = realm.value if realm is not None else self.realm
                self.nonce = nonce.value
                assert self.realm is not None
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return response
        raise RuntimeError(f"{Method(method).name}: still 401/438 after 4 attempts")

    def _response(self, tid: bytes, deadline: float) -> Message:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"no response from {self.server}")
            self.sock.settimeout(min(remaining, REQUEST_TIMEOUT_S))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            try:
                msg = decode_message(data)
            except Exception:  # not STUN (e.g. a stray ChannelData): skip it
                continue
            if msg.transaction_id == tid and msg.msg_class != MessageClass.INDICATION:
                return msg

    def expect_success(self, method: int, *attrs: Any) -> Message:
        response = self.request(method, *attrs)
        if response.msg_class != MessageClass.SUCCESS:
            err = response.get(ErrorCodeAttr)
            detail = (err.code, err.reason) if err else "no ERROR-CODE"
            raise RuntimeError(f"{Method(method).name} failed: {detail}")
        return response


class LoadGen:
    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.mode = "direct"
        self.peer: Address = ("127.0.0.1", 0)
        self.held: list[socket.socket] = []

    # ------------------------------------------------------------------ setup

    def setup(
        self, mode: str, server: Address | None, peer: Address, secret: str
    ) -> dict[str, Any]:
        if self.sock is not None:
            self.sock.close()
        self.mode, self.peer = mode, peer
        if mode == "direct":
            self.sock = _udp_socket(peer)
            return {"ok": True, "local": list(self.sock.getsockname()[:2])}
        assert server is not None
        session = TurnSession(server, secret)
        self.sock = session.sock
        session.expect_success(Method.ALLOCATE, RequestedTransport(UDP_PROTOCOL))
        ip = ipaddress.ip_address(peer[0])
        if mode == "channel":
            session.expect_success(
                Method.CHANNEL_BIND, ChannelNumber(CHANNEL), XorPeerAddress(ip, peer[1])
            )
        elif mode == "send":
            session.expect_success(Method.CREATE_PERMISSION, XorPeerAddress(ip, peer[1]))
        else:
            raise ValueError(f"unknown mode {mode!r}")
        self.sock.settimeout(None)
        return {"ok": True, "local": list(self.sock.getsockname()[:2])}

    def packet(self, size: int) -> bytes:
        payload = os.urandom(size)
        if self.mode == "channel":
            return channel_data(payload)
        if self.mode == "send":
            return send_indication(self.peer, payload)
        return payload

    # ------------------------------------------------------------------ data path

    def blast(self, size: int, rate: float, duration: float) -> dict[str, Any]:
        assert self.sock is not None, "setup first"
        data = self.packet(size)
        send = self.sock.send
        clock = time.perf_counter
        cpu0 = time.process_time()
        attempts = errors = 0
        start = clock()
        end = start + min(duration, 60.0)
        if rate <= 0:
            while clock() < end:
                for _ in range(MAX_BATCH):
                    try:
                        send(data)
                    except OSError:  # ENOBUFS, ECONNREFUSED from an ICMP error
                        errors += 1
                attempts += MAX_BATCH
        else:
            batch = max(1, min(MAX_BATCH, int(rate / 2000)))  # about 0.5 ms of traffic
            interval = batch / rate
            next_t = start
            while True:
                now = clock()
                if now >= end:
                    break
                if now < next_t:
                    time.sleep(next_t - now)
                    continue
                for _ in range(batch):
                    try:
                        send(data)
                    except OSError:
                        errors += 1
                attempts += batch
                next_t += interval
        elapsed = clock() - start
        return {
            "sent": attempts - errors,
            "errors": errors,
            "elapsed": elapsed,
            "cpu": time.process_time() - cpu0,
            "datagram": len(data),
        }

    # ------------------------------------------------------------------ allocations

    def allocate(
        self,
        server: Address,
        secret: str,
        count: int,
        window: int,
        hold: bool,
        timeout: float,
    ) -> dict[str, Any]:
        self.release()
        raise_nofile()
        username = rest_username()
        password = rest_password(secret, username)
        keys: dict[str, bytes] = {}
        socks: list[socket.socket] = []
        try:
            for _ in range(count):
                s = _udp_socket(server)
                s.setblocking(False)
                socks.append(s)
        except OSError as err:
            for s in socks:
                s.close()
            return {"ok": 0, "failed": count, "error": f"socket: {err}", "elapsed": 0, "cpu": 0}
        sel = selectors.DefaultSelector()
        # per client: [stage (0 unauth, 1 auth, 2 done, 3 failed), tid, data, sent_at, tries]
        state: list[list[Any]] = [[0, b"", b"", 0.0, 0] for _ in range(count)]
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_READ, i)
        waiting = deque(range(count))
        inflight: set[int] = set()
        ok = failed = 0
        clock = time.monotonic
        cpu0 = time.process_time()
        start = clock()
        deadline = start + timeout

        def transmit(i: int, data: bytes, tid: bytes) -> None:
            st = state[i]
            st[1], st[2], st[3] = tid, data, clock()
            st[4] += 1
            with contextlib.suppress(OSError):
                socks[i].send(data)

        def begin(i: int) -> None:
            tid = os.urandom(12)
            msg = Message.request(Method.ALLOCATE, tid, RequestedTransport(UDP_PROTOCOL))
            transmit(i, encode_message(msg, fingerprint=True), tid)
            inflight.add(i)

        def finish(i: int, success: bool) -> None:
            nonlocal ok, failed
            state[i][0] = 2 if success else 3
            inflight.discard(i)
            if success:
                ok += 1
            else:
                failed += 1
            if not hold:
                sel.unregister(socks[i])
                socks[i].close()

        last_sweep = start
        while (waiting or inflight) and clock() < deadline:
            while waiting and len(inflight) < window:
                begin(waiting.popleft())
            for key, _ in sel.select(0.05):
                i = key.data
                try:
                    data = socks[i].recv(65536)
                except OSError:
                    continue
                st = state[i]
                if st[0] > 1 or data[8:20] != st[1]:
                    continue  # late duplicate
                head = data[:2]
                if head == ALLOCATE_SUCCESS:
                    finish(i, True)
                    continue
                if head != ALLOCATE_ERROR:
                    continue
                try:
                    msg = decode_message(data)
                except Exception:
                    finish(i, False)
                    continue
                error, nonce, realm = msg.get(ErrorCodeAttr), msg.get(Nonce), msg.get(Realm)
                code = error.code if error else 0
                if code == 437 and st[0] == 1 and st[4] > 1:
                    finish(i, True)  # our retransmission met the allocation it made
                elif code in (401, 438) and nonce and realm and (st[0] == 0 or code == 438):
                    key_bytes = keys.get(realm.value)
                    if key_bytes is None:
                        key_bytes = long_term_key(username, realm.value, password)
                        keys[realm.value] = key_bytes
                    tid = os.urandom(12)
                    auth = Message.request(
                        Method.ALLOCATE,
                        tid,
                        RequestedTransport(UDP_PROTOCOL),
                        Username(username),
                        Realm(realm.value),
                        Nonce(nonce.value),
                    )
                    st[0], st[4] = 1, 0
                    transmit(i, encode_message(auth, key=key_bytes, fingerprint=True), tid)
                else:
                    finish(i, False)
            now = clock()
            if now - last_sweep >= 0.05:
                last_sweep = now
                for i in list(inflight):
                    st = state[i]
                    if now - st[3] >= RTO_S:
                        if st[4] >= MAX_TRIES:
                            finish(i, False)
                        else:
                            transmit(i, st[2], st[1])
        elapsed = clock() - start
        cpu = time.process_time() - cpu0
        unfinished = len(waiting) + len(inflight)
        sel.close()
        for i, s in enumerate(socks):
            if hold and state[i][0] == 2:
                self.held.append(s)
            else:
                s.close()
        return {
            "ok": ok,
            "failed": failed + unfinished,
            "elapsed": elapsed,
            "cpu": cpu,
        }

    def release(self) -> dict[str, Any]:
        n = len(self.held)
        for s in self.held:
            s.close()
        self.held.clear()
        return {"released": n}


def ping(server: Address, timeout: float) -> dict[str, Any]:
    """A STUN Binding request until a response comes back: the relay is up."""
    with _udp_socket(server) as sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tid = os.urandom(12)
            with contextlib.suppress(OSError):
                sock.send(encode_message(Message.request(Method.BINDING, tid)))
            try:
                data = sock.recv(2048)
            except (TimeoutError, OSError):
                continue
            if data[8:20] == tid:
                return {"ok": True}
    return {"ok": False, "error": f"no Binding response from {server}"}


def _address(value: Any) -> Address | None:
    return None if value is None else (str(value[0]), int(value[1]))


def handle(gen: LoadGen, cmd: dict[str, Any]) -> dict[str, Any]:
    name = cmd.get("cmd")
    if name == "setup":
        return gen.setup(
            str(cmd["mode"]), _address(cmd.get("server")), _address(cmd["peer"]) or ("", 0),
            str(cmd.get("secret", "")),
        )  # fmt: skip
    if name == "blast":
        return gen.blast(int(cmd["size"]), float(cmd["rate"]), float(cmd["duration"]))
    if name == "allocate":
        server = _address(cmd["server"])
        assert server is not None
        return gen.allocate(
            server,
            str(cmd["secret"]),
            int(cmd["count"]),
            int(cmd.get("window", 64)),
            bool(cmd.get("hold", False)),
            float(cmd.get("timeout", 60.0)),
        )
    if name == "release":
        return gen.release()
    if name == "ping":
        server = _address(cmd["server"])
        assert server is not None
        return ping(server, float(cmd.get("timeout", 1.0)))
    raise ValueError(f"unknown command {name!r}")


def main() -> int:
    raise_nofile()
    gen = LoadGen()
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("cmd") == "quit":
            break
        try:
            reply = handle(gen, cmd)
        except Exception as err:  # report, keep serving: the harness decides
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    gen.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
