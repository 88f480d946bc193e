"""What the trial benches share: where a trial's run folder lives."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def run_folder_on(kind: str, out: str):
    """OUT with OUT/run on ``kind``: "tmpfs", the engine's default (``--scratch tmpfs``: the checkpoints on
    tmpfs, copied to OUT/run when the trial ends); "disk", OUT/run made first on disk, which the engine then
    writes in place (as ``--scratch disk`` does)."""
    if kind == "disk":
        os.makedirs(os.path.join(out, "run"), exist_ok=True)
    yield
