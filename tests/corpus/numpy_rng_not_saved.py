"""Resume restores torch's RNG but not numpy's: the noise augmentation restarts its stream.

Source: https://github.com/huggingface/transformers/pull/11582 (review of "Reproducible checkpoint":
the Trainer's checkpoint saved torch's RNG state only; python's and numpy's were left out) and
https://github.com/huggingface/transformers/issues/11504 ("reloading after checkpoint does not get the
same results").

A DDP job (2 ranks) adds Gaussian noise from numpy's global RNG to each batch. It saves the model, the
optimizer, the step and torch's RNG state every 4 steps; numpy's state is not saved, so a resumed rank
reseeds numpy as at a fresh start. --fixed saves and restores numpy's state too.
"""

import argparse
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--save-every", type=int, default=4)
args = parser.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.use_deterministic_algorithms(True)
np.random.seed(rank)
torch.manual_seed(0)  # the same initial weights on every rank

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(96, 8, generator=gen), torch.randn(96, 1, generator=gen))
sampler = DistributedSampler(data, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=4, sampler=sampler, generator=torch.Generator())
model = torch.nn.parallel.DistributedDataParallel(
    torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1)))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
torch.manual_seed(100 + rank)  # dropout differs per rank


def save(step):
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    state = {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "torch_rng": torch.get_rng_state()}
    if args.fixed:
        state["numpy_rng"] = np.random.get_state()
    torch.save(state, f"ckpt/step{step}/rank{rank}.pt")


def newest():
    steps = [int(d[4:]) for d in os.listdir("ckpt")] if os.path.isdir("ckpt") else []
    done = [s for s in steps if all(os.path.exists(f"ckpt/step{s}/rank{r}.pt") for r in range(world))]
    return max(done, default=0)


step = newest()
if step:
    state = torch.load(f"ckpt/step{step}/rank{rank}.pt", weights_only=False)
    model.module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if "numpy_rng" in state:
        np.random.set_state(state["numpy_rng"])

epoch, pos = divmod(step, len(loader))
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        if i < pos:
            continue  # consumed before the checkpoint
        x = x + torch.from_numpy(np.random.normal(0, 0.05, x.shape).astype("float32"))
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % args.save_every == 0:
            save(step)
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0
dist.destroy_process_group()
