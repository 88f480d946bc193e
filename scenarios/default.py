"""The default scenario: a small DDP classifier with everything a resume can get wrong.

A 3-layer MLP with dropout on shuffled data (DistributedSampler) whose augmentation noise is drawn
from both the torch and the numpy global RNG; AdamW; a warmup-then-decay LambdaLR; gradient
accumulation (Accelerate semantics: every `accum` micro-batches and at each epoch end); a checkpoint
every `ckpt_every` steps with `total_limit=2`; DDP (gloo on CPU). The loop is `harness.scenarios._common`.

Default sizes at world size 2: 160 samples, micro-batch 8 per rank, so 10 micro-batches per rank
per epoch; accum 4, so the accumulation windows are 4,4,2 in even epochs and 2,4,4 in odd ones:
3 optimizer steps per epoch, 24 steps = 8 epochs (`harness.scenarios._common.epoch_table(10, 4, 24)`).

    epoch e (0-based) ends at step 3e+3:  3, 6, 9, 12, 15, 18, 21, 24
    checkpoints (every 5, total_limit 2): 5, 10, 15, 20   (15 is an epoch end)
    global micro-batch count there:       16, 32, 50, 68
    steps with a 2-micro-batch window:    3, 4, 9, 10, 15, 16, 21, 22

The checkpoint at step 15 (end of epoch 4, micro-batch 50) is the one saved with a non-zero
accumulation phase (50 % 4 == 2): resuming from it needs the saved micro-batch counter
(`TrainState`). Kill ``12`` resumes from step 10 (epoch 3 after 2 of its 10 batches), kill ``16``
from the epoch boundary at 15, ``microbatch:39`` lands mid-accumulation in step 12's window,
``checkpoint.write:10`` in the middle of the second save (rank 0 writes 7 files per save, rank 1
two).

Training time (2 ranks, 2-core dev box, excluding interpreter/torch/process-group startup):
0.19 - 0.28 s, of which ~0.06 s are the 4 checkpoint saves (fsync, total_limit deletions); see
scenarios/__init__.py for all scenarios and the per-trial time under the harness.

Run: ``torchrun --nproc-per-node 2 -m harness.scenarios.default [--steps 24 --ckpt-every 5 --report-time ...]``
"""

from harness.scenarios._common import Scenario


class Default(Scenario):
    """Small MLP with dropout, torch+numpy augmentation, AdamW, warmup LR, grad accumulation, DDP."""

    name = "default"


def main(argv=None) -> None:
    Default().main(argv)


if __name__ == "__main__":
    main()
