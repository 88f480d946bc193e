"""The certificate reads well: failures grouped with one example, no None cells, floats formatted, plots with
the legend outside the data and, for a bit-level divergence, the divergence itself per step."""

from __future__ import annotations

import base64
import io
import re

import numpy as np

from harness.certify import report_html, report_md
from harness.certify.curves import trial_curves
from harness.certify.plots import divergence_series, loss_plot_png
from harness.certify.report_view import num, tidy
from harness.oracle import load_trace

from certify_support import certificate, spec
from support.traces import baseline, resumed


def test_numbers_are_formatted_for_reading():
    assert tidy("param_groups/0/lr 0.0015 vs 0.0013499999999999999 at step 16") == \
        "param_groups/0/lr 0.0015 vs 0.00135 at step 16"
    assert tidy("lr 0.0022500000000000003 vs 0.0021") == "lr 0.00225 vs 0.0021"
    # values that differ only past the 4th digit keep the digits that tell them apart
    assert tidy("loss 0.6931471824645996 vs 0.6931471228599548") == "loss 0.6931472 vs 0.6931471"
    assert tidy("torch 2.13.0, step10.pt, 1e-08, 12 steps") == "torch 2.13.0, step10.pt, 1e-08, 12 steps"
    assert [num(x) for x in (None, 1e-07, 0.0013499999999999999, 3, [64, 16], [5], "")] == \
        ["-", "1e-07", "0.00135", "3", "(64, 16)", "(5,)", "-"]


def _cert():
    """Two failing trials of one cell that failed the same way, one of them with a tensor whose numbers are
    missing and a float that prints badly, and a crash in another cell."""
    sp = spec(world_sizes=(1, 3), classes=("step_kill", "all_ranks"))
    cert = certificate(sp)
    for t in cert["trials"]:
        if t["verdict"] == "fail":
            t["first_divergence"]["tensors"].append({"name": "rng:cuda", "dtype": None, "shape": None, "n_diff": None,
                                                     "max_abs_diff": None, "max_ulp": None, "note": None})
            t["diagnosis"]["evidence"] = "lr 0.0015 vs 0.0013499999999999999"
        if t["cell"] == "default|all_ranks|3" and t["index"] == 2:
            t.update(verdict="fail", outcome="crash_on_resume", message="rank 1 exited 1", diagnosis=None,
                     first_divergence=None, curves=None)
    from harness.certify import report_json

    return report_json.finish_certificate(cert, sp.to_json())


def test_markdown_groups_failures_without_none_cells():
    md = report_md.render(_cert())
    failures = md[md.index("### Failures"):]
    assert "3 failed trials in 2 groups" in failures
    assert failures.count("- **default|step_kill|3** — 2 of 2 trials: fail (divergence)") == 1
    assert "- **default|all_ranks|3** — 1 of 2 trials: fail (crash_on_resume)" in failures
    assert "trials: 1 (plan `12`), 2 (plan `12`)" in failures
    assert failures.count("<details><summary>example: trial") == 2 and failures.count("</details>") >= 2
    assert "| net.0.weight | float32 | (64, 16) | 3 | 1e-07 | 2 |  |" in failures
    assert "| rng:cuda | - | - | - | - | - |  |" in failures
    assert not re.search(r"\bNone\b", md) and "0.00135" in md and "0.0013499999999999999" not in md


def test_html_groups_failures_with_one_open_example():
    cert = _cert()
    page = report_html.render(cert)
    assert page.count('class="failure"') == 2 and 'data-count="2"' in page
    assert page.count("<details open>") == 1  # the first group's example is shown, the others fold
    examples = [t for t in cert["trials"] if t["verdict"] == "pass" and t["curves"]]
    assert len(examples) == 3 and page.count('<img class="plot"') == 1 + 3  # a group with curves, the examples
    assert not re.search(r">\s*None\s*<", page) and "<td>-</td>" in page
    assert "0.00135" in page and "0.0013499999999999999" not in page
    assert "width: 100%" in page


def _png_shape(b64: str) -> tuple[int, int]:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(base64.b64decode(b64)), format="png").shape[:2]


def test_curves_carry_the_bit_level_divergence_and_the_plot_shows_it(tmp_path):
    base = load_trace(baseline(tmp_path / "b").write())
    trial = resumed(tmp_path / "t")
    row = trial.row(0, 7, 1)  # step 7 after the resume: the loss 3 ULPs off, the parameters different
    row["loss"]["hex"] = (np.frombuffer(bytes.fromhex(row["loss"]["hex"]), np.uint32) + 3).tobytes().hex()
    trial.row(0, 8, 1)["params"] = "other"
    curves = trial_curves(base, load_trace(trial.write()), rank=0, divergence_step=7)
    deltas = {a["attempt"]: a["deltas"] for a in curves["attempts"]}
    assert deltas[1] == [[6, 0, False], [7, 3, False], [8, 0, True], [9, 0, False], [10, 0, False]]
    assert all(u == 0 and p is False for _, u, p in deltas[0])
    assert divergence_series(curves) == [{"attempt": 1, "loss": [[s, u] for s, u, _ in deltas[1]], "params": [8]}]
    # the loss curves overlap to the eye; a second panel shows the ULPs: a taller figure, 1000 px wide
    assert _png_shape(loss_plot_png(curves, "t")) == (550, 1000)
    passing = dict(curves, divergence_step=None)
    assert _png_shape(loss_plot_png(passing, "t")) == (350, 1000)


def test_plot_legend_is_outside_the_data():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    seen = {}
    real_close = plt.close

    def keep(fig):  # look at the figure before it is closed
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                seen.setdefault("pairs", []).append((legend.get_window_extent(renderer),
                                                     ax.get_window_extent(renderer)))
        real_close(fig)

    fail = next(t for t in certificate()["trials"] if t["verdict"] == "fail")
    plt.close = keep
    try:
        loss_plot_png(fail["curves"], "t")
    finally:
        plt.close = real_close
    assert len(seen["pairs"]) == 2  # the loss panel and the divergence panel
    for legend, axes in seen["pairs"]:
        assert legend.x0 >= axes.x1  # right of the axes: it covers no curve and no marker
