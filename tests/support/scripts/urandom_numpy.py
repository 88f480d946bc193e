"""examples/train_ddp.py with a classic reproducibility bug: numpy's global RNG is seeded from os.urandom,
so two uninterrupted runs already differ (the augmentation noise). Resume or not, it cannot be bit-exact."""
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from harness import probe
from harness.checkpoint import Checkpointer, ProjectConfiguration

STEPS, SAVE_EVERY = 12, 4


def main():
    dist.init_process_group(os.environ.get("HARNESS_BACKEND", "gloo"))
    random.seed(0), torch.manual_seed(0)
    np.random.seed(int.from_bytes(os.urandom(4), "little"))  # the bug: a different stream every run
    torch.use_deterministic_algorithms(True)

    data = TensorDataset(torch.randn(96, 8), torch.randn(96, 1))
    loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, shuffle=True, seed=0))
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    ckpt = Checkpointer(ProjectConfiguration(probe.run_dir(), automatic_checkpoint_naming=True, total_limit=2))
    model, optimizer, loader = ckpt.prepare(model, optimizer, loader)
    ckpt.load_state(missing_ok=True)

    while ckpt.step < STEPS:
        for x, y in loader:
            x = x + torch.from_numpy(np.random.normal(0, 0.05, x.shape).astype("float32"))
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            ckpt.step += 1
            probe.step(ckpt.step, loss=loss, batch=(x, y), model=model, optimizer=optimizer)
            if ckpt.step % SAVE_EVERY == 0:
                ckpt.save_state()
            if ckpt.step == STEPS:
                break
    probe.finish(model=model, optimizer=optimizer)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
