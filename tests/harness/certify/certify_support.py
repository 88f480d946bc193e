"""Synthetic profiles and certificates for the certify tests (no processes)."""

from __future__ import annotations

from harness.certify import report_json
from harness.certify.matrix import CampaignSpec, ScenarioSpec
from harness.certify.schedule import Profile


def default_profile(ws: int = 3) -> Profile:
    """The default scenario's shape: 24 steps, saves at 5/10/15/20; rank 0 writes 7 files per save, others 2."""
    saves = (5, 10, 15, 20)
    points = {}
    for rank in range(ws):
        per = {"checkpoint.begin": 1, "checkpoint.write": 7 if rank == 0 else 2, "checkpoint.fsync": 1,
               "checkpoint.committed": 1}
        if rank == 0:
            per.update({"checkpoint.manifest": 1, "checkpoint.commit": 1})
        for name, n in per.items():
            points.setdefault(name, {})[rank] = [s for s in saves for _ in range(n)]
        if rank == 0:
            points.setdefault("checkpoint.rotate", {})[0] = [15, 20]
    return Profile(ws, 24, saves, points)


def spec(**kw) -> CampaignSpec:
    base = dict(sut="reference", strategy="ddp", backend="gloo", world_sizes=(1, 3), trials=2, seed=0,
                scenarios=(ScenarioSpec("default", "default"),), classes=("step_kill", "one_rank", "save:checkpoint.write"))
    base.update(kw)
    return CampaignSpec(**base)


def _curves(div):
    return {"rank": 0, "baseline": [[s, 1.0 / s] for s in range(1, 25)],
            "attempts": [{"attempt": 0, "points": [[s, 1.0 / s] for s in range(1, 13)], "fault_step": 12, "fault": "step 12",
                          "resumed_from": None},
                         {"attempt": 1, "points": [[s, 1.0 / s + (0.01 if s >= 11 else 0)] for s in range(11, 25)],
                          "fault_step": None, "fault": None, "resumed_from": 10}],
            "divergence_step": div}


def trial(cell_id: str, k: int, verdict: str = "pass", plan: str = "12") -> dict:
    failed = verdict == "fail"
    return {"cell": cell_id, "index": k, "plan": plan, "verdict": verdict,
            "outcome": "divergence" if failed else "bit_exact" if verdict == "pass" else "fault_not_fired",
            "message": "step 11, rank 0, attempt 1: params, optimizer differ" if failed else "ok",
            "hint": None,
            "diagnosis": {"cause": "reduction_order", "summary": "only the update differs at world size >= 3",
                          "evidence": "params differ at step 11"} if failed else None,
            "first_divergence": {"step": 11, "rank": 0, "attempt": 1, "fields": ["params", "optimizer"],
                                 "tensors": [{"name": "net.0.weight", "dtype": "float32", "shape": [64, 16], "n_diff": 3,
                                              "max_abs_diff": 1e-7, "max_ulp": 2, "note": ""}],
                                 "where": "trace", "note": ""} if failed else None,
            "replay": f"harness run default --nproc 3 --kill {plan}", "wall_s": 1.0, "out_dir": None,
            "curves": _curves(11 if failed else None) if (failed or k == 1) else None}


def certificate(sp: CampaignSpec | None = None, *, fail_ws3: bool = True, shard=None, cells=None) -> dict:
    """A certificate of ``sp`` (or a slice of its cells): ws-3 step_kill trials fail, one_rank at ws 1 is n/a."""
    sp = sp or spec()
    recs, trials = [], []
    for cell in cells if cells is not None else sp.cells():
        if cell.fault_class == "one_rank" and cell.world_size == 1:
            recs.append(report_json.cell_record(cell, status="n/a", reason="needs world size >= 2"))
            continue
        recs.append(report_json.cell_record(cell))
        for k in range(1, sp.trials + 1):
            bad = fail_ws3 and cell.world_size == 3 and cell.fault_class == "step_kill"
            trials.append(trial(cell.id, k, "fail" if bad else "pass"))
    cert = {"schema": report_json.SCHEMA, "version": report_json.VERSION,
            "campaign": {"id": sp.campaign_id, "spec": sp.to_json(),
                         "shard": {"index": shard[0], "count": shard[1]} if shard else None,
                         "shards": [{"index": shard[0] if shard else 1, "count": shard[1] if shard else 1,
                                     "cells": len(recs)}],
                         "created": "2026-01-01T00:00:00", "command": "harness certify"},
            "environment": {"harness": "0.1.0", "git": None, "python": "3.11", "implementation": "cpython",
                            "platform": "linux", "torch": "2.13.0", "cuda": None, "cudnn": None, "numpy": "2",
                            "deepspeed": None, "accelerate": None, "torchdata": None, "cpu": "test cpu",
                            "cpu_count": 2, "gpu": [], "determinism": {"PYTHONHASHSEED": "0"}},
            "summary": {"wall_s": 10.0}, "cells": recs, "trials": trials,
            "baselines": {"default|3": {"last_step": 24, "committed": [5, 10, 15, 20], "curve": [[1, 1.0]]}}}
    return report_json.finish_certificate(cert, sp.to_json())
