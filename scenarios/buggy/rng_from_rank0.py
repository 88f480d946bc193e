"""BUGGY: after a resume, rank 0's RNG states are broadcast and set on every rank.

The mistake (Megatron-LM PR #6858; prior-art pitfall 6): the checkpoint code keeps (or reads) only
rank 0's RNG state and restores it on all ranks, so after a resume every rank draws rank 0's
stream: rank 1's augmentation noise and dropout masks become rank 0's.

Expected first divergence (default sizes, any kill after the first checkpoint, e.g. ``12``, which
resumes from the checkpoint at step 10): step 11 (the first step after the resume). The oracle
orders divergences by (attempt, step, rank), so it names rank 0 with fields ["params",
"optimizer"] only: rank 0's own batch, RNG and loss are right, its update is wrong because DDP
averaged in rank 1's gradient. Rank 1's row at the same step differs in batch, rng:python,
rng:numpy, rng:torch, loss, params, optimizer.
"""

import random

import numpy as np
import torch
import torch.distributed as dist

from harness.scenarios._common import Scenario


class RngFromRank0(Scenario):
    """BUGGY default: rank 0's RNG states are restored on every rank after a resume."""

    name = "buggy/rng_from_rank0"

    def after_load(self, run) -> None:
        if run.resumed_from is None:
            return
        # BUG (Megatron-LM PR #6858): only rank 0's RNG state is used; broadcast it and set it everywhere.
        states = [random.getstate(), np.random.get_state(), torch.get_rng_state()]
        dist.broadcast_object_list(states, src=0)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def main(argv=None) -> None:
    RngFromRank0().main(argv)


if __name__ == "__main__":
    main()
