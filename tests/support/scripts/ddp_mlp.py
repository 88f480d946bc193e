"""A small DDP training job that resumes from its own checkpoints (a correct one, unless --bug).

Each rank trains an MLP with dropout on its shard of a shuffled synthetic dataset, adds noise drawn
from python's and numpy's global RNGs, and every --save-every steps writes its full state (model,
optimizer, the python/numpy/torch RNG states) to probe.run_dir()/step{N}-rank{r}.safetensors. On
start it resumes from the newest step for which every rank's file exists.

--bug reseed     on resume, reseed the RNGs as at a fresh start instead of restoring them
--bug crash-on-resume   raise an error right after loading a checkpoint
--bug str-keys   a per-epoch counter {epoch: steps} goes through JSON in the checkpoint, and its int keys
                 come back as str keys
--bug ignore-sigterm     ignore SIGTERM (the job runs on)
--bug catch-fault        catch the probe's injected exception around the step and carry on
--bug metrics-check      append a metrics row per step to a file; at the end exit 1 if a step appears twice
                         (it does after a resume, whose re-executed steps append again)
--unseeded       leave numpy's global RNG unseeded (the training is then nondeterministic)
--graceful       on SIGTERM, save after the current step and exit 0
--sleep S        sleep S seconds per step (for tests that need a slow run)
"""

import argparse
import glob
import json
import os
import random
import re
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from harness import probe

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=24)
parser.add_argument("--save-every", type=int, default=4)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--bug", choices=["reseed", "crash-on-resume", "str-keys", "ignore-sigterm", "catch-fault",
                                      "metrics-check"], default=None)
parser.add_argument("--unseeded", action="store_true")
parser.add_argument("--graceful", action="store_true")
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--seed", type=int, default=1234)
args = parser.parse_args()

dist.init_process_group(os.environ.get("HARNESS_BACKEND", "gloo"))
rank, world = dist.get_rank(), dist.get_world_size()
run_dir = probe.run_dir()

# The data: a fixed synthetic set; each epoch a permutation drawn from a generator seeded by the epoch.
data_gen = torch.Generator().manual_seed(args.seed)
X = torch.randn(256, 16, generator=data_gen)
Y = (X[:, :1] * 2 - X[:, 1:2]).clone()
per_rank = len(X) // world
steps_per_epoch = per_rank // args.batch


def batch_for(step):
    epoch, i = divmod(step - 1, steps_per_epoch)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(args.seed + epoch))
    idx = order[rank::world][i * args.batch:(i + 1) * args.batch]
    return X[idx], Y[idx]


def seed_all():
    random.seed(args.seed + rank)
    np.random.seed(None if args.unseeded else args.seed + rank)
    torch.manual_seed(args.seed + rank)


seed_all()
torch.manual_seed(args.seed)  # identical initial weights on every rank
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1))
torch.manual_seed(args.seed + rank)
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.9)


def save(step):
    state = {f"model/{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for pid, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            state[f"opt/{pid}/{k}"] = v.detach().clone()
    state["rng/torch"] = torch.get_rng_state()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state["rng/numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    state["rng/numpy_rest"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    state["rng/numpy_cached"] = torch.tensor([cached], dtype=torch.float64)
    version, words, gauss = random.getstate()
    state["rng/python"] = torch.tensor(words, dtype=torch.int64)
    metadata = {"opt_groups": json.dumps(opt.state_dict()["param_groups"]), "sched": json.dumps(sched.state_dict()),
                "epoch_steps": json.dumps(epoch_steps)}
    probe.point("ckpt.save", step=step)
    path = os.path.join(run_dir, f"step{step}-rank{rank}.safetensors")
    save_file(state, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)
    probe.point("ckpt.saved", step=step)


def latest_complete_step():
    steps = set()
    for path in glob.glob(os.path.join(run_dir, "step*-rank0.safetensors")):
        step = int(re.search(r"step(\d+)-rank0", path).group(1))
        if all(os.path.exists(os.path.join(run_dir, f"step{step}-rank{r}.safetensors")) for r in range(world)):
            steps.add(step)
    return max(steps, default=0)


def load(step):
    path = os.path.join(run_dir, f"step{step}-rank{rank}.safetensors")
    state = load_file(path)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model/")})
    groups = json.loads(metadata["opt_groups"])
    for g in groups:  # JSON made the betas tuple a list: restore it, or the resumed state differs in type
        g["betas"] = tuple(g["betas"])
    opt_state = {"state": {}, "param_groups": groups}
    for key, v in state.items():
        if key.startswith("opt/"):
            _, pid, k = key.split("/")
            opt_state["state"].setdefault(int(pid), {})[k] = v
    opt.load_state_dict(opt_state)
    sched.load_state_dict(json.loads(metadata["sched"]))
    epoch_steps.clear()
    loaded = json.loads(metadata["epoch_steps"])  # JSON object keys are always str
    epoch_steps.update(loaded if args.bug == "str-keys" else {int(k): v for k, v in loaded.items()})
    if args.bug == "reseed":
        seed_all()
        return
    torch.set_rng_state(state["rng/torch"])
    pos, has_gauss = state["rng/numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["rng/numpy_cached"])))
    random.setstate((3, tuple(state["rng/python"].tolist()), None))


epoch_steps: dict[int, int] = {}
stop = False
if args.bug == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.graceful:
    def on_sigterm(signum, frame):
        global stop
        stop = True

    signal.signal(signal.SIGTERM, on_sigterm)

start = latest_complete_step()
if start:
    load(start)
    probe.point("ckpt.loaded", step=start)
    if args.bug == "crash-on-resume":
        raise RuntimeError(f"rank {rank}: optimizer state does not match the model (deliberate test bug)")
    print(f"rank {rank}: resumed from step {start}", flush=True)

for step in range(start + 1, args.steps + 1):
    x, y = batch_for(step)
    x = x + torch.tensor(np.random.normal(0, 0.01, size=x.shape), dtype=x.dtype) * random.random()
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(ddp(x), y)
    loss.backward()
    opt.step()
    sched.step()
    epoch = (step - 1) // steps_per_epoch
    epoch_steps[epoch] = epoch_steps.get(epoch, 0) + 1
    try:
        probe.step(step, loss=loss, batch=(x, y), model=ddp, optimizer=opt, lr=sched.get_last_lr()[0])
    except probe.InjectedFault:
        if args.bug != "catch-fault":
            raise
        print(f"rank {rank}: caught the injected fault, carrying on", flush=True)
    if args.bug == "metrics-check" and rank == 0:
        with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, "loss": loss.item()}) + "\n")
    if args.sleep:
        time.sleep(args.sleep)
    if step % args.save_every == 0 or stop:
        save(step)
    if stop:
        print(f"rank {rank}: SIGTERM, saved step {step}, exiting", flush=True)
        sys.exit(0)

probe.finish(model=ddp, optimizer=opt, scheduler=sched.state_dict(), epoch_steps=epoch_steps)
dist.destroy_process_group()
if args.bug == "metrics-check" and rank == 0:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        logged = [json.loads(line)["step"] for line in f]
    if len(logged) != len(set(logged)):
        sys.exit(f"rank {rank}: metrics.jsonl has duplicated steps {sorted(s for s in set(logged) if logged.count(s) > 1)}")
