"""A plain DeepSpeed ZeRO-2 (or --stage 3) training script that never calls the probe (unless --probe): an auto-mode twin.

Each rank trains an MLP with dropout through ``deepspeed.initialize`` (ZeRO stage 2, a torch AdamW,
gradient accumulation over 2 micro-batches, gloo on CPU with ``DS_ACCELERATOR=cpu``), on its
DistributedSampler shard of a synthetic set, with noise from numpy's and python's global RNGs. Every
--save-every steps it calls ``engine.save_checkpoint(CKPT_DIR, tag="step{N}", client_state=...)``
(CKPT_DIR defaults to the relative path ``ckpt``: auto mode's working directory is the run's own
folder); on start it resumes with ``engine.load_checkpoint(CKPT_DIR)`` (DeepSpeed's ``latest`` tag) and
skips the batches of the epoch already consumed.

--probe      the instrumented twin: probe.step after each optimizer step, probe.finish at the end,
             checkpoints under probe.run_dir() (the probe is imported by name, so the harness still takes
             this file for a plain script: run the twin with auto=False)
--save-rng   also save each rank's python/numpy/torch RNG states next to the checkpoint (torch.save to
             CKPT_DIR/step{N}/rng_rank{r}.pt) and restore them: DeepSpeed's checkpoint holds none (and its
             client_state is rank 0's only), so without this flag the resumed run draws other dropout masks
             and noise
--deterministic  torch.use_deterministic_algorithms(True), which also fills torch.empty: ZeRO-3 pads its
             partitions with such memory, which is otherwise other bytes on every run
"""

import argparse
import importlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

os.environ.setdefault("DS_ACCELERATOR", "cpu")
import deepspeed  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=16)
parser.add_argument("--save-every", type=int, default=3)
parser.add_argument("--stage", type=int, default=2)
parser.add_argument("--save-rng", action="store_true")
parser.add_argument("--probe", action="store_true")
parser.add_argument("--deterministic", action="store_true")
args = parser.parse_args()
probe = importlib.import_module("harness.probe") if args.probe else None
ckpt_dir = os.path.join(probe.run_dir(), "ckpt") if probe else "ckpt"
ACCUM = 2
if args.deterministic:  # also fills torch.empty: ZeRO-3 pads its partitions with uninitialized memory
    torch.use_deterministic_algorithms(True)

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
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": ACCUM,
          "zero_optimization": {"stage": args.stage}, "zero_allow_untested_optimizer": True,
          "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}
engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config, dist_init_required=False)
torch.manual_seed(100 + rank)  # dropout differs per rank


def rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


step = 0
if os.path.isfile(os.path.join(ckpt_dir, "latest")):
    _, client = engine.load_checkpoint(ckpt_dir)
    step = client["step"]
    if args.save_rng:
        rng = torch.load(os.path.join(ckpt_dir, f"step{step}", f"rng_rank{rank}.pt"), weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    print(f"rank {rank}: resumed from step {step}", flush=True)

epoch, pos = divmod(step * ACCUM, per_epoch)
window, window_loss = [], None
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        if i < pos:
            continue  # consumed before the checkpoint
        noisy = x + torch.from_numpy(np.random.normal(0, 0.05, x.shape).astype("float32")) * random.random()
        boundary = (i + 1) % ACCUM == 0
        engine.set_gradient_accumulation_boundary(boundary)
        loss = torch.nn.functional.mse_loss(engine(noisy), y)
        engine.backward(loss)
        engine.step()  # the optimizer steps at the accumulation boundary only
        window.append((x, y))
        window_loss = loss.detach() if window_loss is None else window_loss + loss.detach()
        if not boundary:
            continue
        step += 1
        if probe:
            probe.step(step, loss=window_loss, batch=window, model=engine.module, optimizer=optimizer)
        window, window_loss = [], None
        if step % args.save_every == 0:
            if args.save_rng:  # before save_checkpoint, which writes the "latest" tag that a resume loads
                os.makedirs(os.path.join(ckpt_dir, f"step{step}"), exist_ok=True)
                torch.save(rng_state(), os.path.join(ckpt_dir, f"step{step}", f"rng_rank{rank}.pt"))
            engine.save_checkpoint(ckpt_dir, tag=f"step{step}", client_state={"step": step})
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0

if probe:
    probe.finish(model=engine.module, optimizer=optimizer)
dist.destroy_process_group()
