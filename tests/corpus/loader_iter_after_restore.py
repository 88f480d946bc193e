"""The RNG states are restored, then the data iterator is created: it draws from torch's global RNG.

Source: https://github.com/NVIDIA-NeMo/Megatron-Bridge/issues/5257 ("Checkpoint RNG restore is not
closed over data-iterator creation: resumed runs' torch CPU RNG deterministically drifts by one random64
draw": a DataLoader without generator= draws its _base_seed from the global CPU generator on every
iter(), and setup restores the RNG state before it builds the data iterators).

A data-parallel job at 3 ranks (gradients averaged by hand, an all_reduce per parameter), with no
dropout and no augmentation: torch's global RNG feeds nothing in the training. It saves the model, the
optimizer, the step and the RNG states every 5 steps and restores them all, then starts iterating its
DataLoader, which draws a base seed from the restored generator: one draw the uninterrupted run never
made at that point. The training stays exact (with num_workers=0 the seed is never used), only torch's
RNG stream is off by one draw from the resume on. --fixed gives the DataLoader its own generator.
"""

import argparse
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--save-every", type=int, default=5)
args = parser.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.use_deterministic_algorithms(True)
random.seed(0), np.random.seed(0), torch.manual_seed(0)  # "seed everything"

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(96, 8, generator=gen), torch.randn(96, 1, generator=gen))
sampler = DistributedSampler(data, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=4, sampler=sampler, generator=torch.Generator() if args.fixed else None)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)


def average_gradients():
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world


def save(step):
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}},
               f"ckpt/step{step}/rank{rank}.pt")


def newest():
    steps = [int(d[4:]) for d in os.listdir("ckpt")] if os.path.isdir("ckpt") else []
    done = [s for s in steps if all(os.path.exists(f"ckpt/step{s}/rank{r}.pt") for r in range(world))]
    return max(done, default=0)


step = newest()
if step:
    state = torch.load(f"ckpt/step{step}/rank{rank}.pt", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])

epoch, pos = divmod(step, len(loader))
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):  # iter(loader): a base seed from torch's global RNG, unless generator=
        if i < pos:
            continue  # consumed before the checkpoint
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        average_gradients()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % args.save_every == 0:
            save(step)
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0
dist.destroy_process_group()
