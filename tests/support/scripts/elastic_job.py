"""Ranks of the elastic checkpoint tests (tests/checkpoint/test_checkpoint_elastic.py), run by the warm pool.

    elastic_job.py save|load CKPT OUT_JSON_PREFIX

save: 2 steps of a DDP model on an elastic loader, a per-rank custom object and a registered generator,
then save_state(CKPT); load: load_state(CKPT) (on any world size). Each rank writes OUT_JSON_PREFIX{rank}.json:
its data position, its per-rank object, the next draws of its RNG streams, and the elastic warning.
"""

from __future__ import annotations

import json
import random
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from harness.checkpoint import Checkpointer, ProjectConfiguration
from harness.checkpoint.elastic import ElasticResumeWarning, elastic_loader


class PerRank:
    def __init__(self, n: int) -> None:
        self.n = n

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, sd):
        self.n = int(sd["n"])


def main() -> None:
    mode, ckpt_dir, out = sys.argv[1:4]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = elastic_loader(TensorDataset(torch.arange(60.0)), 12, seed=5, num_replicas=world, rank=rank)
    gen = torch.Generator().manual_seed(1000 + rank)
    own = PerRank(100 + rank)
    random.seed(rank)
    np.random.seed(rank)
    torch.manual_seed(rank)
    ckpt = Checkpointer(ProjectConfiguration("unused"), deterministic_reduction=False)
    model, opt, loader = ckpt.prepare(model, opt, loader)
    ckpt.register_for_checkpointing(own, per_rank=True)
    ckpt.register_for_checkpointing(gen)
    report: dict = {"rank": rank, "world": world}
    if mode == "save":
        for i, (x,) in enumerate(loader):
            model(x.reshape(-1, 1)).sum().backward()
            opt.step()
            opt.zero_grad()
            ckpt.step = i + 1
            if i == 1:
                break
        ckpt.save_state(ckpt_dir)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ckpt.load_state(ckpt_dir)
        report["warning"] = [str(w.message) for w in caught if issubclass(w.category, ElasticResumeWarning)]
    report.update(position=loader.position, epoch=loader.epoch, per_rank=own.n, weight=model.module.weight.item(),
                  draws=[random.random(), float(np.random.random()), torch.rand(1).item(),
                         torch.rand(1, generator=gen).item()])
    with open(f"{out}{rank}.json", "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
