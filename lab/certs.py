"""A throwaway lab CA and one server certificate for the relay and signaling hosts.

Agents verify TURN over TLS against the relay's IP address (aioice) or its name (browsers:
Firefox wants a host name for ``turns:``), so the certificate carries IP subjectAltNames for
every lab server address and DNS ones for the lab names. Made with the openssl command line,
once per work directory.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.topologies.addressing import LAB_NAMES, RELAY_IPS, SIGNALING_IP, WEB_IP


@dataclass(frozen=True)
class LabCerts:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def lab_certs(directory: Path) -> LabCerts:
    """The CA and server certificate in ``directory``, made once. Cells started together share
    the directory: a lock serialises the making, and the files appear only when complete."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = LabCerts(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if certs.ca.exists() and certs.cert.exists() and certs.key.exists():
            return certs
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            made = _make(Path(tmp))
            for src, dst in ((made.key, certs.key), (made.cert, certs.cert), (made.ca, certs.ca)):
                os.replace(src, dst)
    return certs


def _make(directory: Path) -> LabCerts:
    certs = LabCerts(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key = directory / "ca.key"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-days",
        "2",
        "-subj",
        "/CN=natlab lab CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(certs.ca),
    )
    csr = directory / "server.csr"
    _openssl(
        "req", *ec, "-subj", "/CN=natlab-lab-server", "-keyout", str(certs.key), "-out", str(csr)
    )
    sans = ",".join(
        [f"IP:{ip}" for ip in (*RELAY_IPS, SIGNALING_IP, WEB_IP)]
        + [f"DNS:{name}" for name in (*LAB_NAMES, "natlab-lab-server")]
    )
    ext = directory / "server.ext"
    # a CA-signed leaf that is not a CA itself: Firefox refuses a CA:TRUE leaf
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(certs.ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(certs.cert),
    )
    return certs
