"""Loss-curve plots (matplotlib, Agg backend) as base64 PNG for the self-contained HTML page.

The baseline's loss per step (grey), each attempt of the trial (colours), each kill (a red ✕ on the
killed attempt's curve and a dashed red line), each resume (a green dotted line at the step resumed
from), and the first divergence (an orange band at its step). Every label is in the legend, outside
the axes, so none covers the data or a marker.

A divergence at the bit level leaves the resumed curve on top of the baseline's. For a trial with a
divergence a second panel shows it per step of each resumed attempt, against the baseline's same step:
how many ULPs apart the losses are (0: the same bits; symlog scale) and, where the trace says so, the
steps at which the parameters differ (their digests: whether, not by how much).

The figure is FIGSIZE inches at DPI: 1000 px wide, shown at the page's width (``width: 100%``).
"""

from __future__ import annotations

import base64
import io

#: Plots drawn per report; further failures are listed without one.
MAX_PLOTS = 30
FIGSIZE = (10.0, 3.5)
DIVERGENCE_HEIGHT = 2.0  # inches added for the divergence panel
DPI = 100
_COLOURS = ["#1f77b4", "#9467bd", "#17becf", "#8c564b"]


def _float_ulps(a: float, b: float) -> int:
    """ULPs between two recorded losses (floats): in float32 when both are float32 values (a float32 loss
    read back as a Python float), else in float64. For certificates without raw-byte deltas."""
    import numpy as np

    from harness.oracle.ulp import ulp

    fa, fb = np.float32(a), np.float32(b)
    if float(fa) == a and float(fb) == b:
        return ulp(fa, fb)
    return ulp(float(a), float(b))


def divergence_series(curves: dict) -> list[dict]:
    """Per resumed attempt: {"attempt", "loss": [[step, ulps], ...], "params": [step, ...]} (steps where the
    parameters differ), from the curves' raw-byte deltas, else from the recorded float losses."""
    base = {p[0]: p[1] for p in curves.get("baseline") or []}
    out = []
    for a in curves.get("attempts") or []:
        if not a.get("attempt"):
            continue  # attempt 0 ran before any resume
        deltas = a.get("deltas")
        if deltas is not None:
            loss = [[s, u] for s, u, _ in deltas if u is not None]
            params = [s for s, _, p in deltas if p]
        else:
            loss = [[s, _float_ulps(base[s], v)] for s, v in a.get("points") or [] if s in base]
            params = []
        if loss or params:
            out.append({"attempt": a["attempt"], "loss": loss, "params": params})
    return out


def loss_plot_png(curves: dict, title: str = "") -> str:
    """A base64 PNG of ``curves`` (harness.certify.curves)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    series = divergence_series(curves) if curves.get("divergence_step") is not None else []
    shown = any(x["loss"] and any(u for _, u in x["loss"]) or x["params"] for x in series)
    height = FIGSIZE[1] + (DIVERGENCE_HEIGHT if shown else 0)
    fig = plt.figure(figsize=(FIGSIZE[0], height), dpi=DPI)
    # the right 25% of the figure holds the legends, outside the data
    grid = fig.add_gridspec(2 if shown else 1, 1, height_ratios=[FIGSIZE[1], DIVERGENCE_HEIGHT] if shown else [1],
                            left=0.09, right=0.75, top=1 - 0.45 / height, bottom=0.55 / height, hspace=0.35)
    try:
        ax = fig.add_subplot(grid[0])
        base = curves.get("baseline") or []
        handles = []
        if base:
            handles += ax.plot([p[0] for p in base], [p[1] for p in base], color="black", lw=2.4, alpha=0.35,
                               label="baseline (uninterrupted)")
        for i, a in enumerate(curves.get("attempts") or []):
            pts = a.get("points") or []
            c = _COLOURS[i % len(_COLOURS)]
            if pts:
                handles += ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, lw=1.2, marker=".", ms=4,
                                   label=f"attempt {a['attempt']}")
            if a.get("fault_step") is not None:
                ax.axvline(a["fault_step"], color="red", ls="--", lw=0.9)
                ys = [p[1] for p in pts if p[0] == a["fault_step"]]
                if ys:
                    ax.plot([a["fault_step"]], ys[-1:], marker="x", color="red", ms=9, mew=2, ls="")
                fault = a.get("fault") or ""
                what = f"kill at {fault}" if fault.startswith("step ") else f"kill at step {a['fault_step']}: {fault}"
                handles.append(Line2D([], [], color="red", ls="--", lw=0.9, marker="x", ms=7, mew=2, label=what))
            if a.get("resumed_from") is not None and a["attempt"] > 0:
                ax.axvline(a["resumed_from"], color="green", ls=":", lw=1.4)
                handles.append(Line2D([], [], color="green", ls=":", lw=1.4,
                                      label=f"attempt {a['attempt']} resumed from step {a['resumed_from']}"))
        d = curves.get("divergence_step")
        if d is not None:
            handles.append(ax.axvspan(d - 0.5, d + 0.5, color="orange", alpha=0.35,
                                      label=f"first divergence (step {d})"))
        ax.set_ylabel(f"loss (rank {curves.get('rank', 0)})")
        if not shown:
            ax.set_xlabel("step")
        if title:
            ax.set_title(title, fontsize=10, loc="left")
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  frameon=False)
        ax.grid(alpha=0.25)
        if shown:
            _divergence_panel(fig.add_subplot(grid[1], sharex=ax), series, d)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _divergence_panel(ax, series: list[dict], divergence_step: int | None) -> None:
    handles = []
    for x in series:
        c = _COLOURS[x["attempt"] % len(_COLOURS)]
        if x["loss"]:
            handles += ax.plot([p[0] for p in x["loss"]], [p[1] for p in x["loss"]], color=c, lw=1.2, marker="o",
                               ms=3.5, label=f"loss: ULPs apart (attempt {x['attempt']})")
        if x["params"]:  # a row of ticks along the top: the steps at which the parameters differ
            handles += ax.plot(x["params"], [1.0] * len(x["params"]), ls="", marker="|", ms=9, mew=1.6,
                               color="#d62728", transform=ax.get_xaxis_transform(), clip_on=False,
                               label=f"parameters differ (attempt {x['attempt']})")
    if divergence_step is not None:
        ax.axvspan(divergence_step - 0.5, divergence_step + 0.5, color="orange", alpha=0.35)
    ax.set_yscale("symlog", linthresh=1.0)  # 0 ULPs (the same bits) stays on the axis
    top = max([u for x in series for _, u in x["loss"]] + [1])
    decades = len(str(int(top)))  # 10**decades > top
    every = max(1, -(-decades // 4))  # at most ~5 labelled ticks, however large the distance
    ticks = [0] + [10 ** k for k in range(0 if every == 1 else every, decades + 1, every)]  # 0 and 1 apart
    ax.set_yticks(ticks, ["0"] + [f"{t:.0e}".replace("e+0", "e").replace("e+", "e") if t >= 1000 else str(t)
                                  for t in ticks[1:]])
    ax.set_ylim(0, ticks[-1] * 1.5)
    ax.set_ylabel("ULPs apart\n(resumed vs baseline)", fontsize=8)
    ax.set_xlabel("step")
    ax.grid(alpha=0.25)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              frameon=False)


__all__ = ["loss_plot_png", "divergence_series", "MAX_PLOTS", "FIGSIZE", "DPI"]
