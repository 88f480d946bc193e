"""The global step counter that keys the learning-rate warmup is not restored: the warmup starts over.

Source: https://github.com/Lightning-AI/pytorch-lightning/issues/6470 ("Global step always zero after
loading checkpoint": with resume_from_checkpoint the trainer had global_step=0 whatever the step of
the save); the same counter keys schedules in hand-written loops such as minimind's
get_lr(epoch * iter_per_epoch + step, ...).

A data-parallel job at 3 ranks (gradients averaged by hand, an all_reduce per parameter; 8 batches per
epoch) sets the learning rate itself before every optimizer step from a warmup-then-cosine function of
global_step. Its checkpoint (every 5 steps) records where the data stands (epoch, batch) with the model,
the optimizer and the RNG state, but global_step is a loop variable that starts at 0 in every process:
the first step after a resume trains with the warmup's first rate. --fixed saves and restores it.
"""

import argparse
import math
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--save-every", type=int, default=5)
parser.add_argument("--lr", type=float, default=1e-2)
args = parser.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)  # the same initial weights on every rank

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(96, 8, generator=gen), torch.randn(96, 1, generator=gen))
sampler = DistributedSampler(data, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=4, sampler=sampler, generator=torch.Generator())
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
torch.manual_seed(100 + rank)  # dropout differs per rank
total = args.epochs * len(loader)


def lr_at(step):
    warmup = 8
    if step < warmup:
        return args.lr * (step + 1) / warmup
    return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def average_gradients():
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world


def save(epoch, batch):
    os.makedirs("ckpt", exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "batch": batch,
             "torch_rng": torch.get_rng_state()}
    if args.fixed:
        state["global_step"] = global_step
    torch.save(state, f"ckpt/e{epoch}-b{batch}-rank{rank}.pt")
    dist.barrier()
    if rank == 0:  # the pointer to the newest complete checkpoint, written last
        with open("ckpt/latest.tmp", "w") as f:
            f.write(f"e{epoch}-b{batch}")
        os.replace("ckpt/latest.tmp", "ckpt/latest")


global_step, start_epoch, start_batch = 0, 0, 0
if os.path.exists("ckpt/latest"):
    with open("ckpt/latest") as f:
        tag = f.read()
    state = torch.load(f"ckpt/{tag}-rank{rank}.pt", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    start_epoch, start_batch = state["epoch"], state["batch"]
    global_step = state.get("global_step", 0)

for epoch in range(start_epoch, args.epochs):
    sampler.set_epoch(epoch)
    for batch, (x, y) in enumerate(loader):
        if epoch == start_epoch and batch < start_batch:
            continue  # consumed before the checkpoint
        for group in optimizer.param_groups:
            group["lr"] = lr_at(global_step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        average_gradients()
        optimizer.step()
        optimizer.zero_grad()
        global_step += 1
        if (epoch * len(loader) + batch + 1) % args.save_every == 0:
            save(epoch, batch + 1)
dist.destroy_process_group()
