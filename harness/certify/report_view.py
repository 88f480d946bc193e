"""What the Markdown and HTML reports show, computed once from a certificate (templates only lay it out)."""

from __future__ import annotations

import os

STATUS_MARK = {"pass": "✅", "fail": "❌", "error": "⚠️", "n/a": "n/a", "not_run": "not run"}


def environment(*, autoescape: bool):
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
                              autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


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
    failures = [t for t in cert["trials"] if t["verdict"] != "pass"]
    shown = failures if max_failures is None else failures[:max_failures]
    env = cert["environment"]
    git = env.get("git") or {}
    return {
        "cert": cert, "spec": spec, "summary": cert["summary"], "campaign": cert["campaign"],
        "classes": [{"name": c, "label": class_label(c)} for c in classes], "rows": rows,
        "failures": shown, "more_failures": len(failures) - len(shown),
        "env": env, "git": (git.get("commit", "")[:12] + (" (dirty)" if git.get("dirty") else "")) if git else "n/a",
        "examples": [t for t in cert["trials"] if t["verdict"] == "pass" and t.get("curves")],
        "na_cells": [c for c in cert["cells"] if c["status"] == "n/a"],
    }


__all__ = ["view", "environment", "class_label", "STATUS_MARK"]
