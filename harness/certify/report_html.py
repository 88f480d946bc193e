"""The certificate as one self-contained HTML page (Jinja2 template, plots embedded as base64 PNG, no
external resources): the summary matrix; the failures, grouped (the trials of a cell that failed the same
way: a count and one example, in a <details>, with its divergence table, diagnosis, replay command and
loss curves); example curves of passing trials; and the environment fingerprint."""

from __future__ import annotations

from harness.certify.plots import MAX_PLOTS, loss_plot_png
from harness.certify.report_view import environment, view

TEMPLATE = "certificate.html.j2"


def render(cert: dict) -> str:
    v = view(cert)
    plots, drawn = {}, 0
    for t in [g["example"] for g in v["groups"]] + v["examples"][:4]:
        key = (t["cell"], t["index"])
        if t.get("curves") and drawn < MAX_PLOTS and key not in plots:
            plots[key] = loss_plot_png(t["curves"], f"{t['cell']} trial {t['index']}: {t['plan']}")
            drawn += 1
    v["plot"] = lambda t: plots.get((t["cell"], t["index"]))
    v["examples"] = [t for t in v["examples"][:4] if (t["cell"], t["index"]) in plots]  # past MAX_PLOTS: none
    v["max_plots"] = MAX_PLOTS
    return environment(autoescape=True).get_template(TEMPLATE).render(v=v)


__all__ = ["render"]
