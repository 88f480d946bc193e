"""Every launcher through the real command line, in a fresh interpreter, as users run it.

pytest has already imported torch, which hides races in how the harness process imports it (a
torch import on a background thread racing the main thread's torch.distributed import aborted
``--launcher subprocess`` runs with SIGABRT); a fresh ``python -m harness.cli`` does not.
"""

import json
import os
import subprocess
import sys

import pytest

from support import REPO as ROOT  # noqa: E402


@pytest.mark.parametrize("kind", ["pool", pytest.param("subprocess", marks=pytest.mark.slow),
                                  pytest.param("torchrun", marks=pytest.mark.slow)])
def test_harness_run_through_the_console_script(tmp_path, kind, shared_cache):
    # The session's cache: the baseline is shared with the other tests of this script, so the trial
    # itself (whose launches go through `kind`) is what runs here.
    env = {**os.environ, "HARNESS_CACHE_DIR": shared_cache}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "examples/train_ddp.py", "--kill", "7",
                           "--launcher", kind, "--out", str(tmp_path / "out"), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    assert result["verdict"] == "pass", result["message"]
