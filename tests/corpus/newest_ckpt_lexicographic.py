"""The resume picks the "newest" checkpoint by sorting folder names as text: iter-5 sorts after iter-10.

Source: https://github.com/Lightning-AI/litgpt/pull/661 ("Fix resuming checkpoint path bug": resuming
took the last path of the sorted list, which is not sorted by iteration number, so it did not resume
from the latest checkpoint).

A DDP job (2 ranks) saves its full state (model, optimizer, step, RNG) to ckpt/iter-{step}/ every 5
steps and resumes from sorted(os.listdir("ckpt"))[-1]. Once iter-10 exists, "iter-5" is still the
last name, so a job killed after step 10 goes back to step 5 and trains steps 6-10 again. Everything
it restores is exact; only the progress between the two checkpoints is lost. --fixed sorts by the
step number.
"""

import argparse
import os

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
    os.makedirs(f"ckpt/iter-{step}", exist_ok=True)
    torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "torch_rng": torch.get_rng_state()}, f"ckpt/iter-{step}/rank{rank}.pt")


def latest():
    names = [d for d in os.listdir("ckpt") if all(os.path.exists(f"ckpt/{d}/rank{r}.pt") for r in range(world))] \
        if os.path.isdir("ckpt") else []
    if args.fixed:
        names.sort(key=lambda d: int(d.split("-")[1]))
    else:
        names.sort()
    return names[-1] if names else None


step = 0
name = latest()
if name:
    state = torch.load(f"ckpt/{name}/rank{rank}.pt", weights_only=False)
    model.module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    step = state["step"]

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
        step += 1
        if step % args.save_every == 0:
            save(step)
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0
dist.destroy_process_group()
