"""save_model on weights sharded across ranks: FSDP2 at 2 and 3 ranks, DeepSpeed ZeRO-2 and ZeRO-3.

The ranks run tests/support/scripts/model_files_job.py on the warm pool; what each checks is in its docstring.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from harness.launch import LaunchSpec

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support", "scripts",
                      "model_files_job.py")
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def _run_job(pool, kind: str, tmp_path, world: int) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = pool.launch(LaunchSpec(nproc=world, log_dir=str(tmp_path / "logs"), script=SCRIPT,
                                    args=(kind, str(out)), timeout_s=240))
    errors = [(out / f"err{r}").read_text() for r in range(world) if (out / f"err{r}").exists()]
    assert not errors, "\n".join(errors)
    assert not result.timed_out and all(e.returncode == 0 for e in result.exits), [
        (tmp_path / "logs" / f"rank{r}.log").read_text()[-3000:] for r in range(world)]
    assert all((out / f"ok{r}").exists() for r in range(world))


@pytest.mark.parametrize("world", [2, 3])
def test_fsdp2_weights_are_gathered_into_full_files_and_load_back_sharded(pool, tmp_path, world):
    _run_job(pool, "fsdp", tmp_path, world)


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (DS_BUILD_OPS=0 pip install -e '.[test]')")
@pytest.mark.slow  # DeepSpeed's first start on a machine compiles a CPU op; CI runs the slow set
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_engine_saves_its_modules_full_weights(pool, tmp_path, stage):
    _run_job(pool, f"deepspeed{stage}", tmp_path, 2)
