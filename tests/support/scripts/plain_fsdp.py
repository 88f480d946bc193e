"""A plain FSDP2 training script that never calls the probe (unless --probe): an auto-mode twin.

Each rank trains an MLP with dropout sharded with ``fully_shard`` on a 1-D CPU mesh (gloo; the
parameters are DTensors, each rank steps its AdamW over its own shards), on its DistributedSampler
shard of a synthetic set, with noise from numpy's and python's global RNGs. Every --save-every steps
it writes model and optimizer through ``get_state_dict`` + ``dcp.save`` to CKPT_DIR/step{N} (CKPT_DIR
defaults to the relative path ``ckpt``: auto mode's working directory is the run's own folder), and
each rank's python/numpy/torch RNG states with torch.save to CKPT_DIR/step{N}/rng_rank{r}.pt (DCP
holds no RNG state). On start it resumes from the newest step whose DCP ``.metadata`` and every
rank's RNG file exist: ``get_state_dict`` (which, on a fresh optimizer, steps it once with lr 0 to
create its state), ``dcp.load`` into it, ``set_state_dict``; then it skips the batches of the epoch
already consumed.

--probe      the instrumented twin: probe.step after each step, probe.finish at the end, checkpoints
             under probe.run_dir() (the probe is imported by name, so the harness still takes this file
             for a plain script: run the twin with auto=False)
--bug rng    on resume, the RNG states are not restored (other dropout masks and noise)
--bug optim  on resume, only the model is restored (the optimizer starts over)
"""

import argparse
import importlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_model_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=16)
parser.add_argument("--save-every", type=int, default=3)
parser.add_argument("--bug", choices=["rng", "optim"], default=None)
parser.add_argument("--probe", action="store_true")
args = parser.parse_args()
probe = importlib.import_module("harness.probe") if args.probe else None
ckpt_dir = os.path.join(probe.run_dir(), "ckpt") if probe else "ckpt"

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
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1))
mesh = init_device_mesh("cpu", (world,))
for layer in (model[0], model[2]):
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
torch.manual_seed(100 + rank)  # dropout differs per rank


def rng_path(step, r):
    return os.path.join(ckpt_dir, f"step{step}", f"rng_rank{r}.pt")


def save(step):
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd, "step": step}, checkpoint_id=os.path.join(ckpt_dir, f"step{step}"))
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save(rng, rng_path(step, rank) + ".tmp")
    os.replace(rng_path(step, rank) + ".tmp", rng_path(step, rank))
    dist.barrier()  # every rank's RNG file is there before any rank can see the step as complete


def latest_complete():
    steps = [int(n[4:]) for n in os.listdir(ckpt_dir) if n.startswith("step")] if os.path.isdir(ckpt_dir) else []
    done = [s for s in steps if os.path.exists(os.path.join(ckpt_dir, f"step{s}", ".metadata"))
            and all(os.path.exists(rng_path(s, r)) for r in range(world))]
    return max(done, default=0)


step = 0
start = latest_complete()
if start:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd, "step": 0}
    dcp.load(state, checkpoint_id=os.path.join(ckpt_dir, f"step{start}"))
    if args.bug == "optim":
        set_model_state_dict(model, state["model"])
        optimizer.state.clear()  # the lr-0 step of get_state_dict made state; a fresh optimizer has none
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    step = state["step"]
    if args.bug != "rng":
        rng = torch.load(rng_path(start, rank), weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
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
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if probe:
            probe.step(step, loss=loss, batch=(x, y), model=model, optimizer=optimizer)
        if step % args.save_every == 0:
            save(step)
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0

if probe:
    probe.finish(model=model, optimizer=optimizer)
dist.destroy_process_group()
