"""What the Markdown and HTML reports show, computed once from a certificate (templates only lay it out)."""

from __future__ import annotations

import math
import os
import re

STATUS_MARK = {"pass": "✅", "fail": "❌", "error": "⚠️", "n/a": "n/a", "not_run": "not run"}

#: A decimal literal in free text (not part of a version such as 2.13.0 or a name such as step10.pt).
_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e[-+]?\d+)?(?![\w.])")


def num(x) -> str:
    """A table cell: "-" for a missing value, floats to 4 significant digits (0.00135, 1e-07), ints as they are."""
    if x is None or x == "":
        return "-"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    if isinstance(x, (list, tuple)):
        return "(" + ", ".join(map(str, x)) + ("," if len(x) == 1 else "") + ")"
    return tidy(str(x))


def tidy(text) -> str:
    """Free text with its float literals shortened to 4 significant digits (0.0013499999999999999 -> 0.00135),
    or to as many more as keep the distinct values in the text distinct (a loss 0.6931471824645996 vs
    0.6931471228599548 stays two numbers: 0.6931472 vs 0.6931471)."""
    if text is None:
        return ""
    text = str(text)
    found = _FLOAT.findall(text)
    if not found:
        return text
    values = {float(f) for f in found}
    for digits in range(4, 18):
        if len({f"{v:.{digits}g}" for v in values}) == len(values):
            break
    return _FLOAT.sub(lambda m: f"{float(m.group(0)):.{digits}g}", text)


def environment(*, autoescape: bool):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
                             autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(num=num, tidy=tidy, plural=lambda n, word: f"{n} {word}" + ("" if n == 1 else "s"))
    return env


def failure_groups(failures: list[dict], cells: dict) -> list[dict]:
    """Failed trials of one cell that failed the same way (verdict, outcome, likely cause, and the fields and
    place of the first divergence) as one group, in the order of their first trial, with one example."""
    groups: dict[tuple, dict] = {}
    for t in failures:
        d = t.get("first_divergence") or {}
        cause = (t.get("diagnosis") or {}).get("cause")
        key = (t["cell"], t["verdict"], t["outcome"], cause, tuple(d.get("fields") or ()), d.get("where"))
        g = groups.get(key)
        if g is None:
            cell = cells.get(t["cell"]) or {}
            g = groups[key] = {"cell": t["cell"], "verdict": t["verdict"], "outcome": t["outcome"], "cause": cause,
                               "fields": list(d.get("fields") or ()), "where": d.get("where"), "example": t,
                               "trials": [], "cell_trials": cell.get("trials") or 0}
        g["trials"].append(t)
    out = list(groups.values())
    for g in out:
        g["count"] = len(g["trials"])
        # the example: the first trial with a plot, so that the group shows its curves
        g["example"] = next((t for t in g["trials"] if t.get("curves")), g["trials"][0])
    return out


def class_label(name: str) -> str:
    return "save: " + name.split(".", 1)[-1] if name.startswith("save:") else name.replace("_", " ")


def view(cert: dict, *, max_failures: int | None = None) -> dict:
    spec = cert["campaign"]["spec"]
    cells = {c["id"]: c for c in cert["cells"]}
    classes = list(spec["classes"])
    rows = []
    for s in spec["scenarios"]:
        for ws in spec["world_sizes"]:
            row = []
            for c in classes:
                cell = cells.get(f"{s['label']}|{c}|{ws}")
                if cell is not None:
                    row.append({**cell, "mark": STATUS_MARK[cell["status"]],
                                "text": f"{cell['passed']}/{cell['trials']}" if cell["trials"] else ""})
            rows.append({"scenario": s["label"], "world_size": ws, "cells": row})
    from harness.oracle import VerdictKind

    failures = [t for t in cert["trials"] if t["verdict"] != VerdictKind.PASS]
    shown = failures if max_failures is None else failures[:max_failures]
    groups = failure_groups(failures, cells)
    shown_groups = groups if max_failures is None else groups[:max_failures]
    env = cert["environment"]
    git = env.get("git") or {}
    return {
        "cert": cert, "spec": spec, "summary": cert["summary"], "campaign": cert["campaign"],
        "classes": [{"name": c, "label": class_label(c)} for c in classes], "rows": rows,
        "failures": shown, "more_failures": len(failures) - len(shown), "n_failures": len(failures),
        "groups": shown_groups, "more_groups": len(groups) - len(shown_groups),
        "env": env, "git": (git.get("commit", "")[:12] + (" (dirty)" if git.get("dirty") else "")) if git else "n/a",
        "examples": [t for t in cert["trials"] if t["verdict"] == VerdictKind.PASS and t.get("curves")],
        "na_cells": [c for c in cert["cells"] if c["status"] == "n/a"],
    }


__all__ = ["view", "environment", "class_label", "failure_groups", "num", "tidy", "STATUS_MARK"]
