"""BUGGY: numpy's global RNG is not part of the checkpoint.

The mistake: a checkpointer that saves python/torch RNG but not numpy's (torchtitan saves no RNG at
all, #1194; many hand-written `save_checkpoint`s store only `torch.get_rng_state()`) leaves numpy's
RNG as the script seeded it at startup. This variant reproduces exactly that state by re-seeding
numpy after `load_state` the way the script seeds it before training. The augmentation noise drawn
from numpy then repeats the start of the run instead of continuing it.

Expected first divergence (default sizes, e.g. kill ``12``, resume from step 10): step 11, rank 0,
fields batch, rng:numpy, loss, params, optimizer; rng:torch and rng:python stay equal.
"""

import numpy as np

from harness.scenarios._common import Scenario


class NumpyRngNotSaved(Scenario):
    """BUGGY default: numpy's RNG is re-seeded after a resume instead of restored."""

    name = "buggy/numpy_rng_not_saved"

    def after_load(self, run) -> None:
        # BUG: numpy's RNG is not restored; it is left as seeded at startup (the checkpoint did not save it).
        np.random.seed(run.rank_seed % 2**32)


def main(argv=None) -> None:
    NumpyRngNotSaved().main(argv)


if __name__ == "__main__":
    main()
