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


#: Measured in the page once it has loaded (images decoded), then written into the DOM for --dump-dom.
MEASURE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top + scrollY, r.width, r.height]; };
  const hit = (a, b) => a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];
  const shown = e => e.checkVisibility();  // false inside a closed <details>
  const imgs = [...document.querySelectorAll("img.plot")];
  const text = [...document.querySelectorAll("h1, h2, h3, p, table, summary, li, pre")].filter(shown);
  const overlaps = [];
  for (const i of imgs.filter(shown)) for (const t of text)
    if (!t.contains(i) && hit(box(i), box(t))) overlaps.push(t.tagName + ": " + t.textContent.slice(0, 60));
  const out = {height: document.documentElement.scrollHeight, scrollWidth: document.documentElement.scrollWidth,
               innerWidth: innerWidth, text: document.body.innerText, overlaps: overlaps,
               imgs: imgs.map(i => ({natural: i.naturalWidth, width: box(i)[2], height: box(i)[3], shown: shown(i)}))};
  const pre = document.createElement("pre"); pre.id = "measured"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _readable_cert():
    """The synthetic certificate, made harder to read: a second kind of failure in another cell, a tensor with
    missing numbers, a float that prints as 0.0013499999999999999, and a bit-level divergence (the same
    losses; only the parameters differ) recorded as raw-byte deltas."""
    from certify_support import spec

    sp = spec(world_sizes=(1, 2, 3), classes=("step_kill", "one_rank", "all_ranks", "save:checkpoint.write"))
    cert = certificate(sp)
    fails = [t for t in cert["trials"] if t["verdict"] == "fail"]
    for t in fails:
        t["first_divergence"]["tensors"].append({"name": "rng:cuda", "dtype": None, "shape": None, "n_diff": None,
                                                 "max_abs_diff": None, "max_ulp": None, "note": None})
        t["diagnosis"]["evidence"] = "param_groups/0/lr 0.0015 vs 0.0013499999999999999 at step 11"
        base = t["curves"]["baseline"]
        for a in t["curves"]["attempts"]:  # the losses overlap exactly: only the parameters show it
            a["points"] = [[s, v] for s, v in base if s in {p[0] for p in a["points"]}]
            a["deltas"] = [[s, 0 if s < 14 else 2 ** (s - 14), s >= 11] for s, _ in a["points"]] if a["attempt"] else []
    other = next(t for t in cert["trials"] if t["cell"] == "default|all_ranks|3")
    other.update(verdict="fail", outcome="crash_on_resume", message="rank 1 exited 1 after the resume",
                 diagnosis=None, first_divergence=None)
    from harness.certify import report_json

    return report_json.finish_certificate(cert, sp.to_json())


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (.ci/run installs Debian's chromium)")
def test_page_is_readable_in_a_browser(tmp_path):
    import json
    import re

    cert = _readable_cert()
    page = report_html.render(cert)
    probe = tmp_path / "measure.html"
    probe.write_text(page.replace("</body>", MEASURE + "\n</body>"))
    common = [BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=90).stdout
    m = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    import html

    got = json.loads(html.unescape(m.group(1)))
    text = got["text"]
    assert not re.search(r"\bNone\b", text), text[max(0, text.find("None") - 200):text.find("None") + 100]
    assert not re.search(r"\d\.\d{9,}", text), re.search(r"\d\.\d{9,}", text).group(0)  # floats formatted
    assert "0.0015 vs 0.00135" in text
    # grouped: 2 failing trials of default|step_kill|3 are one group with one example; the crash is another
    assert text.count("default|step_kill|3 — 2 of 2 trials") == 1 and "default|all_ranks|3 — 1 of 2 trials" in text
    assert dom.count("<details") >= 2 and dom.count('class="failure"') == 2
    # plots: decoded, at the page's width, none drawn over the text, and no horizontal scrolling
    shown = [i for i in got["imgs"] if i["shown"]]
    assert got["imgs"] and all(i["natural"] >= 900 for i in got["imgs"])
    assert shown and all(i["width"] >= 900 for i in shown), shown
    assert not got["overlaps"], got["overlaps"]
    assert got["scrollWidth"] <= got["innerWidth"]
    # the height: the header, the matrix rows, one line per group, the plots shown, the environment; nothing more
    rows, groups = len(cert["campaign"]["spec"]["world_sizes"]), 2
    budget = 900 + 45 * rows + 150 * groups + sum(i["height"] for i in shown) + 400
    assert got["height"] <= budget, (got["height"], budget)
    # the bit-level divergence has its own panel: the figure is taller than a loss plot alone (3.5 in at 100 dpi)
    from harness.certify.plots import loss_plot_png, divergence_series

    fail = next(t for t in cert["trials"] if t["cell"] == "default|step_kill|3")
    assert divergence_series(fail["curves"])[0]["params"][0] == 11
    import base64
    import io

    import matplotlib.image

    png = matplotlib.image.imread(io.BytesIO(base64.b64decode(loss_plot_png(fail["curves"]))), format="png")
    assert png.shape[:2] == (550, 1000)
