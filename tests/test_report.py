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
from sparsexbar.report import write_comparison
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
