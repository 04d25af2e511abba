"""The HTML report on golden tables: sections, heatmaps, mismatch markers, NA handling, and
that the file is self-contained."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from reports.environment import collect_environment, relay_versions
from reports.html import render_html, write_html
from reports.schema import empty_table, read_results

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
DASH = "\u2013"  # en dash between interval bounds
SECTIONS = (
    "attention",
    "matrix",
    "ladder",
    "success",
    "timing",
    "throughput",
    "nat",
    "environment",
)
KNOWN_MISMATCHES = {
    ("inrepo", "matrix-turn", "symmetric", "symmetric"),
    ("inrepo", "matrix-stun", "restricted-cone", "symmetric"),
    ("coturn", "matrix-turn", "port-restricted-cone", "symmetric"),
}


def load(name: str) -> pd.DataFrame:
    return read_results([str(RESULTS / f"{name}.csv")])


class Page(HTMLParser):
    """Visible text, ids, images, heatmap tiles (relay, scenario, nat_a, nat_b) -> status."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.heatmaps: list[dict[str, str | None]] = []
        self.tiles: dict[tuple[str | None, ...], str | None] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._skip = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in ("style", "script"):
            self._skip += 1
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "img":
            self.images.append(str(a.get("src")))
        if tag == "table" and "heatmap" in (a.get("class") or ""):
            self.heatmaps.append(a)
        if tag == "td" and "data-status" in a:
            table = self.heatmaps[-1]
            key = (table["data-relay"], table["data-scenario"], a["data-nat-a"], a["data-nat-b"])
            self.tiles[key] = a["data-status"]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def normal() -> tuple[str, Page, dict[str, Any]]:
    """The normal two-relay table rendered once, with the collected environment."""
    frame = load("normal_two_relays")
    env = collect_environment(frame)
    html = render_html(frame, title="nightly", environment=env)
    return html, Page(html), env


def assert_no_leaks(page: Page, html: str) -> None:
    visible = page.visible
    assert not re.search(r"\bnan\b", visible, re.IGNORECASE), visible
    assert "<NA>" not in visible and "None" not in visible
    attrs = " ".join(str(v) for _, a in page.tags for k, v in a.items() if k != "src")
    assert not re.search(r"\bnan\b", attrs, re.IGNORECASE)
    assert not re.search(r"<NA>|\bNone\b", attrs)
    # self-contained: no external resource of any kind
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert "url(" not in html
    assert all(src.startswith("data:image/png;base64,") for src in page.images)


def test_reports_html_normal_has_every_section_and_heatmaps(normal: Any) -> None:
    html, page, _ = normal
    assert set(SECTIONS) <= page.ids
    assert {"relay-inrepo", "relay-coturn"} <= page.ids
    relays = {(t["data-relay"], t["data-scenario"]) for t in page.heatmaps}
    assert relays == {(r, s) for r in ("inrepo", "coturn") for s in ("matrix-stun", "matrix-turn")}
    assert len(page.tiles) == 100  # 2 relays x 2 modes x 5 x 5 NAT pairs
    assert len(page.images) == 3  # success rates, time to connect, throughput
    assert "nightly" in page.visible
    assert_no_leaks(page, html)


def test_reports_html_marks_known_mismatches(normal: Any) -> None:
    html, page, _ = normal
    marked = {k for k, status in page.tiles.items() if status == "mismatch"}
    assert marked == KNOWN_MISMATCHES
    assert page.tiles[("coturn", "matrix-stun", "full-cone", "symmetric")] == "lab-error"
    assert html.count('<span class="mark" title="mismatch">≠</span>') == len(KNOWN_MISMATCHES)


def test_reports_html_summary_header_first(normal: Any) -> None:
    html, page, _ = normal
    visible = page.visible
    assert visible.index("Mismatches 4") < visible.index("Outcome matrices")
    assert "113 of 118 trials" in visible
    assert "5 cells need attention" in visible
    assert html.index('id="attention"') < html.index('id="matrix"')


