"""report.html: self-contained, opens offline, and shows its plots (rendered in headless
Chromium when it is installed; otherwise every image is checked to be embedded and decodable)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sparsexbar import simulate
from sparsexbar.app.report import write_comparison
from tests.nets import random_images, random_labels, tiny_cnn

PLOTS = ("energy_by_component.png", "per_layer_work.png", "accuracy_vs_energy.png")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = tiny_cnn(size=8)
    data = (random_images(12, size=8), random_labels(12))
    results = [simulate(net, data, hw="ideal-small", scheme=name).to_json()
               for name in ("dense", "sre")]
    out = tmp_path_factory.mktemp("report")
    paths = write_comparison(out, results)
    assert {p.name for p in paths} == {"comparison.csv", "report.html", *PLOTS}
    return out


def test_report_embeds_every_plot_and_needs_no_network(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(PLOTS)
    for encoded, name in zip(images, PLOTS, strict=True):
        assert base64.b64decode(encoded) == (report_dir / name).read_bytes()
    # No external resource of any kind: the page opens offline.
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "http://" not in html and "https://" not in html
    assert "Schemes and their parameters" in html and '&quot;mode&quot;: &quot;joint&quot;' in html


def test_report_summary_table_matches_the_csv(report_dir: Path) -> None:
    """The summary table shows comparison.csv's numbers with units: percentages, ratios."""
    import csv

    html = (report_dir / "report.html").read_text()
    table = html[html.index("<h2>Summary</h2>"):html.index("<h2>Plots</h2>")]
    headers = re.findall(r"<th>([^<]*)</th>", table)
    cells = [re.findall(r"<td>([^<]*)</td>", row) for row in table.split("<tr>")[2:]]
    rows = list(csv.DictReader((report_dir / "comparison.csv").open()))
    assert headers[:2] == ["scheme", "top-1 %"] and "speedup vs dense" in headers
    assert [c[0] for c in cells] == [r["scheme"] for r in rows] == ["dense", "sre"]
    for row, csv_row in zip(cells, rows, strict=True):
        shown = dict(zip(headers, row, strict=True))
        assert shown["top-1 %"] == f"{100 * float(csv_row['top1']):.2f}"
        assert shown["ADC conversions"] == f"{int(csv_row['adc_conversions']):,}"
        assert shown["conversions skipped %"] == f"{100 * float(csv_row['adc_reduction']):.2f}"
        assert shown["speedup vs dense"] == f"{float(csv_row['speedup']):.2f}x"


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (make test installs it "
                    "when it can); the embedding test above covers the page")
def test_report_renders_in_headless_chromium_offline(report_dir: Path, tmp_path: Path) -> None:
    browser = _chromium()
    assert browser is not None
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom",
           (report_dir / "report.html").resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    # The page's own load handler counts images that decoded with a non-zero width.
    assert f"images shown: {len(PLOTS)} of {len(PLOTS)}" in dom


def test_terminal_table_marks_each_scheme_that_changed_a_setting_with_its_own_footnote() -> None:
    """comprrae and combined both run MSB-first where the preset feeds LSB-first: the first
    is marked `*`, the second `**`, each caption line names its scheme and setting."""
    from sparsexbar.app.report import comparison_table

    net = tiny_cnn(size=8)
    data = (random_images(6, size=8), random_labels(6))
    hw = {"numbers.bit_order": "lsb_first"}
    results = [simulate(net, data, hw="ideal-small", scheme=name, overrides=hw).to_json()
               for name in ("dense", "comprrae", "combined")]
    table = comparison_table(results)
    labels = list(table.columns[0]._cells)
    assert labels == ["dense", "comprrae *", "combined **"], labels
    caption = str(table.caption).splitlines()
    assert caption[0].startswith("* comprrae: numbers.bit_order msb_first"), caption
    assert caption[1].startswith("** combined: numbers.bit_order msb_first"), caption
