"""Deterministic slices of a campaign (``--shard i/N``) and the merge of their certificates.

Shard i of N (1-based) runs the cells whose position in the campaign's fixed cell order is
congruent to i-1 modulo N: the shards partition the matrix exactly, every cell in one shard, and
each shard gets every world size and fault class in turn (similar cost). ``merge`` joins
certificates of one campaign (same ``campaign.id``) into one; it refuses certificates of different
campaigns and a cell certified twice, and marks cells no shard ran as ``not_run``.
"""

from __future__ import annotations

import re

from harness.certify.errors import CertifyError

_SHARD_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*\Z")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` with 1 <= i <= N, or None."""
    if text is None:
        return None
    m = _SHARD_RE.match(str(text))
    if not m:
        raise CertifyError(f"--shard takes i/N (e.g. 2/4: the second of 4 slices), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise CertifyError(f"--shard {text}: out of range; shards are numbered 1..N with N >= 1 (e.g. 1/{max(n, 1)} "
                           f"to {max(n, 1)}/{max(n, 1)})")
    return i, n


def select(cells: list, shard: tuple[int, int] | None) -> list:
    if shard is None:
        return list(cells)
    i, n = shard
    return [c for k, c in enumerate(cells) if k % n == i - 1]


def merge(certificates: list[dict]) -> dict:
    """One certificate from shards of one campaign (see the module docstring)."""
    from harness.certify.report_json import finish_certificate, validate

    if not certificates:
        raise CertifyError("merge needs at least one certificate folder")
    for c in certificates:
        validate(c)
    first = certificates[0]
    cid = first["campaign"]["id"]
    for c in certificates[1:]:
        if c["campaign"]["id"] != cid:
            raise CertifyError(f"these certificates come from different campaigns: {cid} "
                               f"({_describe(first)}) vs {c['campaign']['id']} ({_describe(c)}); "
                               "merge only the shards of one campaign (same SUT, strategy, world sizes, trials, seed)")
    cells: dict[str, dict] = {}
    shards = []
    for c in certificates:
        shards += c["campaign"].get("shards") or []
        for cell in c["cells"]:
            prev = cells.get(cell["id"])
            if cell["status"] == "not_run":
                cells.setdefault(cell["id"], cell)
                continue
            if prev is not None and prev["status"] != "not_run":
                raise CertifyError(f"cell {cell['id']} was certified by two of the given folders (the same shard "
                                   "twice?); give each shard once")
            cells[cell["id"]] = cell
    order = [cell["id"] for cell in first["cells"]]
    trials = [t for c in certificates for t in c["trials"]]
    trials.sort(key=lambda t: (order.index(t["cell"]) if t["cell"] in order else len(order), t["index"]))
    spec_json = first["campaign"]["spec"]
    envs = [c["environment"] for c in certificates]
    merged = {
        "schema": first["schema"], "version": first["version"],
        "campaign": {**first["campaign"], "shard": None, "shards": sorted(shards, key=lambda s: s.get("index", 0)),
                     "merged_from": len(certificates)},
        "environment": envs[0], "environments": envs if any(e != envs[0] for e in envs) else None,
        "cells": [cells[i] for i in order if i in cells], "trials": trials,
        "summary": {"wall_s": round(sum(c["summary"]["wall_s"] for c in certificates), 3)},
        "baselines": {k: v for c in certificates for k, v in (c.get("baselines") or {}).items()},
    }
    return finish_certificate(merged, spec_json)


def _describe(c: dict) -> str:
    s = c["campaign"]["spec"]
    return (f"sut {s['sut']}, strategy {s['strategy']}, world sizes {','.join(map(str, s['world_sizes']))}, "
            f"trials {s['trials']}, seed {s['seed']}")


__all__ = ["parse_shard", "select", "merge"]
