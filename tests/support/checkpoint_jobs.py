"""Helpers shared by the checkpoint tests: build a small training state, and compare states byte for byte."""

from __future__ import annotations

import os
import random
import traceback

import numpy as np
import torch
import torch.distributed as dist

from harness.checkpoint import Checkpointer, ProjectConfiguration


def state_bytes(obj, path: str = "") -> list[tuple[str, object]]:
    """Flatten a nested state into (path, exact value) pairs: tensors as dtype+shape+raw bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return [(path, (str(t.dtype), tuple(t.shape), raw))]
    if isinstance(obj, np.ndarray):
        return [(path, (str(obj.dtype), obj.shape, obj.tobytes()))]
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() for pair in state_bytes(v, f"{path}/{k!r}")]
    if isinstance(obj, (list, tuple)):
        return [(path, type(obj).__name__)] + [pair for i, v in enumerate(obj) for pair in state_bytes(v, f"{path}/{i}")]
    if isinstance(obj, float):
        return [(path, ("float", obj.hex()))]
    return [(path, (type(obj).__name__, obj))]


def next_draws(generators=()) -> list:
    """The next value of every RNG stream (consumes them)."""
    draws = [random.random(), np.random.random(), torch.rand(3).numpy().tobytes()]
    for g in generators:
        if isinstance(g, torch.Generator):
            draws.append(torch.rand(3, generator=g).numpy().tobytes())
        elif isinstance(g, np.random.Generator):
            draws.append(g.random())
        else:
            draws.append(g.random())
    return draws


class Counter:
    """A custom object: anything with state_dict/load_state_dict."""

    def __init__(self):
        self.n = 0
        self.history: list[float] = []
        self.buffer = torch.zeros(3)

    def state_dict(self):
        return {"n": self.n, "history": list(self.history), "buffer": self.buffer.clone()}

    def load_state_dict(self, sd):
        self.n, self.history, self.buffer = sd["n"], list(sd["history"]), sd["buffer"].clone()


def make_job(project_dir, seed: int = 0, width: int = 8, **config):
    """A model, AdamW, a warmup schedule, a shuffled DataLoader and a custom object, registered."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Dropout(0.2), torch.nn.Linear(width, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    data = torch.utils.data.TensorDataset(torch.arange(40, dtype=torch.float32).reshape(10, 4).repeat(4, 1),
                                          torch.arange(40, dtype=torch.float32).reshape(40, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    config.setdefault("automatic_checkpoint_naming", True)
    ckpt = Checkpointer(ProjectConfiguration(project_dir, **config))
    model, opt, loader, sched = ckpt.prepare(model, opt, loader, sched)
    counter = Counter()
    ckpt.register_for_checkpointing(counter)
    return ckpt, model, opt, loader, sched, counter


def train(job, steps: int) -> list[str]:
    """Train until ckpt.step == steps; returns the losses as exact hex floats."""
    ckpt, model, opt, loader, sched, counter = job
    losses = []
    while ckpt.step < steps:
        for x, y in loader:
            noise = torch.from_numpy(np.random.standard_normal(y.shape).astype("float32")) * 0.01
            loss = ((model(x) + noise - y) ** 2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
            ckpt.step += 1
            counter.n += 1
            counter.history.append(loss.item())
            losses.append(loss.item().hex())
            if ckpt.step >= steps:
                break
    return losses


def full_state(job) -> list:
    ckpt, model, opt, loader, sched, counter = job
    return state_bytes({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "loader": loader.state_dict(), "counter": counter.state_dict(), "step": ckpt.step})


def run_rank_job(work, out: str) -> None:
    """A rank job script's body: ``work(rank, world)`` in a gloo process group, then ``out/ok{rank}``, or
    ``out/err{rank}`` with the traceback (what the tests read to name the failing rank)."""
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        work(rank, world)
        with open(os.path.join(out, f"ok{rank}"), "w") as f:
            f.write("ok")
    except BaseException:
        with open(os.path.join(out, f"err{rank}"), "w") as f:
            f.write(f"rank {rank}:\n{traceback.format_exc()}")
        raise
    finally:
        dist.destroy_process_group()
