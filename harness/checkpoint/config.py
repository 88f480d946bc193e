"""`ProjectConfiguration`: where checkpoints go and how they are named (Accelerate's names)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ProjectConfiguration:
    """Where and how checkpoints are written.

    project_dir: root folder; automatic names live in `project_dir/checkpoints/checkpoint_N`.
    automatic_checkpoint_naming: `save_state()` without a folder picks `checkpoint_{iteration}`.
    total_limit: keep at most this many automatic checkpoints (oldest deleted after a commit).
    iteration: the N of the next automatic checkpoint; restored by `load_state` (saved N + 1).
    """

    project_dir: str | os.PathLike | None = None
    automatic_checkpoint_naming: bool = False
    total_limit: int | None = None
    iteration: int = 0

    def __post_init__(self) -> None:
        if self.total_limit is not None and self.total_limit < 1:
            raise ValueError(f"total_limit must be >= 1 or None, got {self.total_limit}")
        if self.iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {self.iteration}")
        if self.automatic_checkpoint_naming and self.project_dir is None:
            raise ValueError("automatic_checkpoint_naming needs a project_dir")

    @property
    def checkpoints_dir(self) -> str:
        if self.project_dir is None:
            raise ValueError("no project_dir set: pass a folder to save_state/load_state")
        return os.path.join(os.fspath(self.project_dir), "checkpoints")
