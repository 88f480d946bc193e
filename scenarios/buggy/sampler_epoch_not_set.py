"""BUGGY: the epoch loop restarts at 0 on resume, so the sampler is set to epoch 0 again.

The mistake (Accelerate #2016 / #3996, prior-art pitfalls 2 and 13): the epoch counter is not taken
from the restored state; the script's ``for epoch in range(start_epoch, ...)`` starts at 0 and calls
``loader.set_epoch(0)``, so the DistributedSampler shuffles with epoch 0's permutation again (and
the resumed loader starts that epoch over). A resume inside epoch 0 is unaffected: the bug needs a
resume in epoch >= 1, where it silently looks like normal progress.

Expected first divergence (default sizes, kill ``12``: resume from step 10, in epoch 3 after 2 of
its 10 batches): step 11, rank 0, fields batch, rng:torch, loss, params, optimizer, extra:epoch. The torch RNG
differs because set_epoch(0) starts a fresh epoch, whose iterator draws its base seed from the global
torch RNG (as a plain DataLoader's does), where the uninterrupted run is mid-epoch and draws nothing.
"""

from harness.scenarios._common import Scenario


class SamplerEpochNotSet(Scenario):
    """BUGGY default: the epoch loop restarts at 0 after a resume."""

    name = "buggy/sampler_epoch_not_set"

    def start_epoch(self, run) -> int:
        # BUG: the epoch is not restored from the checkpoint (Accelerate #2016/#3996): set_epoch(0) again.
        return 0


def main(argv=None) -> None:
    SamplerEpochNotSet().main(argv)


if __name__ == "__main__":
    main()
