"""The natlab command: clear errors for bad input, doctor, report, and Ctrl-C during a matrix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.session import lab_unavailable_reason

DATA = Path(__file__).resolve().parent.parent / "data" / "results"


def natlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout
    )


def test_natlab_unknown_nat_lists_the_valid_ones() -> None:
    result = natlab("matrix", "--nat", "bogus")
    assert result.returncode == 2
    assert "unknown NAT preset bogus" in result.stderr
    assert "port-restricted-cone" in result.stderr and "symmetric" in result.stderr
    assert "Traceback" not in result.stderr


def test_natlab_unknown_firewall_lists_the_valid_ones() -> None:
    result = natlab("matrix", "--firewall", "paranoid")
    assert result.returncode == 2
    assert "unknown firewall policy paranoid" in result.stderr and "udp-blocked" in result.stderr


def test_natlab_relay_passes_its_flags_to_the_relay(tmp_path: Path) -> None:
    conf = tmp_path / "turnserver.conf"
    conf.write_text("listening-port=3478\nmin-port=banana\n")
    result = natlab("relay", "-c", str(conf))  # "-c" first: argparse's REMAINDER dropped it
    assert result.returncode == 1, result.stderr
    assert f"{conf}:2: min-port" in result.stderr and "Traceback" not in result.stderr


def test_natlab_bad_cell_spec_is_one_line() -> None:
    result = natlab("run", "nat_a=nope")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "nope" in result.stderr


def test_natlab_report_wrong_schema_names_missing_columns() -> None:
    result = natlab("report", str(DATA / "wrong_schema.csv"))
    assert result.returncode == 2
    assert "missing columns" in result.stderr and "Traceback" not in result.stderr


def test_natlab_report_writes_html(tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    result = natlab("report", str(DATA / "normal_two_relays.csv"), "--html", str(html))
    assert result.returncode == 0, result.stderr
    assert html.exists() and "<html" in html.read_text()[:2000].lower()


def test_natlab_doctor_reports_netem_missing_and_the_rest_present() -> None:
    result = natlab("doctor")
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.strip()}
    # "relay" is the relay's C loop: make setup installs gcc and python3-dev to build it
    names = ("nftables", "iproute2", "bridge", "conntrack", "mininet", "coturn", "aioice", "relay")
    for name in names:
        assert lines[name].startswith("ok"), lines[name]
    netem_has = os.path.exists("/sys/module/sch_netem")
    assert lines["netem"].startswith("ok" if netem_has else "--"), lines["netem"]


@pytest.mark.lab
@pytest.mark.skipif(lab_unavailable_reason() is not None, reason=str(lab_unavailable_reason()))
def test_natlab_matrix_ctrl_c_keeps_completed_rows(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "matrix", "--nat", "full-cone", "--nat", "open",
         "--modes", "turn", "--jobs", "1", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 90
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if line.startswith("1/4"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + err
    results = list(tmp_path.glob("*/results.csv"))
    assert results, seen + err
    rows = results[0].read_text().strip().splitlines()
    assert 2 <= len(rows) <= 4  # header + the completed cells, not all four
