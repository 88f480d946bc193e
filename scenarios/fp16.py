"""The default scenario under fp16 autocast with a dynamic `torch.amp.GradScaler`, plus python-RNG augmentation.

Mixed precision as in the PyTorch AMP recipe and Accelerate's ``mixed_precision="fp16"``: matmuls run
in float16 under ``torch.autocast(device, dtype=torch.float16)`` (also on CPU), the parameters and
AdamW state stay float32, each micro-batch's loss is multiplied by the scaler's scale before
``backward``, and the optimizer step goes through ``scaler.step(optimizer); scaler.update()`` (what
Accelerate's ``AcceleratedOptimizer.step`` does), which skips the update when a gradient is inf/NaN.
The scaler is handed to ``ckpt.prepare`` with the rest, so the reference checkpointer saves its state
(scale, growth tracker) per rank, as Accelerate saves ``scaler.pt``.

The scale must *move* during the run, or a resume that forgets the scaler's state looks right. Here
the float16 backward of this model overflows at a scale of 2**20 and not at 2**19 (at world size 2);
the scaler starts above that, at ``--init-scale`` 2**21, backs off twice (those steps are skipped),
then grows by 2 after every ``--growth-interval`` 2 clean steps, overflows, backs off, and so on:
a cycle of 3 steps. log2 of the scale after each step (``extra:scale`` in the trace; the growth
tracker is ``extra:growth_tracker``), ``*`` where the step overflowed (update skipped, scale halved),
``+`` where it grew; measured at world size 2 (gloo, CPU, 2-core dev box):

    step   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15  16  17  18  19  20  21  22  23  24
    log2  20* 19* 19  20+ 19* 19  20+ 19* 19  20+ 19* 19  20+ 19* 19  20+ 19* 19  20+ 19* 19  20+ 19* 19
    checkpoints (every 5):  5: 2**19, tracker 0   10: 2**20, 0   15: 2**19, 1   20: 2**19, 0

None of them is a fresh scaler's state (2**21, tracker 0). A resume from step 10 (kill ``12`` or ``13``)
that forgets the scaler starts again at 2**21: step 11 backs off to 2**20 instead of 2**19
(`extra:scale` differs), and step 12 then overflows and is skipped where the uninterrupted run
updated the weights (`params`, `optimizer` differ). At world size 3 the cycle differs in places but
grows and backs off as well (tests/scenarios/test_scenarios.py checks both world sizes).

The augmentation also draws from python's ``random`` (a cutout: with probability 1/4, one feature
zeroed), so this scenario is also the one whose python RNG stream is used and compared.

Everything else (data, schedule, accumulation, checkpoints, sizes, epoch boundaries) is the
default scenario's. DDP only: FSDP2 and DeepSpeed bring their own sharded or fp16 loss scalers.

Run: ``torchrun --nproc-per-node 2 -m harness.scenarios.fp16``
"""

import random

import torch
import torch.nn.functional as F

from harness.scenarios._common import NoisyBlobs, Scenario


class CutoutBlobs(NoisyBlobs):
    """NoisyBlobs plus a cutout drawn from python's global `random` (per access, in the loading process)."""

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        if random.random() < 0.25:  # python RNG
            x = x.clone()
            x[random.randrange(len(x))] = 0.0
        return x, y


class ScaledOptimizer:
    """The optimizer as the loop sees it: ``step()`` is ``scaler.step(optimizer); scaler.update()``.

    Accelerate's ``AcceleratedOptimizer`` does the same under fp16. The checkpointer and the probe get
    the torch optimizer itself (`optimizer`); the scheduler was built on it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self.optimizer, self.scaler = optimizer, scaler

    def step(self) -> None:
        self.scaler.step(self.optimizer)  # skipped when a gradient is inf/NaN
        self.scaler.update()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self):
        return self.optimizer.param_groups


class FP16(Scenario):
    """Default scenario under fp16 autocast with a dynamic GradScaler (its scale grows and backs off)."""

    name = "fp16"

    def add_arguments(self, p) -> None:
        p.add_argument("--init-scale", type=float, default=2.0**21, help="GradScaler init_scale (%(default)s)")
        p.add_argument("--growth-interval", type=int, default=2, help="GradScaler growth_interval (%(default)s)")

    def build_dataset(self, args):
        return CutoutBlobs(args.samples, args.dim, args.classes, seed=args.seed)

    def forward_loss(self, run, batch):
        x, y = batch
        with torch.autocast(device_type=run.device.type, dtype=torch.float16):
            return F.cross_entropy(run.model(x), y)

    def wrap(self, run, model) -> None:
        if run.strategy != "ddp":  # refused before FSDP/DeepSpeed is set up
            raise SystemExit(f"the fp16 scenario trains with DDP only (HARNESS_STRATEGY={run.strategy}): FSDP2 and "
                             "DeepSpeed need their own sharded / fp16 loss scalers")
        super().wrap(run, model)

    def prepare(self, run) -> None:
        args = run.args
        scaler = torch.amp.GradScaler(run.device.type, init_scale=args.init_scale, growth_interval=args.growth_interval)
        # As a user would: the scaler goes to prepare() with everything else (Accelerate saves it as scaler.pt).
        run.model, run.optimizer, run.loader, run.scheduler, scaler = run.ckpt.prepare(
            run.model, run.optimizer, run.loader, run.scheduler, scaler)
        run.ckpt.register_for_checkpointing(run.state)  # the accumulation position, as in every scenario
        run.extras["scaler"] = scaler
        run.extras["optimizer"] = run.optimizer
        run.optimizer = ScaledOptimizer(run.optimizer, scaler)

    def _backward(self, run, loss) -> None:  # the loop's backward, on the scaled loss
        run.extras["scaler"].scale(loss).backward()

    def _probe_optimizer(self, run):  # the probe digests the torch optimizer, not the wrapper
        return run.extras["optimizer"]

    def step_extra(self, run) -> dict:
        sd = run.extras["scaler"].state_dict()
        return {"scale": sd["scale"], "growth_tracker": sd["_growth_tracker"]}

    def final_extra(self, run) -> dict:
        return {"scaler": run.extras["scaler"].state_dict()}


def main(argv=None) -> None:
    FP16().main(argv)


if __name__ == "__main__":
    main()
