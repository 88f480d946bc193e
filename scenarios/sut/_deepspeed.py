"""SUT ``deepspeed``: the default scenario checkpointed by DeepSpeed's engine.

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=AdamW(...), lr_scheduler=LambdaLR(...),
                                           config={gradient_accumulation_steps: accum, zero stage, ...})
    _, client = engine.load_checkpoint(run_dir)              # the tag in run_dir/latest, if any
    every ckpt_every steps: engine.save_checkpoint(run_dir, client_state={"epoch": ..., "batches": ...})
    the resumed epoch skips the batches it already consumed (itertools.islice over the loader)

Same data, model, AdamW, warmup LR, accumulation and cadence as ``harness.scenarios.default``, with a
torch.optim optimizer (DeepSpeed's fused CPU Adam needs compiled ops). The ZeRO stage is
``$HARNESS_STRATEGY`` ``deepspeed-zero0..3`` (default 0). On CPU ``DS_ACCELERATOR=cpu``.
Run: ``harness run scenarios/sut/_deepspeed.py`` or ``harness certify --sut deepspeed``.
"""

from __future__ import annotations

import itertools
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from harness import probe, run_env
from harness.scenarios._common import MLP, NoisyBlobs, Run, Scenario, warmup_decay
from harness.scenarios.sut._points import save_points


def main(argv=None) -> None:
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    scenario = Scenario()
    args = scenario.parser().parse_args(argv)
    strategy = os.environ.get(run_env.STRATEGY) or "deepspeed-zero0"
    stage = int(strategy[-1]) if strategy.startswith("deepspeed-zero") else 0
    if not dist.is_initialized():
        dist.init_process_group(os.environ.get(run_env.BACKEND) or "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    dataset = NoisyBlobs(args.samples, args.dim, args.classes, seed=args.seed)
    model = MLP(args.dim, args.hidden, args.classes, args.dropout)
    run = Run(args, rank, world, int(os.environ.get("LOCAL_RANK", "0")), torch.device("cpu"),
              rank_seed=args.seed * 1009 + 1 + rank)
    Scenario.seed_rank(run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(args.warmup, args.steps))
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                        num_workers=args.num_workers)
    config = {"train_micro_batch_size_per_gpu": args.batch_size, "gradient_accumulation_steps": args.accum,
              "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
              "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=config, dist_init_required=False)
    run_dir = probe.run_dir()
    epoch = skip = 0
    if os.path.isfile(os.path.join(run_dir, "latest")):
        _, client = engine.load_checkpoint(run_dir)
        epoch, skip = client["epoch"], client["batches"]
        probe.point("checkpoint.loaded", step=engine.global_steps)
    step = engine.global_steps
    window, window_loss = [], None
    while step < args.steps:
        sampler.set_epoch(epoch)
        batches = skip
        for x, y in itertools.islice(loader, skip, None):
            batches += 1
            engine.set_gradient_accumulation_boundary(batches % args.accum == 0 or batches == len(loader))
            loss = F.cross_entropy(engine(x), y) / args.accum
            engine.backward(loss, scale_wrt_gas=False)
            engine.step()
            window.append((x, y))
            window_loss = loss.detach() if window_loss is None else window_loss + loss.detach()
            if not engine.is_gradient_accumulation_boundary():
                continue
            step = engine.global_steps
            probe.step(step, loss=window_loss, batch=window, model=engine.module, optimizer=optimizer,
                       lr=scheduler.get_last_lr()[0], window=len(window))
            window, window_loss = [], None
            if step % args.ckpt_every == 0:
                with save_points(step):
                    engine.save_checkpoint(run_dir, tag=f"global_step{step}",
                                           client_state={"epoch": epoch, "batches": batches})
            if step >= args.steps:
                break
        else:
            epoch, skip = epoch + 1, 0
            continue
        break
    probe.finish(model=engine.module, optimizer=optimizer, scheduler=scheduler.state_dict())
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
