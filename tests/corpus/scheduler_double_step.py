"""The scheduler is restored from the checkpoint and then fast-forwarded as well: its count doubles.

Source: https://github.com/THUDM/slime/pull/1547 ("remove double-counting of LR scheduler steps on
checkpoint resume": load_checkpoint() already restores the scheduler; an extra step() loop after it
doubled the scheduler's position on every resume).

A DDP job (2 ranks) with a cosine schedule (LambdaLR, stepped after every optimizer step) saves the
model, the optimizer, the scheduler, the step and the RNG state every 4 steps. On resume it loads them
all, then still replays one scheduler.step() per completed step, a leftover of the days the checkpoint
held no scheduler. The first step after the resume already trains with the rate of step 2s.
--fixed drops the replay.
"""

import argparse
import math
import os

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
torch.manual_seed(0)  # the same initial weights on every rank

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(96, 8, generator=gen), torch.randn(96, 1, generator=gen))
sampler = DistributedSampler(data, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=4, sampler=sampler, generator=torch.Generator())
model = torch.nn.parallel.DistributedDataParallel(
    torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1)))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.steps)))
torch.manual_seed(100 + rank)  # dropout differs per rank


def save(step):
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "torch_rng": torch.get_rng_state()},
               f"ckpt/step{step}/rank{rank}.pt")


def newest():
    steps = [int(d[4:]) for d in os.listdir("ckpt")] if os.path.isdir("ckpt") else []
    done = [s for s in steps if all(os.path.exists(f"ckpt/step{s}/rank{r}.pt") for r in range(world))]
    return max(done, default=0)


step = newest()
if step:
    state = torch.load(f"ckpt/step{step}/rank{rank}.pt", weights_only=False)
    model.module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if not args.fixed:
        for _ in range(step):  # catch the schedule up with the restored step (it already is)
            scheduler.step()

epoch, pos = divmod(step, len(loader))
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        if i < pos:
            continue  # consumed before the checkpoint
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        step += 1
        if step % args.save_every == 0:
            save(step)
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0
dist.destroy_process_group()
