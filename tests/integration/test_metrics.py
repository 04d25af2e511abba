"""Prometheus metrics (coturn's --prometheus): counters move with relayed traffic, the exposition
parses, and no label carries a username or an address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.error
import urllib.request
from typing import Any

from conftest import StartRelay
from prometheus_client.parser import text_string_to_metric_families
from rawturn import RawTurnClient, assert_success, error_code
from relayproc import LOOPBACK, counter

from relay.stun.attributes import Data, XorPeerAddress
from relay.stun.constants import MessageClass, Method
from relay.stun.message import decode_message

USER, PASSWORD, REALM = "metrics-user-7f3a", "pass", "natlab"
OPTIONS: dict[str, Any] = {
    "lt_cred_mech": True,
    "users": ((USER, PASSWORD),),
    "realm": REALM,
    "allow_loopback_peers": True,
    "prometheus": True,
    "prometheus_port": 0,
    "no_tls": True,
}
ALLOWED_LABELS = {"direction", "reason", "code"}
ADDRESS_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+|:\d+$|^\d{4,5}$")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: tuple[str, int]) -> tuple[str, Samples]:
    url = f"http://{address[0]}:{address[1]}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _relay_round_trip(server_addr: tuple[str, int], payload: bytes) -> None:
    """Allocate, permit, Send to a local UDP peer, peer replies, Data indication comes back."""
    with (
        RawTurnClient(server_addr, USER, PASSWORD) as client,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        peer.bind((LOOPBACK, 0))
        peer.settimeout(2)
        peer_port = peer.getsockname()[1]
        relayed = client.allocate()
        assert_success(client.create_permission(ipaddress.ip_address(LOOPBACK)))
        client.send_indication(ipaddress.ip_address(LOOPBACK), peer_port, payload)
        data, source = peer.recvfrom(2048)
        assert data == payload and source == relayed
        peer.sendto(payload[::-1], relayed)
        raw = client.recv_raw(2.0)
        assert raw is not None, "no Data indication"
        msg = decode_message(raw)
        assert (msg.method, msg.msg_class) == (Method.DATA, MessageClass.INDICATION)
        data_attr, from_attr = msg.get(Data), msg.get(XorPeerAddress)
        assert data_attr is not None and data_attr.data == payload[::-1]
        assert from_attr is not None and from_attr.port == peer_port


def test_metrics_counters_move_with_relayed_traffic(start_relay: StartRelay) -> None:
    server, addr = start_relay(**OPTIONS)
    assert server.metrics_address is not None and server.metrics_address[1] != 0
    _, before = scrape(server.metrics_address)
    payload = b"metrics payload " * 4
    _relay_round_trip(addr, payload)
    text, after = scrape(server.metrics_address)
    for name, labels in (
        ("turn_relayed_packets_total", {"direction": "to_peer"}),
        ("turn_relayed_packets_total", {"direction": "to_client"}),
        ("turn_allocations_created_total", {}),
        ("turn_permissions_created_total", {}),
    ):
        assert value(after, name, **labels) == value(before, name, **labels) + 1, (name, text)
    for direction in ("to_peer", "to_client"):
        moved = value(after, "turn_relayed_bytes_total", direction=direction) - value(
            before, "turn_relayed_bytes_total", direction=direction
        )
        assert moved == len(payload), (direction, text)
    # the client closed its socket but the UDP allocation lives on until it expires
    assert value(after, "turn_allocations") == 1
    assert value(after, "turn_permissions") == 1
    assert value(after, "turn_auth_challenges_total") >= 1
    assert counter(server, "relayed_to_peer_packets") == 1


def test_metrics_labels_without_users_or_addresses(start_relay: StartRelay) -> None:
    server, addr = start_relay(**OPTIONS)
    assert server.metrics_address is not None
    _relay_round_trip(addr, b"x" * 32)
    with RawTurnClient(addr, USER, "wrong password") as bad:
        response = bad.request(Method.ALLOCATE)
        assert error_code(response) == 401
    with RawTurnClient(addr, "no-such-user-9c1e", "pw") as unknown:
        assert error_code(unknown.request(Method.ALLOCATE)) == 401
    text, samples = scrape(server.metrics_address)
    assert sum(v for (n, _), v in samples.items() if n == "turn_auth_failures_total") >= 2, text
    client_port = str(addr[1])
    for (name, labels), _ in samples.items():
        for label, label_value in labels:
            assert label in ALLOWED_LABELS, (name, label, label_value)
            assert USER not in label_value and "no-such-user" not in label_value, (name, labels)
            assert LOOPBACK not in label_value and client_port != label_value, (name, labels)
            assert not ADDRESS_LIKE.search(label_value), (name, labels)
    assert USER not in text and "no-such-user" not in text and LOOPBACK not in text


def test_metrics_unknown_path_404(start_relay: StartRelay) -> None:
    server, _ = start_relay(**OPTIONS)
    assert server.metrics_address is not None
    host, port = server.metrics_address
    try:
        urllib.request.urlopen(f"http://{host}:{port}/secret", timeout=5)
    except urllib.error.HTTPError as err:
        assert err.code == 404
    else:
        raise AssertionError("GET /secret answered 200")
