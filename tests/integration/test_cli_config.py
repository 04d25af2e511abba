"""``python -m relay -c FILE``: a broken file stops the start with one line, a good one serves.

Loopback only; processes are ended by PID (relayproc.managed_process), every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_relay_server
from relayproc import LOOPBACK, ROOT, ManagedProcess, free_port, managed_process

from relay.stun.attributes import XorMappedAddress
from relay.stun.constants import MessageClass, Method
from relay.stun.message import Message, decode_message, encode_message

RUN_TIMEOUT_S = 30.0


def relay_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


@pytest.fixture(autouse=True)
def importable_from_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # the relay runs in tmp_path (so that error lines show the short file name)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))


def binding(host: str, port: int) -> Message:
    """One STUN Binding request over UDP (RFC 8489 §3), the decoded response."""
    request = Message.request(Method.BINDING, os.urandom(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(encode_message(request, fingerprint=True), (host, port))
        data, _ = sock.recvfrom(2048)
    response = decode_message(data)
    assert response.transaction_id == request.transaction_id
    return response


def tls_binding(host: str, port: int) -> Message:
    """The same over TLS (RFC 8656 §3.1); the test certificate is self-signed."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    request = Message.request(Method.BINDING, os.urandom(12))
    with (
        socket.create_connection((host, port), timeout=5.0) as raw,
        ctx.wrap_socket(raw, server_hostname="natlab-test") as tls,
    ):
        tls.sendall(encode_message(request))
        data = b""
        while len(data) < 20 or len(data) < 20 + int.from_bytes(data[2:4], "big"):
            chunk = tls.recv(2048)
            assert chunk, f"connection closed after {len(data)} bytes"
            data += chunk
    response = decode_message(data)
    assert response.transaction_id == request.transaction_id
    return response


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=natlab-test", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    return cert, key


def is_ready(p: ManagedProcess) -> bool:
    return p.wait_for_line(lambda line: line.startswith("[err]") and "ready" in line, 15.0)


@pytest.fixture
def relay_with_config(tmp_path: Path) -> Iterator[tuple[ManagedProcess, int, int]]:
    """`python -m relay -c good.conf`: UDP and TCP on one port, TLS on another."""
    require_relay_server()
    cert, key = self_signed(tmp_path)
    port, tls_port = free_port(), free_port()
    (tmp_path / "good.conf").write_text(
        "# natlab integration test: the seed's shape on loopback\n"
        f"listening-port={port}\n"
        f"tls-listening-port={tls_port}\n"
        f"listening-ip={LOOPBACK}\n"
        f"relay-ip={LOOPBACK}\n"
        "min-port=49152\nmax-port=65535\n"
        "fingerprint\nlt-cred-mech\nuse-auth-secret\n"
        "static-auth-secret=0123456789abcdef0123456789abcdef\n"
        "realm=example.org\n"
        f"cert={cert}\npkey={key}\n"
        'cipher-list="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"\n'
        "keep-address-family\nno-cli\nno-tlsv1\nno-tlsv1_1\n"
        "no-loopback-peers\nno-multicast-peers\n"
        "denied-peer-ip=10.0.0.0-10.255.255.255\n"
    )
    argv = relay_argv("-c", "good.conf")
    with managed_process(argv, ready=is_ready, port=port, cwd=tmp_path) as proc:
        yield proc, port, tls_port


def test_cli_config_broken_file_exits_1_with_one_line(tmp_path: Path) -> None:
    require_relay_server()
    (tmp_path / "broken.conf").write_text(
        "# broken on purpose\nlistening-ip=127.0.0.1\nrealm=example.org\nmin-port=70000\n"
    )
    done = subprocess.run(
        relay_argv("-c", "broken.conf"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 1, done
    assert done.stderr == "broken.conf:4: min-port: 70000 out of range 1..65535\n"
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_config_missing_file_exits_1(tmp_path: Path) -> None:
    require_relay_server()
    done = subprocess.run(
        relay_argv("-c", "absent.conf"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith("absent.conf: cannot read: ")
    assert done.stderr.count("\n") == 1


def test_cli_config_good_file_serves_and_stops_on_sigterm(
    relay_with_config: tuple[ManagedProcess, int, int],
) -> None:
    proc, port, tls_port = relay_with_config
    try:
        response = binding(LOOPBACK, port)
        assert (response.method, response.msg_class) == (Method.BINDING, MessageClass.SUCCESS)
        mapped = response.get(XorMappedAddress)
        assert mapped is not None and str(mapped.ip) == LOOPBACK
        over_tls = tls_binding(LOOPBACK, tls_port)
        assert over_tls.msg_class == MessageClass.SUCCESS
    except BaseException:
        print(proc.log)
        raise
    assert "no-cli: ignored" in proc.log
    assert proc.stop() == 0, proc.log
    assert "shutting down" in proc.log
    assert "Traceback" not in proc.log


def test_cli_config_flags_override_file(tmp_path: Path) -> None:
    require_relay_server()
    file_port, flag_port = free_port(), free_port()
    (tmp_path / "udp.conf").write_text(
        f"listening-ip={LOOPBACK}\nlistening-port={file_port}\nno-tcp\nno-tls\nrealm=example.org\n"
    )
    argv = relay_argv("-c", "udp.conf", "-p", str(flag_port))
    with managed_process(argv, ready=is_ready, cwd=tmp_path) as proc:
        assert f"udp {LOOPBACK}:{flag_port}" in proc.log, proc.log
        assert binding(LOOPBACK, flag_port).msg_class == MessageClass.SUCCESS
        assert f"tcp {LOOPBACK}" not in proc.log and "tls " not in proc.log
    assert proc.proc.returncode == 0, proc.log


def test_cli_no_stdout_log_logs_to_the_file_only(tmp_path: Path) -> None:
    # coturn's --no-stdout-log: with a log file, nothing on the console (the bench runs both
    # relays so, for the same logging cost)
    require_relay_server()
    port = free_port()
    log = tmp_path / "relay.log"
    argv = relay_argv(
        "-n", "-L", LOOPBACK, "-p", str(port), "--no-tcp", "--no-tls",
        "--log-file", str(log), "--no-stdout-log",
    )  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        response = None
        deadline = time.monotonic() + 15.0  # the start, bounded
        while response is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                response = binding(LOOPBACK, port)
            except OSError:  # not listening yet (refused) or no answer yet (timeout)
                time.sleep(0.1)
        assert response is not None and response.msg_class == MessageClass.SUCCESS
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err
    assert out == "" and err == "", (out, err)
    text = log.read_text()
    assert "ready: " in text and "shutting down" in text, text
