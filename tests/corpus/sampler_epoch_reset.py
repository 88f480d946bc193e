"""After a resume the DistributedSampler shuffles the resumed epoch with epoch 0's permutation.

Source: https://github.com/huggingface/accelerate/pull/4071 ("preserve dataloader iteration state when
resuming from checkpoint": skip_first_batches built a loader whose iteration count started at 0, so
its __iter__ called set_epoch(0) and reset the sampler from the resumed epoch back to epoch 0) and
https://github.com/huggingface/accelerate/issues/3242 ("Wrong epoch when resuming from checkpoint").

A DDP job (2 ranks, 12 batches per epoch) calls sampler.set_epoch(epoch + 1) at the end of each epoch,
which is all an uninterrupted run needs (a fresh sampler is at epoch 0). It saves the model, the
optimizer, the step and the RNG state every 5 steps and, on resume, skips the batches of the epoch
already consumed, but never tells the fresh sampler which epoch it is in: a resume in epoch 1 or later
continues through epoch 0's permutation. --fixed sets the sampler's epoch on resume.
"""

import argparse
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--steps", type=int, default=30)
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
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "torch_rng": torch.get_rng_state()}, f"ckpt/step{step}/rank{rank}.pt")


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

epoch, pos = divmod(step, len(loader))
if args.fixed:
    sampler.set_epoch(epoch)
while step < args.steps:
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
    sampler.set_epoch(epoch)  # reshuffle for the next epoch
dist.destroy_process_group()
