"""The HTML report in a real browser: headless Chromium renders a golden table without console
errors, the DOM has the heatmaps and mismatch markers, and a screenshot is non-trivial.

Needs the Debian package ``chromium``; skipped (with the reason) when it is not on PATH.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from reports.environment import collect_environment
from reports.html import write_html
from reports.schema import read_results

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
TIMEOUT_S = 120
WIDTH, HEIGHT = 1400, 2400
# Console messages, script errors and failed loads all show up in Chromium's stderr log.
ERROR_PATTERNS = re.compile(r"Uncaught|CONSOLE|Failed to load resource|net::ERR_|Not allowed")


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not on PATH (Debian package chromium)")


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    frame = read_results([str(RESULTS / "normal_two_relays.csv")])
    return write_html(
        frame,
        tmp / "report.html",
        title="natlab matrix report",
        environment=collect_environment(frame),
        relays=["inrepo", "coturn"],
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_chromium_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    out = run_chromium(
        tmp_path,
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        report.as_uri(),
    )
    assert shot.exists(), f"no screenshot (exit {out.returncode}):\n{out.stderr[-3000:]}"
    data = shot.read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    assert len(data) > 50_000, "screenshot is suspiciously small (blank page?)"
    errors = [line for line in out.stderr.splitlines() if ERROR_PATTERNS.search(line)]
    assert not errors, "\n".join(errors)
    image = pytest.importorskip("PIL.Image")
    with image.open(shot) as im:
        colours = im.convert("RGB").resize((140, 240)).getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50, "screenshot has almost no content"


def test_report_chromium_dom_has_heatmaps(report: Path, tmp_path: Path) -> None:
    out = run_chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri())
    dom = out.stdout
    assert out.returncode == 0, out.stderr[-3000:]
    assert dom.count('class="heatmap"') == 4  # 2 relays x (STUN only, TURN)
    assert dom.count('data-status="mismatch"') == 3
    assert 'id="ladder"' in dom and 'id="environment"' in dom
    assert dom.count("data:image/png;base64,") == 3
    errors = [line for line in out.stderr.splitlines() if ERROR_PATTERNS.search(line)]
    assert not errors, "\n".join(errors)
