"""bench/gpu_check.sh, the one script for a GPU machine: its dry run works anywhere, and without CUDA the real
run stops at once saying so (CI has no GPU; the GPU run itself is reported with the results)."""

import os
import subprocess

import pytest
import torch

from support import REPO  # noqa: E402

SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")


def run_check(tmp_path, *args, timeout=600):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OUT": str(tmp_path)})


@pytest.mark.slow
def test_dry_run_checks_the_commands(tmp_path):
    proc = run_check(tmp_path, "--dry-run")
    summary = (tmp_path / "summary.txt").read_text()
    assert proc.returncode == 0, summary + proc.stderr
    assert "dry_parse: exit 0" in summary and "dry_bench: exit 0" in summary and "dry run done: ok" in summary
    assert (tmp_path / "dry_bench.json").exists()
    if not torch.cuda.is_available():
        assert "dry_nccl_refused: refused as expected" in summary


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_real_run_stops_at_once(tmp_path):
    proc = run_check(tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device visible" in (tmp_path / "summary.txt").read_text()
