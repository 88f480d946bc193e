"""A plain HF Accelerate training script that never calls the probe (unless --probe): an auto-mode twin.

``Accelerator(cpu=True, gradient_accumulation_steps=2)`` prepares an MLP with dropout (DDP under gloo)
and a torch AdamW (``AcceleratedOptimizer``, which skips the step while accumulating); each rank reads
its DistributedSampler shard of a synthetic set, with noise from numpy's and python's global RNGs, and
trains with ``accelerator.accumulate`` / ``accelerator.backward``. Every --save-every optimizer steps it
calls ``accelerator.save_state(CKPT_DIR/step{N})`` (model, optimizer, every RNG state, and the loop's
counters registered with ``register_for_checkpointing``; CKPT_DIR defaults to the relative path
``ckpt``: auto mode's working directory is the run's own folder); on start it resumes with
``accelerator.load_state`` from the newest complete one and skips the batches of the epoch already
consumed.

--probe      the instrumented twin: probe.step after each optimizer step, probe.finish at the end,
             checkpoints under probe.run_dir() (the probe is imported by name, so the harness still takes
             this file for a plain script: run the twin with auto=False)
--bug skip   the resumed run starts its epoch over instead of skipping the batches it consumed
"""

import argparse
import importlib
import os
import random

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=16)
parser.add_argument("--save-every", type=int, default=3)
parser.add_argument("--bug", choices=["skip"], default=None)
parser.add_argument("--probe", action="store_true")
args = parser.parse_args()
probe = importlib.import_module("harness.probe") if args.probe else None
ckpt_dir = os.path.join(probe.run_dir(), "ckpt") if probe else "ckpt"
ACCUM = 2


class Progress:
    """The loop's counters, saved by save_state (registered for checkpointing)."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, sd):
        self.step = int(sd["step"])


accelerator = Accelerator(cpu=True, gradient_accumulation_steps=ACCUM)
rank, world = accelerator.process_index, accelerator.num_processes
random.seed(rank)
np.random.seed(rank)
torch.manual_seed(0)  # the same initial weights on every rank

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(128, 8, generator=gen), torch.randn(128, 1, generator=gen))
sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=8, sampler=sampler, generator=torch.Generator())  # not the global RNG
per_epoch = len(loader)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
model, optimizer = accelerator.prepare(model, optimizer)
progress = Progress()
accelerator.register_for_checkpointing(progress)
torch.manual_seed(100 + rank)  # dropout differs per rank


def latest_complete():
    if not os.path.isdir(ckpt_dir):
        return None
    done = [int(n[4:]) for n in os.listdir(ckpt_dir) if n.startswith("step") and
            os.path.isfile(os.path.join(ckpt_dir, n, "done"))]
    return max(done, default=None)


latest = latest_complete()
if latest is not None:
    accelerator.load_state(os.path.join(ckpt_dir, f"step{latest}"))
    print(f"rank {rank}: resumed from step {progress.step}", flush=True)

step = progress.step
epoch, pos = divmod(step * ACCUM, per_epoch)
if args.bug == "skip":
    pos = 0
window, window_loss = [], None
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        if i < pos:
            continue  # consumed before the checkpoint
        noisy = x + torch.from_numpy(np.random.normal(0, 0.05, x.shape).astype("float32")) * random.random()
        with accelerator.accumulate(model):
            loss = torch.nn.functional.mse_loss(model(noisy), y)
            accelerator.backward(loss)
            optimizer.step()  # skipped by AcceleratedOptimizer until the accumulation boundary
            optimizer.zero_grad()
        window.append((x, y))
        window_loss = loss.detach() if window_loss is None else window_loss + loss.detach()
        if not accelerator.sync_gradients:
            continue
        step += 1
        progress.step = step
        if probe:
            probe.step(step, loss=window_loss, batch=window, model=model, optimizer=optimizer.optimizer)
        window, window_loss = [], None
        if step % args.save_every == 0:
            folder = os.path.join(ckpt_dir, f"step{step}")
            accelerator.save_state(folder)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:  # every rank's files are written: the checkpoint is complete
                open(os.path.join(folder, "done"), "w").close()
            accelerator.wait_for_everyone()
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0

if probe:
    probe.finish(model=model, optimizer=optimizer.optimizer)
accelerator.end_training()
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
