"""Auto mode and state no optimizer steps: an AveragedModel joins the final state (averaged/{k}); a hand-made
EMA is named by the auto.unseen event. Run in a child interpreter: auto mode's hooks patch torch globally."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from safetensors import safe_open

from support import REPO  # noqa: E402

CHILD = textwrap.dedent("""
    import copy, torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from harness.probe import auto as am
    am.install()

    def main():  # every object is a local: gone by the time finish() runs, as in a real script
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
        manual = copy.deepcopy(model)  # a hand-made EMA
        holder = torch.nn.ModuleDict({"model": model, "frozen": torch.nn.Linear(8, 1)})  # frozen: not recorded
        for step in range(3):
            x = torch.randn(5, 4)
            torch.nn.functional.mse_loss(model(x), x[:, :1]).backward()
            opt.step()
            opt.zero_grad()
            averaged.update_parameters(model)
            with torch.no_grad():
                for e, p in zip(manual.parameters(), model.parameters()):
                    e.mul_(0.9).add_(p, alpha=0.1)

    main()
    am.finish()
""")


@pytest.mark.slow
def test_averaged_models_are_final_state_and_unseen_modules_are_named(tmp_path):
    env = {**os.environ, "HARNESS_TRACE_DIR": str(tmp_path), "RANK": "0", "WORLD_SIZE": "1",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=120)
    with safe_open(str(tmp_path / "final" / "rank0.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        n_averaged = int(f.get_tensor("averaged/0/n_averaged"))
    assert {"averaged/0/module.0.weight", "averaged/0/module.2.bias", "averaged/0/n_averaged"} <= keys
    assert n_averaged == 3 and "model/0.weight" in keys
    rows = [json.loads(line) for line in open(tmp_path / "rank0.jsonl")]
    unseen = [r for r in rows if r["kind"] == "event" and r["name"] == "auto.unseen"]
    assert len(unseen) == 1  # the hand-made EMA and the frozen head, not the model nor the AveragedModel's copy
    assert unseen[0]["info"]["modules"] == ["Linear (2 tensors, 36 B)", "Sequential (4 tensors, 196 B)"]
    assert [r["kind"] for r in rows][-1] == "finish"
