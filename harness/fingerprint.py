"""The environment fingerprint: library versions, hardware, determinism flags, commit.

One description of the machine a run used, in two sizes: `versions()`, the part a cached baseline
depends on (its cache key), and `fingerprint()`, everything a certificate states about where it was made.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Python, torch, numpy and harness versions: what a cached baseline's bits depend on besides the code.
    Reads no module that is not yet imported (torch is read from its package metadata)."""
    from harness import __version__

    return {"python": sys.version.split()[0], "torch": _version("torch") or "-", "numpy": _version("numpy") or "-",
            "harness": __version__}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> dict | None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if not commit:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint() -> dict:
    import torch

    from harness import __version__
    from harness.launch.spec import base_env

    env = base_env()
    cuda = torch.cuda.is_available()
    return {
        "harness": __version__,
        "git": _git_commit(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "numpy": _version("numpy"),
        "deepspeed": _version("deepspeed"),
        "accelerate": _version("accelerate"),
        "torchdata": _version("torchdata"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "determinism": {
            "use_deterministic_algorithms": "on in every scenario and SUT adapter "
                                            "(torch.use_deterministic_algorithms(True))",
            "cudnn.benchmark": False,
            "CUBLAS_WORKSPACE_CONFIG": env.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8 (set by the scenarios)"),
            "PYTHONHASHSEED": env.get("PYTHONHASHSEED"),
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"),
        },
    }


__all__ = ["fingerprint", "versions"]
