"""GPU determinism settings that the harness applies in every rank, before the training script runs.

Bit-exact resume on a GPU needs deterministic kernels: cuBLAS with a fixed workspace
(``CUBLAS_WORKSPACE_CONFIG``), cuDNN's deterministic algorithms without autotuning (``benchmark``
picks algorithms by timing, which differs between runs), and ``torch.use_deterministic_algorithms``
so that an op without a deterministic kernel raises instead of silently differing. They are applied
when the backend is NCCL or a CUDA device is visible (a gloo job may still compute on the GPU); a CPU
job is left as it is. The probe records what is in force at its first call in the trace's start row
(``StartRow.determinism``), so a script that turns a setting back off is reported as it ran.
"""

from __future__ import annotations

import os

from harness import run_env

CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def cuda_visible() -> bool:
    """Whether this process may see a CUDA device, without initialising CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def wanted(env=None) -> bool:
    """Whether a rank with environment ``env`` (default: this process's) gets the settings."""
    env = os.environ if env is None else env
    return env.get(run_env.BACKEND) == "nccl" or cuda_visible()


def apply() -> dict:
    """Apply the settings in this process (a rank, before its script) and return them."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)  # read when cuBLAS starts
    import torch

    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {"deterministic_algorithms": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
            "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"]}