def test_reports_html_fallback_ladder_per_firewall_profile(normal: Any) -> None:
    visible = normal[1].visible
    for profile in ("recommended · firewall B open", "minimal · firewall B open", "udp-blocked"):
        assert profile in visible
    assert visible.count("below expected rung") == 1


def test_reports_html_success_rates_show_wilson_intervals() -> None:
    visible = Page(render_html(load("trials_mixed"))).visible
    assert "5/10" in visible
    assert f"23.7{DASH}76.3 %" in visible.replace("\u202f", " ")  # 5 of 10
    assert f"72.2{DASH}100.0 %" in visible.replace("\u202f", " ")  # 10 of 10
    assert "flaky" in visible


def test_reports_html_empty_cells_show_not_run() -> None:
    page = Page(render_html(load("empty_cells")))
    assert len(page.tiles) == 9
    assert page.visible.count("not run") >= 16 - 9
    assert "all cells as expected" in page.visible


def test_reports_html_all_failed() -> None:
    html = render_html(load("all_failed"))
    page = Page(html)
    assert set(page.tiles.values()) == {"mismatch"}
    assert "No time-to-connect values" in page.visible
    assert "No throughput values" in page.visible
    assert_no_leaks(page, html)


def test_reports_html_na_values_everywhere() -> None:
    html = render_html(load("na_values"), environment={"kernel": None, "nested": {"x": None}})
    page = Page(html)
    assert "unknown relay (NA)" in page.visible
    assert_no_leaks(page, html)


def test_reports_html_empty_table_and_relay_without_rows() -> None:
    html = render_html(empty_table(), relays=["inrepo"])
    page = Page(html)
    assert "no results" in page.visible
    assert "No result rows for this relay." in page.visible
    assert set(SECTIONS) <= page.ids
    assert_no_leaks(page, html)
    html = render_html(load("normal_two_relays"), relays=["pion", "inrepo"])
    page = Page(html)
    assert "No result rows for this relay." in page.visible
    assert page.visible.index("pion") < page.visible.index("inrepo natlab-relay")


def test_reports_html_single_trial() -> None:
    frame = load("trials_mixed")
    single = frame[frame["nat_a"] == "symmetric"]
    assert len(single) == 1
    page = Page(render_html(single))
    assert page.tiles == {("inrepo", "matrix-stun", "symmetric", "symmetric"): "ok"}
    assert f"0.0{DASH}79.3 %" in page.visible.replace("\u202f", " ")


def test_reports_html_nat_classification_flags_differing_probe(normal: Any) -> None:
    visible = normal[1].visible
    assert "symmetric APDM/APDF EIM/APDF 1 differs" in visible


def test_reports_html_write_html(tmp_path: Path) -> None:
    path = write_html(load("empty_cells"), tmp_path / "out" / "report.html", title="t")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_reports_html_escapes_text() -> None:
    frame = load("empty_cells")
    frame.loc[0, "error"] = "<script>alert(1)</script>"
    frame.loc[0, "outcome"] = "fail"
    html = render_html(frame, title="<b>x</b>")
    assert "<script>" not in html and "<b>x</b>" not in html


def test_reports_environment_collect(normal: Any) -> None:
    _, page, env = normal
    assert env["host"]["kernel"]
    assert env["python"].split()[-1].count(".") == 2
    assert env["packages"]["pandas"] == pd.__version__
    assert set(env["tools"]) == {"coturn", "nft"}
    assert env["relays"] == {"coturn": "coturn 4.6.1-1", "inrepo": "natlab-relay 0.1.0"}
    assert relay_versions(load("na_values")) == {"coturn": None, "inrepo": None}
    visible = page.visible
    assert env["host"]["kernel"] in visible
    assert "natlab-relay 0.1.0" in visible


@pytest.mark.parametrize("name", ["trials_mixed", "na_values", "empty_cells"])
def test_reports_html_no_leaks(name: str) -> None:
    html = render_html(load(name), environment=collect_environment(load(name)))
    assert_no_leaks(Page(html), html)
