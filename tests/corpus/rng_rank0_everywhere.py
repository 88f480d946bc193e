"""Rank 0 writes the checkpoint, RNG state included, and every rank restores rank 0's RNG state.

Source: https://github.com/radixark/miles/pull/3187 ("FSDP checkpoints currently save rank 0's RNG
state and restore it on every rank. After ranks consume different numbers of random values, resuming
changes their random streams and dropout gradients"); the same mistake in Megatron-LM's
dist-checkpointing: https://github.com/NVIDIA/Megatron-LM/pull/6858.

A data-parallel job at 3 ranks (gradients averaged by hand, an all_reduce per parameter) seeds its
dropout per rank. Only rank 0 saves, every 4 steps: the model and the optimizer (the same on every
rank) and its own torch RNG state; on resume every rank loads that one file. Rank 0 resumes exactly;
ranks 1 and 2 continue on rank 0's dropout stream. --fixed saves one RNG file per rank.
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
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
torch.manual_seed(100 + rank)  # dropout differs per rank


def average_gradients():
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world


def save(step):
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    if args.fixed:
        torch.save(torch.get_rng_state(), f"ckpt/step{step}/rng{rank}.pt")
    dist.barrier()  # every rank's RNG file is written before rank 0 marks the checkpoint complete
    if rank == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "torch_rng": torch.get_rng_state()}, f"ckpt/step{step}/state.pt")


def newest():
    steps = [int(d[4:]) for d in os.listdir("ckpt") if os.path.exists(f"ckpt/{d}/state.pt")] \
        if os.path.isdir("ckpt") else []
    return max(steps, default=0)


step = newest()
if step:
    state = torch.load(f"ckpt/step{step}/state.pt", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if args.fixed:
        torch.set_rng_state(torch.load(f"ckpt/step{step}/rng{rank}.pt"))
    else:
        torch.set_rng_state(state["torch_rng"])  # rank 0's stream, on every rank

epoch, pos = divmod(step, len(loader))
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
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
