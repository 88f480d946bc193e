"""Auto mode inside one process (harness.probe.auto), run in a child interpreter: its hooks patch torch globally."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from harness.engine.auto_mode import AUTO_NOT_RECORDED
from harness.launch.rank import AUTO_INSTALLER
from harness.probe import auto

from support import REPO  # noqa: E402

CHILD = textwrap.dedent("""
    import json, os, torch
    from harness.probe import auto as am
    auto = am.install()
    torch.manual_seed(0)
    enc, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    model = torch.nn.Sequential(enc, torch.nn.BatchNorm1d(4), head)
    a, b = torch.optim.SGD(enc.parameters(), lr=0.1), torch.optim.AdamW(head.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1)),
                                         batch_size=4)
    it = iter(loader)
    for step in range(2):
        for micro in range(2):  # gradient accumulation: two backward calls per step
            x, y = next(it)
            (torch.nn.functional.mse_loss(model(x), y) / 2).backward()
        a.step(); b.step()  # two optimizers stepping together: one training step
        a.zero_grad(); b.zero_grad()
    am.finish()
""")


def test_steps_names_loss_and_final_state(tmp_path):
    env = {**os.environ, "HARNESS_TRACE_DIR": str(tmp_path), "RANK": "0", "WORLD_SIZE": "1",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=120)
    rows = [json.loads(line) for line in open(tmp_path / "rank0.jsonl")]
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2]
    names = set(steps[0]["params_tensors"])
    assert {"0.weight", "0.bias", "2.weight", "2.bias"} <= names  # named through the root module
    assert "1.running_mean (buffer)" in names and "1.weight" not in names  # BatchNorm's weight: no optimizer
    assert len(steps[0]["loss"]["hex"]) == 2 * 2 * 4 and steps[0]["loss"]["dtype"] == "float32"  # 2 losses
    assert steps[0]["batch"] != steps[1]["batch"] and steps[0]["batch"] is not None
    assert any(k.startswith("2.weight ") for k in steps[0]["optimizer_state"])  # AdamW's state, by name
    assert len(steps[0]["optimizer_groups"]) == 2
    assert [r["kind"] for r in rows][-1] == "finish"
    assert json.load(open(tmp_path / "auto" / "rank0.json"))["initial"]["params"].keys() == \
        {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_one_installer_and_one_list():
    assert AUTO_INSTALLER == auto.__name__
    assert tuple(AUTO_NOT_RECORDED) == auto.NOT_RECORDED


ITERABLE_CHILD = textwrap.dedent("""
    import sys, torch
    from harness.probe import auto as am
    auto = am.install()

    class Stream(torch.utils.data.IterableDataset):
        def __init__(self):
            self.i = 0
        def __iter__(self):
            while self.i < 16:
                self.i += 1
                yield torch.full((4,), float(self.i)), torch.tensor([float(self.i)])
        def state_dict(self):
            return {"i": self.i}
        def load_state_dict(self, sd):
            self.i = sd["i"]

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(Stream(), batch_size=4)
    if sys.argv[1] == "prepared":
        from harness.checkpoint import Checkpointer
        loader = Checkpointer().prepare(loader)
    for x, y in loader:
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step(); opt.zero_grad()
    am.finish()
""")


@pytest.mark.slow
def test_auto_mode_records_the_users_batch_through_a_prepared_iterable_loader(tmp_path):
    """The checkpointer's iterable loader moves an envelope (worker, dataset state, batch) through torch's
    DataLoader; auto mode must record the batch the training loop gets, as with a plain DataLoader."""
    batches = {}
    for kind in ("plain", "prepared"):
        out = tmp_path / kind
        env = {**os.environ, "HARNESS_TRACE_DIR": str(out), "RANK": "0", "WORLD_SIZE": "1",
               "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        subprocess.run([sys.executable, "-c", ITERABLE_CHILD, kind], env=env, check=True, timeout=120)
        rows = [json.loads(line) for line in open(out / "rank0.jsonl")]
        batches[kind] = [r["batch"] for r in rows if r["kind"] == "step"]
    assert len(batches["plain"]) == 4 and None not in batches["plain"]
    assert batches["prepared"] == batches["plain"]
