"""Buggy variants of the default scenario: one classic resume mistake each.

Each module is the default scenario (``harness.scenarios._common.Scenario``) with one hook overridden by
the mistake, marked ``# BUG`` with the real-world bug it reproduces. Under the reference
checkpointer the correct scenarios resume bit-exactly at every kill point; these must not.

`EXPECTED` says, for the default sizes (24 steps, 10 micro-batches per rank per epoch, accum 4,
checkpoints at 5, 10, 15, 20), a fault plan that shows the bug and the first divergence the oracle
must report: the step (the first one after the resume), the rank, and the exact differing fields.
The tests (tests/scenarios/test_scenarios.py) and the docs read it (``_expected.py``); it is plain data, importing no torch.
"""

from harness.scenarios.buggy._expected import EXPECTED, Expected

__all__ = ["EXPECTED", "Expected"]
