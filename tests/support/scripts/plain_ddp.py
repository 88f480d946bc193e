"""A plain torch DDP training script that never calls the probe (unless --probe): auto mode's test job.

Each rank trains an MLP with dropout on its DistributedSampler shard of a synthetic set, with noise from
numpy's and python's global RNGs; every --save-every steps each rank writes its whole state (model,
optimizers, step, RNG states) with torch.save to CKPT_DIR/step{N}/rank{r}.pt (CKPT_DIR defaults to the
relative path ``ckpt``: the working directory, which auto mode makes the run's own folder). On start it
resumes from the newest step for which every rank's file exists, skipping the batches of the epoch
already consumed.

--probe            the instrumented twin: probe.step after each step, probe.finish at the end, checkpoints
                   under probe.run_dir() (the probe is imported by name, so the harness still takes
                   this file for a plain script: run the twin with auto=False)
--bug rng          on resume, the RNG states are not restored
--bug no-resume    never restores anything (it starts over after a kill)
--bug perturb      after restoring, nudges the first layer's weight (a state the run never had)
--opts two         two optimizers (AdamW on the first layer, SGD+momentum on the last) stepped together
--opts shuffled    the same two, stepped in an order that alternates
--no-step          computes the loss and calls backward, but never steps an optimizer
--ckpt-dir DIR     where checkpoints go (an absolute path shared between runs: a foreign checkpoint)
"""

import argparse
import importlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=16)
parser.add_argument("--save-every", type=int, default=4)
parser.add_argument("--ckpt-dir", default=None)
parser.add_argument("--bug", choices=["rng", "no-resume", "perturb"], default=None)
parser.add_argument("--probe", action="store_true")
parser.add_argument("--opts", choices=["one", "two", "shuffled"], default="one")
parser.add_argument("--no-step", action="store_true")
args = parser.parse_args()
probe = importlib.import_module("harness.probe") if args.probe else None
args.ckpt_dir = args.ckpt_dir or (os.path.join(probe.run_dir(), "ckpt") if probe else "ckpt")

dist.init_process_group(os.environ.get("HARNESS_BACKEND", "gloo"))
rank, world = dist.get_rank(), dist.get_world_size()
random.seed(rank)
np.random.seed(rank)
torch.manual_seed(0)  # the same initial weights on every rank

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(128, 8, generator=gen), torch.randn(128, 1, generator=gen))
sampler = DistributedSampler(data, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=8, sampler=sampler, generator=torch.Generator())  # not the global RNG
per_epoch = len(loader)
model = torch.nn.parallel.DistributedDataParallel(
    torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1)))
torch.manual_seed(100 + rank)  # dropout differs per rank
if args.opts == "one":
    opts = [torch.optim.AdamW(model.parameters(), lr=1e-2)]
else:
    opts = [torch.optim.AdamW(model.module[0].parameters(), lr=1e-2),
            torch.optim.SGD(model.module[2].parameters(), lr=1e-2, momentum=0.9)]


def save(step):
    folder = os.path.join(args.ckpt_dir, f"step{step}")
    os.makedirs(folder, exist_ok=True)
    state = {"model": model.module.state_dict(), "opts": [o.state_dict() for o in opts], "step": step,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
    path = os.path.join(folder, f"rank{rank}.pt")
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def latest_complete():
    steps = [int(n[4:]) for n in os.listdir(args.ckpt_dir) if n.startswith("step")] if os.path.isdir(args.ckpt_dir) else []
    done = [s for s in steps if all(os.path.exists(os.path.join(args.ckpt_dir, f"step{s}", f"rank{r}.pt"))
                                    for r in range(world))]
    return max(done, default=0)


step = 0
start = latest_complete() if args.bug != "no-resume" else 0
if start:
    state = torch.load(os.path.join(args.ckpt_dir, f"step{start}", f"rank{rank}.pt"), weights_only=False)
    model.module.load_state_dict(state["model"])
    for o, s in zip(opts, state["opts"]):
        o.load_state_dict(s)
    step = state["step"]
    if args.bug != "rng":
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
    if args.bug == "perturb":
        with torch.no_grad():
            model.module[0].weight.add_(1e-3)
    print(f"rank {rank}: resumed from step {step}", flush=True)

epoch, pos = divmod(step, per_epoch)
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        if i < pos:
            continue  # consumed before the checkpoint
        noisy = x + torch.from_numpy(np.random.normal(0, 0.05, x.shape).astype("float32")) * random.random()
        loss = torch.nn.functional.mse_loss(model(noisy), y)
        loss.backward()
        if not args.no_step:
            order = opts if args.opts != "shuffled" or step % 2 == 0 else opts[::-1]
            for o in order:
                o.step()
        for o in opts:
            o.zero_grad()
        step += 1
        if probe:
            probe.step(step, loss=loss, batch=(x, y), model=model, optimizer=opts[0])
        if step % args.save_every == 0:
            save(step)
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0

if probe:
    probe.finish(model=model, optimizer=opts[0])
dist.destroy_process_group()
