"""The certificate as JSON: schema ``resume-harness-certificate``, version 1 (``certificate.json``).

Top level (every key always present)::

    schema       "resume-harness-certificate"
    version      1 (an incompatible change bumps it; readers refuse versions they do not know)
    campaign     {id: hash of spec + harness version, spec: {sut, strategy, backend, world_sizes, trials, seed,
                  scenarios: [{label, target, args}], classes: [...]}, shard: {index, count} | null,
                  shards: [{index, count, cells}], created: ISO time, command: str}
    environment  harness.fingerprint.fingerprint() (torch, deepspeed, python, CUDA, CPU/GPU, determinism
                 flags, harness version, git commit)
    summary      {verdict: pass|fail|error, exit_code: 0|1|2, complete: bool, trials, passed, failed, errors,
                  cells, cells_passed, cells_failed, cells_error, cells_na, cells_not_run, wall_s, trials_per_min}
    cells        [{id: "scenario|class|world size", scenario, fault_class, world_size,
                   status: pass|fail|error|n/a|not_run, trials, passed, failed, errors, reason: str | null}]
    trials       [{cell, index, plan, verdict, outcome, message, hint, diagnosis: {cause, summary, evidence} | null,
                   first_divergence: {step, rank, attempt, fields, tensors, where, note} | null, replay, wall_s,
                   out_dir, curves: harness.certify.curves | null}]
    baselines    {"scenario|world size": {last_step, committed, curve: [[step, loss], ...]}}

Verdict rules are ``harness run``'s, over all trials: fail (exit 1) if any trial failed; else error
(exit 2) if any trial errored or a cell was not run; else pass (exit 0). A cell is ``n/a`` when its
fault class cannot fire for that scenario (e.g. one rank other than 0 at world size 1), with the reason.
"""

from __future__ import annotations

import json
import os

from harness.certify.errors import CertifyError

SCHEMA = "resume-harness-certificate"
VERSION = 1
FILE = "certificate.json"

_TOP = ("schema", "version", "campaign", "environment", "summary", "cells", "trials", "baselines")
_CELL = ("id", "scenario", "fault_class", "world_size", "status", "trials", "passed", "failed", "errors", "reason")
_TRIAL = ("cell", "index", "plan", "verdict", "outcome", "message", "hint", "diagnosis", "first_divergence",
          "replay", "wall_s", "out_dir", "curves")
CELL_STATUSES = ("pass", "fail", "error", "n/a", "not_run")


def cell_record(cell, *, status=None, reason=None) -> dict:
    return {"id": cell.id, "scenario": cell.scenario, "fault_class": cell.fault_class, "world_size": cell.world_size,
            "status": status, "trials": 0, "passed": 0, "failed": 0, "errors": 0, "reason": reason}


def finish_certificate(cert: dict, spec_json: dict) -> dict:
    """Cell counts and statuses from the trials, not_run cells, and the summary (verdict and exit code)."""
    from harness.certify.matrix import CampaignSpec

    by_cell: dict[str, list] = {}
    for t in cert["trials"]:
        by_cell.setdefault(t["cell"], []).append(t)
    known = {c["id"]: c for c in cert["cells"]}
    cells = []
    for cell in CampaignSpec.from_json(spec_json).cells():
        rec = known.get(cell.id) or cell_record(cell, status="not_run", reason="no shard ran this cell")
        trials = by_cell.get(cell.id, [])
        if trials:
            n = {v: sum(t["verdict"] == v for t in trials) for v in ("pass", "fail", "error")}
            rec.update(trials=len(trials), passed=n["pass"], failed=n["fail"], errors=n["error"],
                       status="fail" if n["fail"] else "error" if n["error"] else "pass")
        cells.append(rec)
    cert["cells"] = cells
    trials = cert["trials"]
    count = {v: sum(t["verdict"] == v for t in trials) for v in ("pass", "fail", "error")}
    st = {s: sum(c["status"] == s for c in cells) for s in CELL_STATUSES}
    verdict = "fail" if count["fail"] else "error" if (count["error"] or st["not_run"]) else "pass"
    wall = cert["summary"].get("wall_s") or 0.0
    cert["summary"] = {
        "verdict": verdict, "exit_code": {"pass": 0, "fail": 1, "error": 2}[verdict],
        "complete": st["not_run"] == 0, "trials": len(trials), "passed": count["pass"], "failed": count["fail"],
        "errors": count["error"], "cells": len(cells), "cells_passed": st["pass"], "cells_failed": st["fail"],
        "cells_error": st["error"], "cells_na": st["n/a"], "cells_not_run": st["not_run"], "wall_s": wall,
        "trials_per_min": round(len(trials) / wall * 60, 1) if wall else None,
    }
    validate(cert)
    return cert


def validate(cert) -> None:
    """Check the structure of a certificate; CertifyError says which key is wrong."""
    if not isinstance(cert, dict):
        raise CertifyError("a certificate is a JSON object")
    if cert.get("schema") != SCHEMA:
        raise CertifyError(f"not a resume-harness certificate (schema {cert.get('schema')!r}, expected {SCHEMA!r})")
    if cert.get("version") != VERSION:
        raise CertifyError(f"certificate version {cert.get('version')!r} is not supported (this harness reads {VERSION})")
    missing = [k for k in _TOP if k not in cert]
    if missing:
        raise CertifyError(f"certificate lacks {', '.join(missing)}")
    for key in ("id", "spec", "shard"):
        if key not in cert["campaign"]:
            raise CertifyError(f"certificate campaign lacks {key!r}")
    for cell in cert["cells"]:
        miss = [k for k in _CELL if k not in cell]
        if miss or cell["status"] not in CELL_STATUSES:
            raise CertifyError(f"bad cell record {cell.get('id')!r}: missing {miss} or status {cell.get('status')!r}")
    for t in cert["trials"]:
        miss = [k for k in _TRIAL if k not in t]
        if miss or t["verdict"] not in ("pass", "fail", "error"):
            raise CertifyError(f"bad trial record {t.get('cell')!r}#{t.get('index')}: missing {miss}")


def write(cert: dict, out_dir: str) -> str:
    path = os.path.join(out_dir, FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cert, f, indent=1)
    os.replace(tmp, path)
    return path


def read(out_dir: str) -> dict:
    path = out_dir if out_dir.endswith(".json") else os.path.join(out_dir, FILE)
    try:
        with open(path) as f:
            cert = json.load(f)
    except FileNotFoundError:
        raise CertifyError(f"{out_dir} holds no certificate ({FILE}); give the --out folders of harness certify") from None
    except json.JSONDecodeError as e:
        raise CertifyError(f"{path} is not valid JSON: {e}") from None
    validate(cert)
    return cert


__all__ = ["SCHEMA", "VERSION", "FILE", "CELL_STATUSES", "cell_record", "finish_certificate", "validate", "write",
           "read"]
