"""BUGGY: the optimizer is not checkpointed (weights and schedule are).

The mistake: "save the model" scripts that keep only weights (and perhaps the scheduler), or a
checkpointer that drops optimizer state in some configuration (DeepSpeed PR #7786: ZeRO-0 + bf16
optimizer state not saved). After a resume AdamW starts with empty moments and step count, and its
learning rate is whatever the freshly built scheduler set at construction.

Expected first divergence (default sizes, e.g. kill ``12``, resume from step 10): step 11, rank 0,
fields exactly ["params", "optimizer"]: the loss (computed before the update), batch and RNG are
equal; extra:lr too, since the restored scheduler sets the right rate after its step.
"""

from harness.scenarios._common import Scenario


class OptimizerNotSaved(Scenario):
    """BUGGY default: the optimizer is not handed to the checkpointer."""

    name = "buggy/optimizer_not_saved"

    def prepare(self, run) -> None:
        # BUG: the optimizer is left out: its state (AdamW moments, step counts) is not saved.
        run.model, run.loader, run.scheduler = run.ckpt.prepare(run.model, run.loader, run.scheduler)
        run.ckpt.register_for_checkpointing(run.state)


def main(argv=None) -> None:
    OptimizerNotSaved().main(argv)


if __name__ == "__main__":
    main()
