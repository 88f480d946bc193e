"""A process that trains two steps and checkpoints after each; the crash test SIGKILLs it mid-save.

usage: ckpt_crash_child.py RUN_DIR [DIGESTS_JSON]
With DIGESTS_JSON (the uninterrupted reference run) it writes the digest of the state at each save.
CKPT_CRASH_MUTANT=rotate-before-commit breaks the checkpointer on purpose (it deletes the old
checkpoints before committing the new one), for the test that checks the crash test can fail.
"""

import json
import os
import sys

import torch

from harness.checkpoint import Checkpointer, ProjectConfiguration
from harness.probe.digest import digest as state_digest


def digest(model, opt, step) -> str:
    return state_digest({"m": model.state_dict(), "o": opt.state_dict(), "s": step})


def build(run_dir):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 16))  # 17 MB of weights
    opt = torch.optim.AdamW(model.parameters())  # 34 MB of state after a step
    ckpt = Checkpointer(ProjectConfiguration(run_dir, automatic_checkpoint_naming=True, total_limit=1))
    ckpt.prepare(model, opt)
    return ckpt, model, opt


def _rotate_before_commit():
    from harness.checkpoint import manager, storage

    commit = manager.Checkpointer._commit

    def broken_commit(self, job, reports):
        cfg = self.project_configuration
        storage.rotate(cfg.checkpoints_dir, 0, keep=job.final)  # the bug: old checkpoints go first
        commit(self, job, reports)

    manager.Checkpointer._commit = broken_commit


def main():
    if os.environ.get("CKPT_CRASH_MUTANT") == "rotate-before-commit":
        _rotate_before_commit()
    ckpt, model, opt = build(sys.argv[1])
    digests = {}
    for step in (1, 2):
        model(torch.ones(4, 2048)).sum().backward()
        opt.step()
        opt.zero_grad()
        ckpt.step = step
        ckpt.save_state()
        digests[step] = digest(model, opt, step)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(digests, f)


if __name__ == "__main__":
    main()
