"""The default scenario with `num_workers=2`: random augmentation runs inside DataLoader workers.

The data set's augmentation draws from the torch and numpy global RNGs of whichever worker loads
the sample (pytorch#5059: workers forked from one parent share numpy's RNG state unless reseeded).
The reference checkpointer's ResumableDataLoader seeds workers as a plain DataLoader does and saves each
worker's python/numpy/torch RNG states after its last delivered batch; a resume gives every worker its
states back, so the augmentation after a resume is the uninterrupted run's; this scenario checks
exactly that. Workers are persistent (forked once per
rank at the first epoch, not per epoch); the main process's RNG only feeds dropout.

Sizes, epochs, checkpoints: as the default scenario (24 steps, 8 epochs, epoch e ends at step 3e+3,
checkpoints at 5, 10, 15, 20). Measured times: see scenarios/__init__.py.

Run: ``torchrun --nproc-per-node 2 -m harness.scenarios.workers``
"""

from harness.scenarios._common import Scenario


class Workers(Scenario):
    """Default scenario with num_workers=2: per-worker torch+numpy augmentation."""

    name = "workers"
    defaults = dict(Scenario.defaults, num_workers=2)


def main(argv=None) -> None:
    Workers().main(argv)


if __name__ == "__main__":
    main()
