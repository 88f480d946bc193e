"""SUT ``accelerate``: the default scenario checkpointed by HF Accelerate, as its guide documents it.

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accum,
                              project_config=ProjectConfiguration(run_dir, automatic_checkpoint_naming=True,
                                                                  total_limit=2))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    accelerator.register_for_checkpointing(progress)       # step, epoch, batches consumed in the epoch
    accelerator.load_state()                               # the latest checkpoint, if any
    accelerator.project_configuration.iteration = latest + 1   # as save_state's error message asks
    loader for the resumed epoch: accelerator.skip_first_batches(loader, progress.batches)
    with accelerator.accumulate(model): loss = ...; accelerator.backward(loss); optimizer.step(); ...
    every ckpt_every optimizer steps: accelerator.save_state()

Same data, model, AdamW, warmup LR, accumulation and cadence as ``harness.scenarios.default``
(``harness.scenarios._common``); the data loader is a plain shuffled DataLoader that Accelerate shards,
and the per-rank python/numpy/torch seeds are the scenario's. ``Accelerator(cpu=True)`` on CPU.
Run: ``harness run scenarios/sut/_accelerate.py`` or ``harness certify --sut accelerate``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from harness import probe
from harness.scenarios._common import MLP, NoisyBlobs, Run, Scenario, warmup_decay
from harness.scenarios.sut._points import save_points


class Progress:
    """The loop's counters, registered with Accelerate (its custom_checkpoint_0.pkl)."""

    def __init__(self):
        self.step = self.epoch = self.batches = 0

    def state_dict(self):
        return {"step": self.step, "epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, sd):
        self.step, self.epoch, self.batches = int(sd["step"]), int(sd["epoch"]), int(sd["batches"])


def main(argv=None) -> None:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    import accelerate.utils.other as acc_other

    scenario = Scenario()
    args = scenario.parser().parse_args(argv)
    cpu = not torch.cuda.is_available()
    run_dir = probe.run_dir()
    accelerator = Accelerator(cpu=cpu, gradient_accumulation_steps=args.accum,
                              project_config=ProjectConfiguration(project_dir=run_dir, automatic_checkpoint_naming=True,
                                                                  total_limit=args.total_limit))
    rank = accelerator.process_index
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)  # identical model init on every rank
    dataset = NoisyBlobs(args.samples, args.dim, args.classes, seed=args.seed)
    model = MLP(args.dim, args.hidden, args.classes, args.dropout)
    run = Run(args, rank, accelerator.num_processes, accelerator.local_process_index, accelerator.device,
              rank_seed=args.seed * 1009 + 1 + rank)
    Scenario.seed_rank(run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(args.warmup, args.steps))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.num_workers)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)

    checkpoints = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        accelerator.load_state()  # automatic naming: the latest checkpoint_N
        # load_state does not advance the save iteration: the next save_state would raise "Checkpoint
        # directory .../checkpoint_0 already exists. Please manually override `self.save_iteration`";
        # done here as that message asks.
        latest = max(int(name.rsplit("_", 1)[-1]) for name in os.listdir(checkpoints))
        accelerator.project_configuration.iteration = latest + 1
        probe.point("checkpoint.loaded", step=progress.step)

    step, epoch = progress.step, progress.epoch
    window, window_loss = [], None
    while step < args.steps:
        loader.set_epoch(epoch)
        skip = progress.batches if epoch == progress.epoch else 0
        active = accelerator.skip_first_batches(loader, skip) if skip else loader
        progress.epoch, progress.batches = epoch, skip
        for batch in active:
            progress.batches += 1
            with accelerator.accumulate(model):
                x, y = batch
                loss = F.cross_entropy(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(batch)
            window_loss = loss.detach() if window_loss is None else window_loss + loss.detach()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.step = step
            probe.step(step, loss=window_loss, batch=window, model=model, optimizer=optimizer.optimizer,
                       lr=scheduler.get_last_lr()[0], window=len(window))
            window, window_loss = [], None
            if step % args.ckpt_every == 0:
                with save_points(step, (acc_other, "safe_save_file")):
                    accelerator.save_state()
            if step >= args.steps:
                break
        else:
            epoch += 1
    probe.finish(model=model, optimizer=optimizer.optimizer, scheduler=scheduler.scheduler.state_dict(),
                 progress=progress.state_dict())
    accelerator.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
