"""A complete training script that `harness run` can test: DDP, the reference checkpointer, the probe.

    torchrun --nproc-per-node 2 examples/train_ddp.py      # plain torchrun: the probe is a no-op
    harness run examples/train_ddp.py --kill 7             # killed at step 7, resumed, compared

The only harness-specific lines are the three `probe.*` calls.
"""

import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from harness import probe
from harness.checkpoint import Checkpointer, ProjectConfiguration

STEPS, SAVE_EVERY = 20, 4


def main():
    dist.init_process_group(os.environ.get("HARNESS_BACKEND", "gloo"))  # env:// as under torchrun
    random.seed(0), np.random.seed(dist.get_rank()), torch.manual_seed(0)  # every RNG, as a real job must
    torch.use_deterministic_algorithms(True)

    data = TensorDataset(torch.randn(96, 8), torch.randn(96, 1))
    loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, shuffle=True, seed=0))
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 5))

    ckpt = Checkpointer(ProjectConfiguration(probe.run_dir(), automatic_checkpoint_naming=True, total_limit=2))
    model, optimizer, loader, scheduler = ckpt.prepare(model, optimizer, loader, scheduler)
    ckpt.load_state(missing_ok=True)  # resume, like any preemptible job; None on the first start

    while ckpt.step < STEPS:
        for x, y in loader:  # a resumed run continues mid-epoch, with the same order and augmentation
            x = x + torch.from_numpy(np.random.normal(0, 0.05, x.shape).astype("float32"))
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            ckpt.step += 1
            probe.step(ckpt.step, loss=loss, batch=(x, y), model=model, optimizer=optimizer)
            if ckpt.step % SAVE_EVERY == 0:
                ckpt.save_state()
            if ckpt.step == STEPS:
                break
    probe.finish(model=model, optimizer=optimizer, scheduler=scheduler.state_dict())
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
