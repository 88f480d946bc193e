"""BUGGY: the gradient-accumulation position (the global micro-batch counter) is not checkpointed.

The mistake (prior-art pitfall 10): the script counts micro-batches itself to decide when to sync
and step, like ``accelerator.step`` inside Accelerate's ``accumulate()`` (which Accelerate saves in
``random_states_{i}.pkl`` for this reason), but does not save the counter: after a resume it
restarts at 0. With Accelerate's sync-at-epoch-end the windows are 4,4,2 | 2,4,4 | ..., so the
counter is not always a multiple of `accum` at a checkpoint: resuming from one saved after a short
end-of-epoch window shifts every later window.

Which kill shows it (default sizes): the checkpoint at step 15 (end of epoch 4, micro-batch 50,
50 % 4 == 2). Kill ``17`` resumes from it: the baseline's step 16 accumulates 2 micro-batches
(51, 52), the resumed run 4. Expected first divergence: step 16, rank 0, fields batch, rng:numpy,
rng:torch, loss, params, optimizer and extra:window (4 vs 2). Resumes from the other checkpoints
(micro-batches 16, 32, 68: multiples of 4) are bit-exact, which is why a single kill can miss it.
"""

from harness.scenarios._common import Scenario


class GradAccumPositionLost(Scenario):
    """BUGGY default: the micro-batch counter restarts at 0 after a resume."""

    name = "buggy/grad_accum_position_lost"

    def prepare(self, run) -> None:
        run.model, run.optimizer, run.loader, run.scheduler = run.ckpt.prepare(
            run.model, run.optimizer, run.loader, run.scheduler)
        # BUG: missing run.ckpt.register_for_checkpointing(run.state): the micro-batch counter is not saved.


def main(argv=None) -> None:
    GradAccumPositionLost().main(argv)


if __name__ == "__main__":
    main()
