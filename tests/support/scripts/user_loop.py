"""A user's DDP training loop with its own torch.save checkpoints, and one classic resume mistake per --bug.

Written as users write them: a DistributedSampler, numpy augmentation, dropout, AdamW with a LambdaLR
schedule, per-rank checkpoint files with a two-phase commit (every rank saves, a barrier, rank 0
writes ``latest``), resume from ``latest`` on start. No step extras: with ``--probe`` it calls
``harness.probe.step(step, loss=, batch=, model=, optimizer=)`` and ``probe.finish`` only; without it
there is no harness import at all (auto mode).

--bug (each a real-world mistake; ``none`` is the correct loop):
  sampler_epoch   the resumed epoch's sampler.set_epoch is not called: epoch 0's order is replayed
  no_skip         the resumed epoch starts from its first batch instead of the saved position
  accum           checkpoints at each epoch's end, mid accumulation window; the window counter restarts at 0
  rng_other_rank  every rank restores rank 0's RNG states
  numpy_rng       numpy's RNG is not saved
  torch_rng       torch's RNG is not restored (dropout masks differ)
  lr              the scheduler is not saved: the schedule restarts
  optimizer       the optimizer is not saved: AdamW's moments restart
  oldest          the resume loads the oldest checkpoint kept, not the newest
  ema             an EMA of the weights is kept and exported at the end (ema.pt), never checkpointed
  rank_race       every rank loads its own newest file, ignoring ``latest`` (no commit protocol); the ranks
                  save one after another (rank 0 first), so a kill in rank 1's save leaves them apart
  latent_rng      correct, but the DataLoader iterator is created after the RNG is restored (its base-seed
                  draw moves torch's RNG), with --dropout 0 nothing draws from it afterwards: RNG only
"""

import argparse
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

BUGS = ("none", "sampler_epoch", "no_skip", "accum", "rng_other_rank", "numpy_rng", "torch_rng", "lr", "optimizer",
        "oldest", "ema", "latent_rng", "rank_race")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bug", choices=BUGS, default="none")
    p.add_argument("--probe", action="store_true")
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--save-every", type=int, default=3)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--no-ddp", action="store_true",
                   help="all-reduce each gradient by hand in a fixed order (DDP's bucket rebuild after a restart "
                        "sums in another order at 3+ ranks: a real reduction-order divergence)")
    a = p.parse_args()
    bug = a.bug
    accum = 5 if bug == "accum" else a.accum
    probe = None
    if a.probe:
        from harness import probe

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    random.seed(0)
    np.random.seed(rank)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    ckpt_dir = os.path.join(probe.run_dir(), "ckpt") if probe else "ckpt"
    os.makedirs(ckpt_dir, exist_ok=True)

    g = torch.Generator().manual_seed(1234)
    data = TensorDataset(torch.randn(24 * world, 8, generator=g), torch.randn(24 * world, 1, generator=g))
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=2, sampler=sampler)  # 12 batches per rank and epoch
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(a.dropout), torch.nn.Linear(16, 1))
    for q in net.parameters():
        dist.broadcast(q.data, 0)
    model = net if a.no_ddp else torch.nn.parallel.DistributedDataParallel(net)
    inner = net
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
    ema = [q.detach().clone() for q in model.parameters()] if bug == "ema" else None

    step, epoch, pos, micro = 0, 0, 0, 0
    latest = os.path.join(ckpt_dir, "latest")
    if os.path.exists(latest):
        kept = sorted(int(n.split("_")[0][4:]) for n in os.listdir(ckpt_dir) if n.endswith(f"_rank{rank}.pt"))
        with open(latest) as f:
            at = int(f.read())
        if bug == "oldest":
            at = kept[0]
        if bug == "rank_race":
            at = kept[-1]
        src = 0 if bug == "rng_other_rank" else rank
        state = torch.load(os.path.join(ckpt_dir, f"step{at}_rank{rank}.pt"), weights_only=False)
        rng = torch.load(os.path.join(ckpt_dir, f"step{at}_rank{src}.pt"), weights_only=False)["rng"]
        inner.load_state_dict(state["model"])
        if bug != "optimizer":
            opt.load_state_dict(state["optimizer"])
        if bug != "lr":
            sched.load_state_dict(state["scheduler"])
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        micro = 0 if bug == "accum" else state["micro"]
        restore = lambda: (random.setstate(rng["python"]),  # noqa: E731
                           None if bug == "numpy_rng" else np.random.set_state(rng["numpy"]),
                           None if bug == "torch_rng" else torch.set_rng_state(rng["torch"]))
        if bug == "latent_rng":
            restore()  # before the iterator is created: its base-seed draw moves torch's RNG
        if ema is not None and "ema" in state:
            ema = state["ema"]
    else:
        restore = None

    def save():
        state = {"model": inner.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "epoch": epoch, "pos": pos, "micro": micro,
                 "rng": {"python": random.getstate(), "torch": torch.get_rng_state()}}
        if bug != "numpy_rng":
            state["rng"]["numpy"] = np.random.get_state()
        else:
            state["rng"]["numpy"] = None
        if bug != "lr":
            state["scheduler"] = sched.state_dict()
        for r in (range(world) if bug == "rank_race" else [rank]):
            if r == rank:
                torch.save(state, os.path.join(ckpt_dir, f"step{step}_rank{rank}.pt"))
            if bug == "rank_race":
                dist.barrier()
        dist.barrier()
        if rank == 0:
            with open(latest + ".tmp", "w") as f:
                f.write(str(step))
            os.replace(latest + ".tmp", latest)
        old = os.path.join(ckpt_dir, f"step{step - 3 * a.save_every}_rank{rank}.pt")
        if os.path.exists(old):
            os.remove(old)  # keep the last three

    while step < a.steps:
        if not (bug == "sampler_epoch" and restore is not None):
            sampler.set_epoch(epoch)
        it = iter(loader)
        skip = 0 if bug == "no_skip" else pos
        for _ in range(skip):
            next(it)
        if restore is not None:
            if bug != "latent_rng":
                restore()  # after the iterator's base-seed draw, as the uninterrupted run had it
            restore = None
        for x, y in it:
            pos += 1
            x = x + torch.from_numpy(np.random.normal(0, 0.05, x.shape).astype("float32"))
            loss = torch.nn.functional.mse_loss(model(x), y) / accum
            loss.backward()
            micro += 1
            if micro % accum:
                continue
            if a.no_ddp:
                for q in model.parameters():
                    dist.all_reduce(q.grad)
                    q.grad /= world
            opt.step()
            opt.zero_grad()
            sched.step()
            step += 1
            if ema is not None:
                with torch.no_grad():
                    for e, q in zip(ema, model.parameters()):
                        e.mul_(0.9).add_(q.detach(), alpha=0.1)
            if probe:
                probe.step(step, loss=loss, batch=(x, y), model=model, optimizer=opt)
            if bug != "accum" and step % a.save_every == 0:
                save()
            if step == a.steps:
                break
        else:
            epoch, pos = epoch + 1, 0
            if bug == "accum":
                save()  # at the epoch's end, mid accumulation window
            continue
        break
    if ema is not None and rank == 0:
        torch.save({f"ema.{i}": e for i, e in enumerate(ema)}, "ema.pt" if not probe else
                   os.path.join(probe.run_dir(), "ema.pt"))
    if probe:
        probe.finish(model=model, optimizer=opt)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
