"""BUGGY: the LR scheduler is not checkpointed; the script rebuilds it from the restored step count.

The mistake (Lightning#1772, prior-art pitfall 5): the scheduler's state is not saved, and on resume
the script reconstructs it with ``LambdaLR(opt, f, last_epoch=step)``, believing that positions it
at `step`. The constructor calls ``step()`` once more, so the schedule is one step ahead: every
resumed step uses the learning rate of the next one.

Expected first divergence (default sizes, e.g. kill ``12``, resume from step 10): step 11, rank 0,
fields params, optimizer (param_groups' lr) and extra:lr; batch, RNG and loss equal (the loss is
computed before the update).
"""

import torch

from harness.scenarios._common import Scenario


class SchedulerNotSaved(Scenario):
    """BUGGY default: scheduler not saved, rebuilt with last_epoch=step (off by one)."""

    name = "buggy/scheduler_not_saved"

    def prepare(self, run) -> None:
        # BUG: the scheduler is not handed to the checkpointer ...
        run.model, run.optimizer, run.loader = run.ckpt.prepare(run.model, run.optimizer, run.loader)
        run.ckpt.register_for_checkpointing(run.state)

    def after_load(self, run) -> None:
        if run.resumed_from is not None:
            # ... and is rebuilt from the step count; the constructor's own step() makes it one ahead (Lightning#1772).
            run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, self.lr_factor(run.args),
                                                              last_epoch=run.ckpt.step)


def main(argv=None) -> None:
    SchedulerNotSaved().main(argv)


if __name__ == "__main__":
    main()
