"""The HTML certificate in a real browser (headless chromium): it renders the matrix and the plots."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.certify import report_html

from certify_support import certificate

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (.ci/run installs Debian's chromium)")
def test_page_renders_in_a_browser(tmp_path):
    page = tmp_path / "certificate.html"
    page.write_text(report_html.render(certificate()))
    url = page.as_uri()
    shot = tmp_path / "shot.png"
    common = [BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2000", url], capture_output=True,
                   timeout=90, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] == 2000 and pixels.shape[1] == 1200
    assert pixels[..., :3].std() > 0.05  # not blank
    red = ((pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.25) & (pixels[..., 2] < 0.3)).sum()
    green = ((pixels[..., 1] > 0.55) & (pixels[..., 0] < 0.3) & (pixels[..., 2] < 0.45)).sum()
    assert red > 500 and green > 500  # the matrix's red and green cells are painted

    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
    assert dom.count("data-cell=") == 6 and 'data-status="fail"' in dom
    assert dom.count('<img class="plot"') >= 3
    assert 'id="verdict">FAIL<' in dom
