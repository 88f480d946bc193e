"""GPU determinism settings: applied in the ranks when the backend is NCCL (or a GPU is visible), recorded in
the trace's start row, shown in the report. The GPU end-to-end test skips without CUDA (CI)."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from harness.launch import LaunchSpec, determinism
from harness.report.text import _determinism_line


def test_wanted_for_nccl_and_apply_sets_every_flag(monkeypatch):
    assert determinism.wanted({"HARNESS_BACKEND": "nccl"})
    assert determinism.wanted({"HARNESS_BACKEND": "gloo"}) == determinism.cuda_visible()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    try:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
        applied = determinism.apply()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" == applied["cublas_workspace_config"]
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def _trial_dir(tmp_path, state):
    (tmp_path / "trace").mkdir()
    row = {"kind": "start", "attempt": 0, "rank": 0, "pid": 1, "world_size": 1, "time": 0.0, "schema": 2,
           "determinism": state}
    (tmp_path / "trace" / "rank0.jsonl").write_text(json.dumps(row) + "\n")
    return str(tmp_path)


def test_report_line_for_a_gpu_run_only(tmp_path):
    state = {"deterministic_algorithms": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
             "cublas_workspace_config": ":4096:8", "cuda": True}
    out = _trial_dir(tmp_path, state)
    assert _determinism_line(SimpleNamespace(out_dir=out, backend="gloo")) == (
        "torch.use_deterministic_algorithms=True, CUBLAS_WORKSPACE_CONFIG=:4096:8, cudnn.deterministic=True, "
        "cudnn.benchmark=False")
    (tmp_path / "trace" / "rank0.jsonl").write_text(json.dumps({"kind": "start", "determinism": {
        **state, "cuda": False, "cudnn_benchmark": True, "cublas_workspace_config": None}}) + "\n")
    assert _determinism_line(SimpleNamespace(out_dir=out, backend="nccl")).endswith(
        "CUBLAS_WORKSPACE_CONFIG=unset, cudnn.deterministic=True, cudnn.benchmark=True")
    assert _determinism_line(SimpleNamespace(out_dir=out, backend="gloo")) is None  # a CPU run: nothing to say
    assert _determinism_line(SimpleNamespace(out_dir=str(tmp_path / "none"), backend="nccl")) is None


FLAGS_SCRIPT = """
import json, os, sys, torch
from harness import probe
probe.step(1)
with open(os.path.join(os.environ["HARNESS_TRACE_DIR"], "rank0.jsonl")) as f:
    start = json.loads(f.readline())
json.dump({"flags": [torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                     torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG")],
           "start": start["determinism"]}, open(sys.argv[1], "w"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pool", "subprocess", "torchrun"])
def test_ranks_get_the_settings_with_nccl(tmp_path, pool, kind):
    """HARNESS_BACKEND=nccl (the process group is never created, so no GPU is needed): every launcher's ranks
    start with the settings, and the probe records them in the start row."""
    from harness.launch import make_launcher

    script = tmp_path / "flags.py"
    script.write_text(FLAGS_SCRIPT)
    launcher = pool if kind == "pool" else make_launcher(kind)
    env = {"HARNESS_BACKEND": "nccl", "HARNESS_TRACE_DIR": str(tmp_path / "trace")}
    try:
        result = launcher.launch(LaunchSpec(nproc=1, log_dir=str(tmp_path / "logs"), script=str(script),
                                            args=(str(tmp_path / "flags.json"),), env=env, timeout_s=120))
    finally:
        if launcher is not pool:
            launcher.close()
    assert result.ok, open(result.exits[0].log_path).read()
    got = json.loads((tmp_path / "flags.json").read_text())
    assert got["flags"] == [True, True, False, os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")]
    assert got["start"]["deterministic_algorithms"] and not got["start"]["cudnn_benchmark"]


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nccl_world_size_1_resumes_bit_exact_and_reports_the_settings(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "default", "--backend", "nccl", "--nproc", "1",
                           "--kill", "7", "--no-cache", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "PASS" in proc.stdout and "determinism: torch.use_deterministic_algorithms=True" in proc.stdout
    start = json.loads((out / "trace" / "rank0.jsonl").read_text().splitlines()[0])
    assert start["determinism"]["cuda"] and start["determinism"]["cudnn_deterministic"]
    steps = [json.loads(line) for line in (out / "trace" / "rank0.jsonl").read_text().splitlines()]
    assert any(r.get("kind") == "step" and (r.get("rng") or {}).get("cuda") for r in steps)  # CUDA RNG recorded
