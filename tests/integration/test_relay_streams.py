"""The relay over TCP and TLS on loopback (RFC 8656 §3.1): aioice agents, TLS versions, certificate
reload, allocations that die with their connection, and the extra UDP port.

TLS with aioice 0.13: ``Connection(turn_ssl=...)`` is passed unchanged to
``turn.create_turn_endpoint(ssl=...)`` and from there to ``loop.create_connection(ssl=...)``, so
an ``ssl.SSLContext`` that trusts only the test certificate is given as ``turn_ssl`` (no
monkeypatching, no SSL_CERT_FILE). The certificate carries SAN IP:127.0.0.1 because asyncio
uses the server host as server_hostname and the default context checks it.

Relay-only agents (TransportPolicy.RELAY) gather no host candidates, so loopback is enough, as in
test_relay_udp.py.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aioice import Connection, TransportPolicy
from aioicepair import AIOICE_MESSAGES, SelectedPair, relay_pair_exchange
from conftest import StartRelay
from relayproc import counter, free_port, stun_binding_answers
from streamutil import (
    LOOPBACK,
    StreamTurnClient,
    assert_success,
    client_context,
    free_udp_port,
    make_cert,
    pem_fingerprint,
)

USER, PASSWORD, REALM = "user", "pass", "natlab"
LT_OPTIONS: dict[str, Any] = {
    "lt_cred_mech": True,
    "users": ((USER, PASSWORD),),
    "realm": REALM,
    "allow_loopback_peers": True,
}


@pytest.fixture(scope="session")
def lab_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("cert"))


# --- aioice over TCP and TLS -------------------------------------------------------------------


def _selected_types(pairs: list[SelectedPair]) -> list[tuple[str, str]]:
    return [(local, remote) for local, remote, _, _ in pairs]


def test_aioice_tcp_relay_pair(start_relay: StartRelay) -> None:
    server, _ = start_relay(**LT_OPTIONS, no_tls=True)
    tcp = server.addresses("tcp")
    assert tcp, server.listening
    pairs = asyncio.run(relay_pair_exchange(tcp[0], USER, PASSWORD, transport="tcp"))
    assert _selected_types(pairs) == [("relay", "relay")] * 2
    assert counter(server, "connections_tcp") >= 2
    assert counter(server, "relayed_to_peer_packets") >= 2 * AIOICE_MESSAGES
    assert counter(server, "relayed_to_client_packets") >= 2 * AIOICE_MESSAGES


def test_aioice_tls_extra_port_relay_pair(
    start_relay: StartRelay, lab_cert: tuple[Path, Path]
) -> None:
    cert, key = lab_cert
    tls_port = free_port()  # the "443-style" TLS port, next to the UDP/TCP listening port
    server, _ = start_relay(
        **LT_OPTIONS, cert=str(cert), pkey=str(key), tls_listening_port=tls_port
    )
    assert ("tls", (LOOPBACK, tls_port)) in server.listening, server.listening
    pairs = asyncio.run(
        relay_pair_exchange(
            (LOOPBACK, tls_port), USER, PASSWORD, transport="tcp", turn_ssl=client_context(cert)
        )
    )
    assert _selected_types(pairs) == [("relay", "relay")] * 2
    assert counter(server, "connections_tls") >= 2
    assert counter(server, "relayed_to_client_packets") >= 2 * AIOICE_MESSAGES


def test_aioice_tls_untrusted_cert_no_relay_candidate(
    start_relay: StartRelay, lab_cert: tuple[Path, Path], tmp_path: Path
) -> None:
    # The TLS test above must be able to fail: a client trusting another CA gets no candidate.
    cert, key = lab_cert
    other_cert, _ = make_cert(tmp_path, "other")
    server, _ = start_relay(**LT_OPTIONS, cert=str(cert), pkey=str(key), tls_listening_port=0)
    tls_addr = server.addresses("tls")[0]

    async def gather() -> list[str]:
        agent = Connection(
            ice_controlling=True,
            turn_server=tls_addr,
            turn_username=USER,
            turn_password=PASSWORD,
            turn_ssl=client_context(other_cert),  # type: ignore[arg-type]
            turn_transport="tcp",
            transport_policy=TransportPolicy.RELAY,
            use_ipv6=False,
        )
        try:
            await asyncio.wait_for(agent.gather_candidates(), 15)
            return [c.type for c in agent.local_candidates]
        finally:
            await asyncio.wait_for(agent.close(), 10)

    assert asyncio.run(gather()) == []


# --- TLS versions ------------------------------------------------------------------------------


def _tls11_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 at level >= 1
    return ctx


def _local_tls11_works(cert: Path, key: Path) -> str | None:
    """None if this OpenSSL can complete a TLS 1.1 handshake with itself; else the reason."""
    try:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        server_ctx.load_cert_chain(cert, key)
        client_ctx = _tls11_client()
    except (ssl.SSLError, ValueError) as err:
        return f"cannot configure TLS 1.1: {err}"
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    result: list[str | None] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(b, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(a) as tls:
            result.append(None if tls.version() == "TLSv1.1" else f"negotiated {tls.version()}")
    except (ssl.SSLError, OSError) as err:
        result.append(f"local OpenSSL cannot offer TLS 1.1: {err}")
    finally:
        a.close()
        thread.join(5)
        b.close()
    return result[0]


TLS11_DEPRECATED = "ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(TLS11_DEPRECATED)
def test_tls_version_1_1_client_refused(
    start_relay: StartRelay, lab_cert: tuple[Path, Path]
) -> None:
    cert, key = lab_cert
    reason = _local_tls11_works(cert, key)
    if reason is not None:
        pytest.skip(reason)
    server, _ = start_relay(**LT_OPTIONS, cert=str(cert), pkey=str(key), tls_listening_port=0)
    tls_addr = server.addresses("tls")[0]
    with (
        socket.create_connection(tls_addr, timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        _tls11_client().wrap_socket(raw).close()
    # control: TLS 1.2+ from the same machine works
    with StreamTurnClient(tls_addr, USER, PASSWORD, tls=client_context(cert)) as client:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        client.allocate()


@pytest.mark.filterwarnings(TLS11_DEPRECATED)
def test_tls_version_1_1_client_accepted_with_tlsv1_1_option(
    start_relay: StartRelay, lab_cert: tuple[Path, Path]
) -> None:
    # control for the test above: the same client handshakes once the server allows TLS 1.1
    cert, key = lab_cert
    reason = _local_tls11_works(cert, key)
    if reason is not None:
        pytest.skip(reason)
    server, _ = start_relay(
        **LT_OPTIONS,
        cert=str(cert),
        pkey=str(key),
        tls_listening_port=0,
        no_tlsv1_1=False,
        cipher_list="DEFAULT:@SECLEVEL=0",
    )
    tls_addr = server.addresses("tls")[0]
    with (
        socket.create_connection(tls_addr, timeout=5) as raw,
        _tls11_client().wrap_socket(raw) as tls,
    ):
        assert tls.version() == "TLSv1.1"


# --- certificate reload (SIGUSR2) ---------------------------------------------------------------


def test_tls_reload_new_cert_and_old_allocation_refreshes(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    cert_a, key_a = make_cert(tmp_path, "a", cn="natlab-test-a")
    cert_b, key_b = make_cert(tmp_path, "b", cn="natlab-test-b")
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(cert_a, live_cert)
    shutil.copy(key_a, live_key)
    server, _ = start_relay(
        **LT_OPTIONS, cert=str(live_cert), pkey=str(live_key), tls_listening_port=0
    )
    tls_addr = server.addresses("tls")[0]
    with StreamTurnClient(tls_addr, USER, PASSWORD, tls=client_context()) as old:
        assert old.peer_cert_fingerprint == pem_fingerprint(cert_a)
        old.allocate()
        shutil.copy(cert_b, live_cert)
        shutil.copy(key_b, live_key)
        loop = server.stream_servers[0].get_loop()
        done = asyncio.run_coroutine_threadsafe(_call(server.reload_tls), loop)
        done.result(5)
        with StreamTurnClient(tls_addr, USER, PASSWORD, tls=client_context()) as new:
            assert new.peer_cert_fingerprint == pem_fingerprint(cert_b)
            new.allocate()
        # the connection made before the reload keeps its allocation
        assert_success(old.refresh(600))


async def _call(fn: Any) -> None:
    fn()


# --- connection lifetime ----------------------------------------------------------------------


def _allocation_count(server: Any) -> int:
    for _ in range(100):
        try:
            return len(server.core.allocations.by_five_tuple)
        except RuntimeError:  # changed size while the server thread runs
            time.sleep(0.001)
    raise RuntimeError("could not count allocations")


def test_tcp_allocation_dies_with_connection(start_relay: StartRelay) -> None:
    server, _ = start_relay(**LT_OPTIONS, no_tls=True)
    tcp = server.addresses("tcp")[0]
    client = StreamTurnClient(tcp, USER, PASSWORD)
    try:
        client.allocate()
        assert _allocation_count(server) == 1
    finally:
        client.close()
    deadline = time.monotonic() + 2.0
    while _allocation_count(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _allocation_count(server) == 0
    assert counter(server, "allocations_deleted") >= 1


# --- extra UDP port -----------------------------------------------------------------------------


def test_udp_extra_port_answers_binding(start_relay: StartRelay) -> None:
    extra = free_udp_port()
    server, main = start_relay(extra_udp_ports=(extra,), no_tls=True)
    assert ("udp", (LOOPBACK, extra)) in server.listening, server.listening
    assert extra != main[1]
    assert stun_binding_answers(LOOPBACK, extra, timeout=2.0)
    assert stun_binding_answers(LOOPBACK, main[1], timeout=2.0)
