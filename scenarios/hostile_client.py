"""An authenticated but hostile TURN client, run inside the lab's internet host "hos".

It holds valid TURN REST credentials (the seed's recipe: username = expiry timestamp,
password = base64(HMAC-SHA1(secret, username))), allocates a UDP relay and then tries to make
the relay send datagrams to targets it must refuse: the relay's internal LAN, the cloud
metadata address, its loopback, each in every IPv4-in-IPv6 encoding. For every target it
tries, in order, CreatePermission, a Send indication, ChannelBind and ChannelData on the
channel it tried to bind. Last, a positive control: the same steps to a permitted public peer,
whose echo must come back through the relay.

Usage (inside a lab host; every wait is bounded)::

    python hostile_client.py --server 198.18.0.2:3478 --secret S \
        --targets '[{"label": "svc v4", "ip": "10.10.0.5", "port": 20000}, ...]' \
        --control 198.18.0.20:20099

Prints one JSON object: {"allocation": ..., "results": [...], "control": {...}}. A result's
"create_permission" / "channel_bind" is "success", "<code> <reason>", "no response" or
"error: ..." (the request could not even be encoded or sent).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import time
from typing import Any

from relay.stun import (
    ChannelData,
    ChannelNumber,
    Data,
    ErrorCodeAttr,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    StunDecodeError,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    decode_channel_data,
    decode_message,
    encode_message,
    is_channel_data,
    long_term_key,
)
from relay.stun.constants import UDP_PROTOCOL
from relay.turn.auth import rest_password

RECV_TIMEOUT_S = 1.5  # per request; the lab answers in milliseconds
MAX_DATAGRAMS_PER_WAIT = 200  # bound on datagrams skipped while waiting for one response
REPEATS = 3  # each Send indication / ChannelData goes out this many times
CHANNEL_BASE = 0x4000  # RFC 8656 §12: channel numbers 0x4000-0x4FFF
CONTROL_CHANNEL = 0x4FFF


class HostileClient:
    def __init__(self, server: tuple[str, int], username: str, password: str) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None
        self.inbound: list[bytes] = []  # datagrams that were not the awaited response

    def close(self) -> None:
        self.sock.close()

    def _recv(self, deadline: float) -> bytes | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            data, addr = self.sock.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
        return data if addr[:2] == self.server else b""

    def _response(self, tid: bytes, timeout: float = RECV_TIMEOUT_S) -> Message | None:
        deadline = time.monotonic() + timeout
        for _ in range(MAX_DATAGRAMS_PER_WAIT):
            data = self._recv(deadline)
            if data is None:
                return None
            try:
                msg = decode_message(data)
            except StunDecodeError:
                self.inbound.append(data)
                continue
            if msg.transaction_id == tid and msg.msg_class in (
                MessageClass.SUCCESS,
                MessageClass.ERROR,
            ):
                return msg
            self.inbound.append(data)
        return None

    def request(self, method: int, *attrs: Any) -> Message | None:
        """Long-term-credential request: learns REALM and NONCE from a 401, follows a 438."""
        for _ in range(3):
            tid = os.urandom(12)
            msg = Message.request(method, tid, *attrs)
            if self.key is not None:
                assert self.realm is not None and self.nonce is not None
                msg = msg.with_attributes(
                    Username(self.username), Realm(self.realm), Nonce(self.nonce)
                )
                wire = encode_message(msg, key=self.key, fingerprint=True)
            else:
                wire = encode_message(msg, fingerprint=True)
            self.sock.sendto(wire, self.server)
            response = self._response(tid)
            if response is None:
                return None
            code = error_code(response)
            realm, nonce = response.get(Realm), response.get(Nonce)
            if code in (401, 438) and nonce is not None and not (code == 401 and self.key):
                self.realm = realm.value if realm else self.realm
                self.nonce = nonce.value
                assert self.realm is not None
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return response
        return None

    def send_indication(self, ip: Any, port: int, data: bytes) -> None:
        # RFC 8656 §11: Send indications carry no MESSAGE-INTEGRITY
        msg = Message.indication(Method.SEND, os.urandom(12), XorPeerAddress(ip, port), Data(data))
        self.sock.sendto(encode_message(msg, fingerprint=True), self.server)

    def channel_data(self, channel: int, data: bytes) -> None:
        self.sock.sendto(ChannelData(channel, data).encode(), self.server)

    def drain(self, seconds: float) -> list[bytes]:
        """Every datagram from the server within ``seconds`` (plus any kept earlier)."""
        deadline = time.monotonic() + seconds
        for _ in range(MAX_DATAGRAMS_PER_WAIT):
            data = self._recv(deadline)
            if data is None:
                break
            self.inbound.append(data)
        got, self.inbound = self.inbound, []
        return got


def error_code(msg: Message) -> int | None:
    attr = msg.get(ErrorCodeAttr)
    return attr.code if attr is not None and msg.msg_class == MessageClass.ERROR else None


def describe(response: Message | None) -> str:
    if response is None:
        return "no response"
    if response.msg_class == MessageClass.SUCCESS:
        return "success"
    attr = response.get(ErrorCodeAttr)
    return f"{attr.code} {attr.reason}".strip() if attr else "error without ERROR-CODE"


def attempt(
    client: HostileClient, label: str, ip_text: str, port: int, channel: int
) -> dict[str, Any]:
    """CreatePermission, Send, ChannelBind, ChannelData towards one target."""
    ip = ipaddress.ip_address(ip_text)
    payload = f"HOSTILE {label} -> [{ip_text}]:{port}".encode()
    row: dict[str, Any] = {"label": label, "ip": ip_text, "port": port, "channel": channel}
    try:
        row["create_permission"] = describe(
            client.request(Method.CREATE_PERMISSION, XorPeerAddress(ip, port))
        )
    except Exception as err:  # report, never stop the sweep
        row["create_permission"] = f"error: {err}"
    try:
        for _ in range(REPEATS):
            client.send_indication(ip, port, payload + b" (Send)")
        row["send"] = f"sent x{REPEATS}"
    except Exception as err:
        row["send"] = f"error: {err}"
    try:
        row["channel_bind"] = describe(
            client.request(Method.CHANNEL_BIND, ChannelNumber(channel), XorPeerAddress(ip, port))
        )
    except Exception as err:
        row["channel_bind"] = f"error: {err}"
    try:
        for _ in range(REPEATS):
            client.channel_data(channel, payload + b" (ChannelData)")
        row["channel_data"] = f"sent x{REPEATS}"
    except Exception as err:
        row["channel_data"] = f"error: {err}"
    return row


def echoes(datagrams: list[bytes], channel: int) -> dict[str, int]:
    """Count Data indications and ChannelData frames (on ``channel``) among ``datagrams``."""
    counts = {"data_indications": 0, "channel_data": 0}
    for data in datagrams:
        if is_channel_data(data):
            try:
                if decode_channel_data(data).channel == channel:
                    counts["channel_data"] += 1
            except StunDecodeError:
                pass
            continue
        try:
            msg = decode_message(data)
        except StunDecodeError:
            continue
        if msg.method == Method.DATA and msg.msg_class == MessageClass.INDICATION:
            counts["data_indications"] += 1
    return counts


def control(client: HostileClient, ip_text: str, port: int) -> dict[str, Any]:
    """The positive control: a permitted public peer running an echo must hear us, first
    through Send indications, then through ChannelData (each phase's echoes counted apart)."""
    ip = ipaddress.ip_address(ip_text)
    client.drain(0.0)  # forget whatever arrived before
    result: dict[str, Any] = {"ip": ip_text, "port": port}
    result["create_permission"] = describe(
        client.request(Method.CREATE_PERMISSION, XorPeerAddress(ip, port))
    )
    for n in range(REPEATS):
        client.send_indication(ip, port, f"CONTROL Send {n}".encode())
    result["send_echoes"] = echoes(client.drain(0.5), CONTROL_CHANNEL)
    result["channel_bind"] = describe(
        client.request(
            Method.CHANNEL_BIND, ChannelNumber(CONTROL_CHANNEL), XorPeerAddress(ip, port)
        )
    )
    for n in range(REPEATS):
        client.channel_data(CONTROL_CHANNEL, f"CONTROL ChannelData {n}".encode())
    result["channel_data_echoes"] = echoes(client.drain(0.5), CONTROL_CHANNEL)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="relay IP:PORT (TURN over UDP)")
    parser.add_argument("--secret", required=True, help="TURN REST shared secret")
    parser.add_argument("--user", default="hostile")
    parser.add_argument("--targets", required=True, help="JSON list of {label, ip, port}")
    parser.add_argument("--control", help="permitted peer IP:PORT running a UDP echo")
    args = parser.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    username = f"{int(time.time()) + 3600}:{args.user}"
    client = HostileClient((host, int(port)), username, rest_password(args.secret, username))
    report: dict[str, Any] = {"username": username, "results": []}
    try:
        response = client.request(Method.ALLOCATE, RequestedTransport(UDP_PROTOCOL))
        relayed = response.get(XorRelayedAddress) if response else None
        if relayed is None:
            report["error"] = f"Allocate failed: {describe(response)}"
            print(json.dumps(report))
            return 1
        report["allocation"] = f"{relayed.ip}:{relayed.port}"
        targets = json.loads(args.targets)
        for n, target in enumerate(targets):
            label, address, peer_port = target["label"], target["ip"], int(target["port"])
            report["results"].append(attempt(client, label, address, peer_port, CHANNEL_BASE + n))
        report["unexpected_inbound"] = len(client.drain(0.5))
        if args.control:
            ip, _, cport = args.control.rpartition(":")
            report["control"] = control(client, ip, int(cport))
    finally:
        client.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
