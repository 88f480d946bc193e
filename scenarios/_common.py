"""Shared machinery of the built-in scenarios: arguments, process group, the training loop.

Every built-in scenario is a `Scenario` subclass. The base class *is* the default scenario
(`scenarios/default.py` only names it); the other correct scenarios override the building blocks
(`build_dataset`, `build_model`, `forward_loss`, `build_loader`, ...); each buggy variant in
`scenarios/buggy/` overrides exactly one **hook** with its one mistake. The hooks are the methods
under "HOOKS" below, and the training loop marks where each one runs with ``# HOOK: name``.

The loop (`Scenario.train`), in the shape of a typical Accelerate/DDP script:

    seed everything; build data, model (DDP), AdamW, warmup+decay LambdaLR
    Checkpointer(project_dir=probe.run_dir(), automatic naming, total_limit) ...... HOOK prepare
    resumed_from = ckpt.load_state(missing_ok=True) ............................... HOOK after_load
    epoch = loader.epoch .......................................................... HOOK start_epoch
    while step < steps:
        loader.set_epoch(epoch)
        for batch in loader:                     one micro-batch
            micro += 1; sync = micro % accum == 0 or last batch of the epoch
            forward/backward (DDP no_sync unless sync); probe.point("microbatch")
            if sync: opt.step(); sched.step(); zero_grad; step += 1 .............. HOOK after_step
                     probe.step(step, loss, batch, model, optimizer, lr, window, ...)
                     every ckpt_every steps: ckpt.save_state()
        epoch += 1
    probe.finish(model, optimizer, scheduler, data position, counters, ...)

Gradient accumulation follows `accelerate.Accelerator.accumulate`: gradients are synchronized every
`accum` micro-batches counted globally (`TrainState.micro`, like `accelerator.step`), and also at
the last batch of an epoch (Accelerate's `sync_with_dataloader`). So with 10 batches per epoch and
accum 4 the windows are 4,4,2 | 2,4,4 | 4,4,2 | ... and the accumulation phase after an odd-epoch
end is not zero: the micro-batch counter is real training state and is checkpointed.

Strategy: ``$HARNESS_STRATEGY`` (``harness run --strategy S``) picks how the model is wrapped:
``ddp`` (default: DistributedDataParallel), ``fsdp`` (FSDP2 ``fully_shard`` on a device mesh of all
ranks: a CPU mesh under gloo, also on a GPU host, pytorch#132471), or ``deepspeed-zero0`` ..
``deepspeed-zero3`` (``deepspeed.initialize`` with a torch AdamW and a config dict for the stage;
the engine steps the optimizer, ``$DS_ACCELERATOR`` defaults to ``cpu`` on CPU). Gradient
accumulation keeps Accelerate's windows under each: DDP ``no_sync``, FSDP2
``set_requires_gradient_sync``, DeepSpeed ``set_gradient_accumulation_boundary``. The checkpointer
detects the strategy from the prepared model (``harness.checkpoint.strategy``).

Environment: run by torchrun (``torchrun --nproc-per-node 2 -m harness.scenarios.default``) or by the
harness (runpy, same env). Backend: ``$HARNESS_BACKEND``, else nccl with CUDA, else gloo. On CUDA
each rank uses ``cuda:$LOCAL_RANK``. All randomness is seeded; deterministic algorithms are on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from harness import probe, run_env
from harness.checkpoint import Checkpointer, ProjectConfiguration

# CUDA determinism needs this before cuBLAS initializes; harmless on CPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from harness.settings import STRATEGIES  # noqa: E402  (harness run --strategy's names, defined once)


def strategy_name() -> str:
    """``$HARNESS_STRATEGY``, default ddp; an unknown name is refused."""
    name = os.environ.get(run_env.STRATEGY) or "ddp"
    if name not in STRATEGIES:
        raise SystemExit(f"{run_env.STRATEGY}={name!r} is not one of {', '.join(STRATEGIES)}")
    return name


def deepspeed_config(args, stage: int) -> dict:
    """The DeepSpeed config of the built-in scenarios: fp32, one ZeRO stage, a torch optimizer passed in."""
    return {
        "train_micro_batch_size_per_gpu": args.batch_size,
        "gradient_accumulation_steps": args.accum,
        # Buckets sized for these small models: DeepSpeed allocates them with torch.empty, which
        # deterministic mode fills (the 5e8-element default took seconds per micro-batch on CPU).
        "zero_optimization": {"stage": stage, "reduce_bucket_size": 2**20, "allgather_bucket_size": 2**20,
                              **({"stage3_prefetch_bucket_size": 2**20, "stage3_max_live_parameters": 2**22,
                                  "stage3_max_reuse_distance": 2**22} if stage == 3 else {})},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class _DeepSpeedWeights(nn.Module):
    """What the probe hashes under DeepSpeed: the module's parameters (complete under ZeRO 0-2) and the
    fp32 master partitions the (base) optimizer updates (ZeRO 1-3). Views, no copies."""

    def __init__(self, engine, optimizer, stage: int) -> None:
        super().__init__()
        if stage < 3:
            for i, (_, p) in enumerate(engine.module.named_parameters()):
                self.register_buffer(f"param_{i}", p.detach(), persistent=True)
        if stage == 3:  # the base optimizer's groups hold one sub-group at a time: take ZeRO-3's own list
            from harness import private_apis

            private_apis.require("deepspeed.zero3")
            for i, p in enumerate(engine.optimizer.fp32_partitioned_groups_flat):
                self.register_buffer(f"master_{i}", p.detach(), persistent=True)
        elif stage > 0:
            for g, group in enumerate(optimizer.param_groups):
                for i, p in enumerate(group["params"]):
                    self.register_buffer(f"master_{g}_{i}", p.detach(), persistent=True)


class _ZeRO3OptimizerView:
    """What the probe hashes of a ZeRO-3 optimizer: the base optimizer's state of each fp32 partition and
    its hyperparameters (ZeRO-3 swaps sub-groups in and out of the base optimizer's param groups, so the
    base optimizer's own state_dict() cannot name its state)."""

    def __init__(self, engine, optimizer) -> None:
        from harness import private_apis

        private_apis.require("deepspeed.zero3")
        self._flats = engine.optimizer.fp32_partitioned_groups_flat
        self._base = optimizer
        self.param_groups = [{"params": []} for _ in optimizer.param_groups]

    def state_dict(self) -> dict:
        state = {i: dict(self._base.state[f]) for i, f in enumerate(self._flats) if f in self._base.state}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": list(range(len(self._flats)))
                   if j == 0 else []} for j, g in enumerate(self._base.param_groups)]
        return {"state": state, "param_groups": groups}



