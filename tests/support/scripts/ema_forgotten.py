"""A plain torch DDP script that keeps an EMA of its model and forgets to checkpoint it (no harness import).

Each rank trains an MLP with AdamW on its DistributedSampler shard of a synthetic set and updates an EMA
of the weights after every step. Every --save-every steps each rank writes model, optimizer, step and its
torch RNG state with torch.save to ckpt/step{N}/rank{r}.pt (a relative path: the run's own folder under
the harness); on start it resumes from the newest step for which every rank's file exists, skipping the
batches of the epoch already consumed. At the end rank 0 exports ``torch.save(ema.state_dict(), "ema.pt")``.

The bug: the EMA is not in the checkpoint, so a resumed run restarts it from the restored weights and
exports another EMA, although training itself resumes bit for bit.

--ema averaged   torch.optim.swa_utils.AveragedModel with an EMA average (auto mode records it)
--ema manual     copy.deepcopy(model) updated under no_grad (auto mode cannot see it; the artefacts can)
--fixed          the fixed twin: the EMA is checkpointed and restored too

Run it on 2 ranks: with 3 or more, plain DDP's gradient all-reduce sums in another order in the first
step after a restart (DDP rebuilds its buckets after a process's first iteration), which the harness
reports as reduction_order before it gets to the EMA (plain_ddp.py does the same).
"""

import argparse
import copy
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

DECAY = 0.9

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=16)
parser.add_argument("--save-every", type=int, default=4)
parser.add_argument("--ema", choices=["averaged", "manual"], default="averaged")
parser.add_argument("--fixed", action="store_true")
args = parser.parse_args()


def main():
    dist.init_process_group(os.environ.get("HARNESS_BACKEND", "gloo"))
    rank, world = dist.get_rank(), dist.get_world_size()
    random.seed(rank), np.random.seed(rank), torch.manual_seed(0)  # the same initial weights on every rank
    torch.use_deterministic_algorithms(True)

    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(128, 8, generator=gen), torch.randn(128, 1, generator=gen))
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=8, sampler=sampler, generator=torch.Generator())  # not the global RNG
    per_epoch = len(loader)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    ckpt = "ckpt"

    def save(step):
        folder = os.path.join(ckpt, f"step{step}")
        os.makedirs(folder, exist_ok=True)
        state = {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "rng": torch.get_rng_state()}
        if args.fixed:
            state["ema"] = ema.state_dict()
        path = os.path.join(folder, f"rank{rank}.pt")
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)

    def latest_complete():
        steps = [int(n[4:]) for n in os.listdir(ckpt) if n.startswith("step")] if os.path.isdir(ckpt) else []
        done = [s for s in steps if all(os.path.exists(os.path.join(ckpt, f"step{s}", f"rank{r}.pt"))
                                        for r in range(world))]
        return max(done, default=0)

    step = latest_complete()
    state = None
    if step:
        state = torch.load(os.path.join(ckpt, f"step{step}", f"rank{rank}.pt"), weights_only=True)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        print(f"rank {rank}: resumed from step {step}", flush=True)

    # made from the current weights: after a resume, the restored ones (the bug, unless --fixed restores it)
    if args.ema == "averaged":
        ema = AveragedModel(model.module, multi_avg_fn=get_ema_multi_avg_fn(DECAY))

        def update_ema():
            ema.update_parameters(model.module)
    else:
        ema = copy.deepcopy(model.module)
        for p in ema.parameters():
            p.requires_grad_(False)

        def update_ema():
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.module.parameters()):
                    e.mul_(DECAY).add_(p, alpha=1 - DECAY)
    if state is not None and args.fixed:
        ema.load_state_dict(state["ema"])

    epoch, pos = divmod(step, per_epoch)
    while step < args.steps:
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i < pos:
                continue  # consumed before the checkpoint
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            update_ema()
            step += 1
            if step % args.save_every == 0:
                save(step)
            if step == args.steps:
                break
        epoch, pos = epoch + 1, 0

    if rank == 0:
        torch.save(ema.state_dict(), "ema.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
