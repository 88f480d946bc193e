"""Only the weights are checkpointed: a resumed job starts Adam over with zero moments.

Source: https://github.com/NVlabs/stylegan2-ada-pytorch/issues/108 ("restoring optimizer state during
checkpoint resuming": the resume loads the networks but never the Adam optimizers' states).

A data-parallel job at 3 ranks that averages its gradients by hand (an all_reduce per parameter, as in
PyTorch's "Writing Distributed Applications" tutorial) trains with Adam, and saves the model, the step
and the RNG state every 4 steps, not the optimizer. After a resume Adam's moments and step counts
start from zero, so the first update after the resume is another one. --fixed saves and restores the
optimizer too.
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
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
torch.manual_seed(100 + rank)  # dropout differs per rank


def average_gradients():
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world


def save(step):
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    state = {"model": model.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}
    if args.fixed:
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, f"ckpt/step{step}/rank{rank}.pt")


def newest():
    steps = [int(d[4:]) for d in os.listdir("ckpt")] if os.path.isdir("ckpt") else []
    done = [s for s in steps if all(os.path.exists(f"ckpt/step{s}/rank{r}.pt") for r in range(world))]
    return max(done, default=0)


step = newest()
if step:
    state = torch.load(f"ckpt/step{step}/rank{rank}.pt", weights_only=False)
    model.load_state_dict(state["model"])
    torch.set_rng_state(state["torch_rng"])
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])

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