# ------------------------------------------------------------------------------------------------
# small pieces


class TrainState:
    """Counters that are training state but belong to no torch object: the global micro-batch count.

    Registered with the checkpointer as a custom object (replicated: every rank has the same value).
    """

    def __init__(self) -> None:
        self.micro = 0

    def state_dict(self) -> dict:
        return {"micro": self.micro}

    def load_state_dict(self, sd: dict) -> None:
        self.micro = int(sd["micro"])


class NoisyBlobs(Dataset):
    """`n` points in `dim` dimensions labelled by a fixed random linear teacher.

    The points come from a private generator (the data set is the same in every process); every
    access adds augmentation noise drawn from the *global* torch and numpy RNGs of the process that
    loads it (the rank itself with num_workers=0, a worker otherwise).
    """

    def __init__(self, n: int, dim: int, classes: int, seed: int, noise: float = 0.1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        teacher = torch.randn(dim, classes, generator=g)
        self.y = (self.x @ teacher).argmax(dim=1)
        self.noise = noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        dim = self.x.shape[1]
        x = self.x[i] + self.noise * torch.randn(dim)  # torch RNG
        x = x + torch.from_numpy((self.noise * np.random.standard_normal(dim)).astype(np.float32))  # numpy RNG
        return x, self.y[i]


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.net(x)


def warmup_decay(warmup: int, total: int, floor: float = 0.1):
    """LR factor: linear warmup over `warmup` steps, then linear decay to `floor` at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(floor, 1.0 - (1.0 - floor) * (step - warmup) / max(1, total - warmup))

    return factor


def to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=False)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


@dataclass
class Run:
    """Everything the loop and the hooks share."""

    args: argparse.Namespace
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    rank_seed: int
    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    loader: object = None
    scheduler: object = None
    ckpt: Checkpointer | None = None
    state: TrainState = field(default_factory=TrainState)
    resumed_from: str | None = None
    extras: dict = field(default_factory=dict)  # scenario-specific objects (e.g. "ema")
    strategy: str = "ddp"  # $HARNESS_STRATEGY


# ------------------------------------------------------------------------------------------------


class Scenario:
    """The default scenario; subclasses change building blocks (correct scenarios) or one hook (buggy)."""

    name = "default"
    #: argparse defaults; subclasses update a copy
    defaults: dict = dict(
        steps=24, ckpt_every=5, accum=4, batch_size=8, samples=160, dim=16, hidden=64, classes=4,
        dropout=0.1, lr=3e-3, weight_decay=0.01, warmup=6, total_limit=2, num_workers=0, seed=0,
    )

    # -- arguments --------------------------------------------------------------------------------

    def parser(self) -> argparse.ArgumentParser:
        d = self.defaults
        p = argparse.ArgumentParser(prog=f"harness.scenarios.{self.name}",
                                    description=(type(self).__doc__ or "").strip())
        p.add_argument("--steps", type=int, default=d["steps"], help="optimizer steps in total (%(default)s)")
        p.add_argument("--ckpt-every", type=int, default=d["ckpt_every"], help="save every N steps (%(default)s)")
        p.add_argument("--accum", type=int, default=d["accum"], help="micro-batches per optimizer step (%(default)s)")
        p.add_argument("--batch-size", type=int, default=d["batch_size"], help="micro-batch per rank (%(default)s)")
        p.add_argument("--samples", type=int, default=d["samples"], help="data set size (%(default)s)")
        p.add_argument("--dim", type=int, default=d["dim"], help="input / model width (%(default)s)")
        p.add_argument("--hidden", type=int, default=d["hidden"], help="hidden width (%(default)s)")
        p.add_argument("--classes", type=int, default=d["classes"], help="classes / vocabulary (%(default)s)")
        p.add_argument("--dropout", type=float, default=d["dropout"], help="dropout probability (%(default)s)")
        p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate (%(default)s)")
        p.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="AdamW weight decay (%(default)s)")
        p.add_argument("--warmup", type=int, default=d["warmup"], help="LR warmup steps (%(default)s)")
        p.add_argument("--total-limit", type=int, default=d["total_limit"], help="checkpoints kept (%(default)s)")
        p.add_argument("--num-workers", type=int, default=d["num_workers"], help="DataLoader workers (%(default)s)")
        p.add_argument("--seed", type=int, default=d["seed"], help="master seed (%(default)s)")
        p.add_argument("--report-time", action="store_true", help="rank 0 prints the training time to stderr")
        self.add_arguments(p)
        return p

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """Scenario-specific arguments."""

    # -- building blocks (correct scenarios override these) ---------------------------------------

    def build_dataset(self, args) -> Dataset:
        return NoisyBlobs(args.samples, args.dim, args.classes, seed=args.seed)

    def build_model(self, args) -> nn.Module:
        return MLP(args.dim, args.hidden, args.classes, args.dropout)

    def build_loader(self, run: Run, dataset: Dataset) -> DataLoader:
        args = run.args
        sampler = DistributedSampler(dataset, num_replicas=run.world_size, rank=run.rank, shuffle=True,
                                     seed=args.seed, drop_last=True)
        kw = {}
        if args.num_workers > 0:
            kw = dict(persistent_workers=True, prefetch_factor=2)
        return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                          num_workers=args.num_workers, **kw)

    def build_optimizer(self, args, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def lr_factor(self, args):
        return warmup_decay(args.warmup, args.steps)

    def build_scheduler(self, args, optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor(args))

    def forward_loss(self, run: Run, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(run.model(x), y)

    # -- HOOKS (each buggy variant overrides exactly one, with its mistake) ----------------------

    def prepare(self, run: Run) -> None:
        """Hand everything to the checkpointer."""
        run.model, run.optimizer, run.loader, run.scheduler = run.ckpt.prepare(
            run.model, run.optimizer, run.loader, run.scheduler)
        run.ckpt.register_for_checkpointing(run.state)  # the accumulation position (micro-batch counter)

    def after_load(self, run: Run) -> None:
        """Runs right after `load_state` (`run.resumed_from` is None on a fresh start). Nothing to do."""

    def start_epoch(self, run: Run) -> int:
        """The epoch to continue with: the data loader's, restored by load_state."""
        return run.loader.epoch

    def after_step(self, run: Run) -> None:
        """Runs after each optimizer step, before probe.step (EMA updates go here)."""

    def step_extra(self, run: Run) -> dict:
        """Extra per-step values for probe.step."""
        return {}

    def final_extra(self, run: Run) -> dict:
        """Extra final state for probe.finish."""
        return {}

    # -- process setup ----------------------------------------------------------------------------

    def setup(self, args) -> Run:
        backend = os.environ.get(run_env.BACKEND) or ("nccl" if torch.cuda.is_available() else "gloo")
        strategy = strategy_name()
        if not dist.is_initialized():
            dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available() and not (strategy != "ddp" and backend == "gloo"):  # gloo FSDP/DeepSpeed: CPU
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        torch.use_deterministic_algorithms(True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
        return Run(args, rank, world, local_rank, device, rank_seed=args.seed * 1009 + 1 + rank, strategy=strategy)

    @staticmethod
    def seed_rank(run: Run) -> None:
        """Per-rank seeds of the global python/numpy/torch RNGs (dropout and augmentation differ by rank)."""
        random.seed(run.rank_seed)
        np.random.seed(run.rank_seed % 2**32)
        torch.manual_seed(run.rank_seed)

    # -- the training loop ------------------------------------------------------------------------

    def main(self, argv=None) -> None:
        args = self.parser().parse_args(argv)
        run = self.setup(args)
        t0 = time.perf_counter()
        self.train(run)
        elapsed = time.perf_counter() - t0
        if args.report_time:
            times = [None] * run.world_size
            dist.all_gather_object(times, elapsed)
            if run.rank == 0:
                print(f"[harness.scenarios.{self.name}] {args.steps} steps on {run.world_size} rank(s): training "
                      f"{max(times):.3f} s (max over ranks, excluding interpreter/torch/process-group startup)",
                      file=sys.stderr, flush=True)
        # Only after success: after an error a peer may sit in a collective, and tearing the group down
        # would wait for it; the process exits instead, and the launcher stops its peers.
        dist.destroy_process_group()

    def train(self, run: Run) -> None:
        args = run.args
        torch.manual_seed(args.seed)  # identical model init on every rank
        dataset = self.build_dataset(args)
        model = self.build_model(args).to(run.device)
        self.seed_rank(run)
        self.wrap(run, model)
        run.scheduler = self.build_scheduler(args, run.optimizer)
        run.loader = self.build_loader(run, dataset)
        run.ckpt = Checkpointer(ProjectConfiguration(probe.run_dir(), automatic_checkpoint_naming=True,
                                                     total_limit=args.total_limit))
        self.prepare(run)  # HOOK: prepare
        run.resumed_from = run.ckpt.load_state(missing_ok=True)
        self.after_load(run)  # HOOK: after_load

        step = run.ckpt.step
        epoch = self.start_epoch(run)  # HOOK: start_epoch
        accum = args.accum
        window: list = []
        window_loss = None
        while step < args.steps:
            run.loader.set_epoch(epoch)
            for batch in run.loader:
                batch = to_device(batch, run.device)
                run.state.micro += 1
                sync = run.state.micro % accum == 0 or run.loader.position == len(run.loader)
                with self._sync_context(run, sync):
                    loss = self.forward_loss(run, batch) / accum
                    self._backward(run, loss)
                window.append(batch)
                window_loss = loss.detach() if window_loss is None else window_loss + loss.detach()
                probe.point("microbatch")
                if not sync:
                    continue
                if not run.strategy.startswith("deepspeed"):  # the engine stepped at the boundary
                    run.optimizer.step()
                run.scheduler.step()
                if not run.strategy.startswith("deepspeed"):
                    run.optimizer.zero_grad(set_to_none=True)
                step += 1
                run.ckpt.step = step
                self.after_step(run)  # HOOK: after_step
                probe.step(step, loss=window_loss, batch=window, model=self._probe_model(run),
                           optimizer=self._probe_optimizer(run),
                           lr=run.scheduler.get_last_lr()[0], window=len(window), epoch=epoch,
                           **self.step_extra(run))
                window, window_loss = [], None
                if step % args.ckpt_every == 0:
                    run.ckpt.save_state()
                if step >= args.steps:
                    break
            else:
                epoch += 1
        probe.finish(model=self._probe_model(run), optimizer=self._probe_optimizer(run), scheduler=run.scheduler.state_dict(),
                     data=run.loader.state_dict(), counters=run.state.state_dict(), **self.final_extra(run))


    # -- strategies ---------------------------------------------------------------------------------

    def wrap(self, run: Run, model: nn.Module) -> None:
        """Wrap `model` for ``run.strategy`` and build the optimizer: sets run.model and run.optimizer."""
        args = run.args
        if run.strategy == "ddp":
            kw = dict(device_ids=[run.device.index]) if run.device.type == "cuda" else {}
            run.model = DDP(model, **kw)
            run.optimizer = self.build_optimizer(args, run.model)
        elif run.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(run.device.type, (run.world_size,))
            run.model = fully_shard(model, mesh=mesh)
            run.optimizer = self.build_optimizer(args, run.model)
        else:
            if run.device.type == "cpu":
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
            import deepspeed

            stage = int(run.strategy[-1])
            optimizer = self.build_optimizer(args, model)
            engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, dist_init_required=False,
                                                   config=deepspeed_config(args, stage))
            run.model, run.optimizer = engine, optimizer  # the base optimizer: its param groups are the engine's
            run.extras["zero_stage"] = stage

    @staticmethod
    def _sync_context(run: Run, sync: bool):
        """Accumulate locally (no gradient reduction) unless `sync`."""
        if run.strategy == "ddp":
            return contextlib.nullcontext() if sync else run.model.no_sync()
        if run.strategy == "fsdp":
            run.model.set_requires_gradient_sync(sync)
        else:
            run.model.set_gradient_accumulation_boundary(sync)
        return contextlib.nullcontext()

    @staticmethod
    def _backward(run: Run, loss: torch.Tensor) -> None:
        if run.strategy.startswith("deepspeed"):
            run.model.backward(loss, scale_wrt_gas=False)  # the loop already divides by accum
            run.model.step()  # steps the optimizer (and zeroes gradients) only at a boundary
        else:
            loss.backward()

    @staticmethod
    def _probe_model(run: Run):
        if run.strategy.startswith("deepspeed"):
            return _DeepSpeedWeights(run.model, run.optimizer, run.extras["zero_stage"])
        return run.model

    @staticmethod
    def _probe_optimizer(run: Run):
        if run.strategy == "deepspeed-zero3":
            return _ZeRO3OptimizerView(run.model, run.optimizer)
        return run.optimizer


def epoch_table(batches_per_epoch: int, accum: int, steps: int) -> list[tuple[int, int, int]]:
    """[(step, epoch, micro)] of the loop above: which epoch each optimizer step ends in (for docs/tests)."""
    out, micro, step, epoch = [], 0, 0, 0
    while step < steps:
        for pos in range(1, batches_per_epoch + 1):
            micro += 1
            if micro % accum == 0 or pos == batches_per_epoch:
                step += 1
                out.append((step, epoch, micro))
                if step >= steps:
                    break
        epoch += 1
    return out

