"""Loss-curve plots (matplotlib, Agg backend) as base64 PNG for the self-contained HTML page.

The baseline's loss per step (black), each attempt of the trial (colours), each kill (a red ✕ on the
killed attempt's curve and a dashed red line), each resume (a green dotted line at the step resumed
from), and the first divergence (an orange band at its step).
"""

from __future__ import annotations

import base64
import io

#: Plots drawn per report; further failures are listed without one.
MAX_PLOTS = 30


def loss_plot_png(curves: dict, title: str = "") -> str:
    """A base64 PNG of ``curves`` (harness.certify.curves)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 2.8), dpi=80)
    try:
        base = curves.get("baseline") or []
        if base:
            ax.plot([p[0] for p in base], [p[1] for p in base], color="black", lw=2.2, alpha=0.45,
                    label="baseline (uninterrupted)")
        colours = ["#1f77b4", "#9467bd", "#17becf", "#8c564b"]
        for i, a in enumerate(curves.get("attempts") or []):
            pts = a.get("points") or []
            c = colours[i % len(colours)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, lw=1.2, marker=".", ms=4,
                        label=f"attempt {a['attempt']}")
            if a.get("fault_step") is not None:
                ax.axvline(a["fault_step"], color="red", ls="--", lw=0.9)
                ys = [p[1] for p in pts if p[0] == a["fault_step"]]
                if ys:
                    ax.plot([a["fault_step"]], ys[-1:], marker="x", color="red", ms=9, mew=2)
                ax.annotate(f"kill ({a.get('fault')})", (a["fault_step"], 1.0), xycoords=("data", "axes fraction"),
                            fontsize=7, color="red", ha="right", va="top", rotation=90)
            if a.get("resumed_from") is not None and a["attempt"] > 0:
                ax.axvline(a["resumed_from"], color="green", ls=":", lw=1.2)
                ax.annotate(f"resume {a['attempt']}", (a["resumed_from"], 0.0), xycoords=("data", "axes fraction"),
                            fontsize=7, color="green", ha="left", va="bottom", rotation=90)
        d = curves.get("divergence_step")
        if d is not None:
            ax.axvspan(d - 0.5, d + 0.5, color="orange", alpha=0.35, label=f"first divergence (step {d})")
        ax.set_xlabel("step")
        ax.set_ylabel(f"loss (rank {curves.get('rank', 0)})")
        if title:
            ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.25)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


__all__ = ["loss_plot_png", "MAX_PLOTS"]
