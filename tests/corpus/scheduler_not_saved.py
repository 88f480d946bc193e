"""The learning-rate scheduler is not in the checkpoint: after a resume its step count starts from 0.

Source: https://github.com/pytorch/torchtitan/pull/275 ("fix lr scheduling by checkpointing
scheduler": if not checkpointed, the lr scheduler's step always starts from 0 after loading a
checkpoint).

A DDP job (2 ranks) decays the learning rate linearly with a LambdaLR stepped after every optimizer
step, and saves the model, the optimizer, the step and the RNG state every 4 steps, not the scheduler.
The optimizer's state dict carries the current learning rate, so the first step after a resume still
trains with the right one; the scheduler's first step() then computes the rate of step 1 instead of
the rate of the step after the checkpoint. --fixed saves and restores the scheduler too.
"""

import argparse
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
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / (args.steps + 1))  # linear decay
torch.manual_seed(100 + rank)  # dropout differs per rank


def save(step):
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    state = {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "torch_rng": torch.get_rng_state()}
    if args.fixed:
        state["scheduler"] = scheduler.state_dict()
    torch.save(state, f"ckpt/step{step}/rank{rank}.pt")


def newest():
    steps = [int(d[4:]) for d in os.listdir("ckpt")] if os.path.isdir("ckpt") else []
    done = [s for s in steps if all(os.path.exists(f"ckpt/step{s}/rank{r}.pt") for r in range(world))]
    return max(done, default=0)


step = newest()
if step:
    state = torch.load(f"ckpt/step{step}/rank{rank}.pt", weights_only=False)
    model.module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # restores the current lr, not the scheduler's count
    torch.set_rng_state(state["torch_rng"])
    if "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])

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
