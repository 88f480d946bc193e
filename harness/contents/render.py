"""Text and JSON output of `harness inspect` and `harness diff`."""

from __future__ import annotations

import json

from .diff import ContentsDiff, EntryDiff
from .model import OK, UNVERIFIED, CheckpointContents, entry_order, summarize

FORMAT_NAMES = {"native": "resume-harness checkpoint", "dcp": "torch.distributed.checkpoint (DCP) folder",
                "deepspeed": "DeepSpeed checkpoint", "accelerate": "HF Accelerate save_state folder",
                "torch": "torch.save file", "safetensors": "safetensors file",
                "pickle": "plain pickle file (read as data only)",
                "files": "folder of torch.save / safetensors files"}


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def inspect_text(c: CheckpointContents) -> str:
    lines = [f"{c.path}: {FORMAT_NAMES[c.format]}"]
    lines += [f"  {k}: {v}" for k, v in c.summary.items() if v is not None and k != "libraries"]
    checked = [f for f in c.files if f.status == OK]
    failed = c.failed_files
    if c.format == "native":
        head = f"files: {len(checked)} of {len(c.files)} verified against the manifest (xxh3-128)"
    else:
        head = f"files: {len(c.files)} (this format has no checksums: unverified)"
    lines += ["", head + (f"; {len(failed)} FAILED" if failed else "")]
    lines += _table([[f.status.upper() if f.status != UNVERIFIED else "-", f.path,
                      "" if f.size is None else f"{f.size} B", f.detail if f.status != OK else ""]
                     for f in c.files])
    for group in c.groups():
        keys = sorted((k for k in c.tensors if k[0] == group), key=entry_order)
        total = sum(c.tensors[k].nbytes for k in keys)
        lines += ["", f"{group}: {len(keys)} tensor(s), {total} bytes"]
        if keys:  # a group of state only (a `latest` pointer) has no tensor table
            lines += _table([["name", "dtype", "shape", "bytes", "xxh3-128"]]
                            + [[k[1], c.tensors[k].dtype, _shape(c.tensors[k].shape), str(c.tensors[k].nbytes),
                                c.tensors[k].digest()[:16]] for k in keys])
        for key in sorted((k for k in c.trees if k[0] == group), key=entry_order):
            tree = c.trees[key]
            items = summarize(tree)
            if isinstance(tree, dict):
                parts = []
                for k, v in tree.items():
                    if sum(len(p) + 2 for p in parts) > 100:  # one line; --json has the whole tree
                        parts.append("...")
                        break
                    parts.append(f"{k}={summarize(v, 40)}")
                items = ", ".join(parts)
            lines.append(f"  tree {key[1]}: {items}")
    for note in c.notes:
        lines.append(f"note: {note}")
    if failed:
        lines += [""] + [f"harness: error: {f.path}: {f.status}: {f.detail}" for f in failed]
    return "\n".join(lines)


def inspect_json(c: CheckpointContents) -> str:
    doc = {"path": c.path, "format": c.format, "ok": c.ok, "summary": c.summary,
           "files": [f.to_json() for f in c.files],
           "groups": {g: {"tensors": [c.tensors[k].to_json() for k in sorted(c.tensors, key=entry_order) if k[0] == g],
                          "state": {k[1]: v for k, v in sorted(c.trees.items(), key=lambda kv: entry_order(kv[0]))
                                    if k[0] == g}}
                      for g in c.groups()},
           "failed": [f.to_json() for f in c.failed_files], "notes": c.notes}
    return json.dumps(doc, indent=1, default=str)


def _tensor_line(d: EntryDiff) -> list[str]:
    where = f"{d.group}: {d.name}"
    if d.kind == "dtype":
        return [where, f"dtype {d.dtype_a} vs {d.dtype_b}", "", "", ""]
    if d.kind == "shape":
        return [where, f"shape {_shape(d.shape_a)} vs {_shape(d.shape_b)}", "", "", ""]
    abs_ = "" if d.max_abs_diff is None else f"{d.max_abs_diff:.6g}"
    ulp = "" if d.max_ulp is None else str(d.max_ulp)
    return [where, f"{d.n_diff}/{d.numel} differ", abs_, ulp, d.note]


def diff_text(d: ContentsDiff, limit: int = 50) -> str:
    lines = [f"A: {d.a.path} ({FORMAT_NAMES[d.a.format]})", f"B: {d.b.path} ({FORMAT_NAMES[d.b.format]})"]
    if d.a.format != d.b.format:
        lines.append("note: the formats differ, so most names will not match")
    if d.identical:
        lines.append(f"identical: {d.compared} tensor(s) bit-exact, {len(set(d.a.trees))} state tree(s) equal")
        return "\n".join(lines)
    lines.append(f"DIFFERENT: {len(d.tensors)} of {d.compared} common tensor(s) differ, {len(d.only_a)} only in A, "
                 f"{len(d.only_b)} only in B, {len(d.trees)} state difference(s)")
    if d.first is not None:
        f = d.first
        lines.append(f"first differing tensor: {f.group}: {f.name}")
    if d.tensors:
        lines += ["", "differing tensors:"]
        lines += _table([["tensor", "elements", "max abs diff", "max ULP", "note"]]
                        + [_tensor_line(t) for t in d.tensors[:limit]])
        if len(d.tensors) > limit:
            lines.append(f"  ... {len(d.tensors) - limit} more (--json lists all)")
    for label, keys in (("only in A (missing in B)", d.only_a), ("only in B (missing in A)", d.only_b)):
        if keys:
            lines += ["", f"tensors {label}: {len(keys)}"]
            lines += [f"  {g}: {n}" for g, n in keys[:limit]]
            if len(keys) > limit:
                lines.append(f"  ... {len(keys) - limit} more (--json lists all)")
    if d.trees:
        lines += ["", "state differences:"]
        for t in d.trees[:limit]:
            a = summarize(t.a) if t.present_a else "(absent)"
            b = summarize(t.b) if t.present_b else "(absent)"
            lines.append(f"  {t.group}: {t.tree}{'/' + t.path if t.path else ''}: A {a}  B {b}")
        if len(d.trees) > limit:
            lines.append(f"  ... {len(d.trees) - limit} more (--json lists all)")
    return "\n".join(lines)


def diff_json(d: ContentsDiff) -> str:
    doc = {"a": {"path": d.a.path, "format": d.a.format}, "b": {"path": d.b.path, "format": d.b.format},
           "identical": d.identical, "compared": d.compared,
           "first": None if d.first is None else d.first.to_json(),
           "tensors": [t.to_json() for t in d.tensors],
           "only_a": [{"group": g, "name": n} for g, n in d.only_a],
           "only_b": [{"group": g, "name": n} for g, n in d.only_b],
           "state": [t.to_json() for t in d.trees]}
    return json.dumps(doc, indent=1, default=str)
