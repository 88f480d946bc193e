"""`ProjectConfiguration`: where checkpoints go and how they are named (Accelerate's names and fields)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ProjectConfiguration:
    """Where and how checkpoints are written. Fields in Accelerate's order, so positional calls mean the same.

    project_dir: root folder; automatic names live in `project_dir/checkpoints/checkpoint_N`. May be left
        None here and given to `Checkpointer(project_dir=...)`, as with Accelerate's `Accelerator`.
    logging_dir: accepted for Accelerate compatibility (defaults to project_dir); the checkpointer does not use it.
    automatic_checkpoint_naming: `save_state()` without a folder picks `checkpoint_{iteration}`.
    total_limit: keep at most this many automatic checkpoints (oldest deleted after a commit).
    iteration: the N of the next automatic checkpoint; restored by `load_state` (saved N + 1).
    save_on_each_node: node-local disks: each node writes its own complete checkpoint (its ranks' files plus a
        copy of the shared files, its own manifest and commit) into the folder its ranks name.
    """

    project_dir: str | os.PathLike | None = None
    logging_dir: str | os.PathLike | None = None
    automatic_checkpoint_naming: bool = False
    total_limit: int | None = None
    iteration: int = 0
    save_on_each_node: bool = False

    def __post_init__(self) -> None:
        if self.total_limit is not None and self.total_limit < 1:
            raise ValueError(f"total_limit must be >= 1 or None, got {self.total_limit}")
        if self.iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {self.iteration}")
        self.set_directories(self.project_dir)

    def set_directories(self, project_dir: str | os.PathLike | None = None) -> None:
        """Set `project_dir`, and `logging_dir` when it is unset (Accelerate's method)."""
        self.project_dir = project_dir
        if self.logging_dir is None:
            self.logging_dir = project_dir

    @property
    def checkpoints_dir(self) -> str:
        if self.project_dir is None:
            raise ValueError("automatic checkpoint naming needs a project_dir: pass Checkpointer(project_dir=...) or "
                             "ProjectConfiguration(project_dir=...), or pass a folder to save_state/load_state")
        return os.path.join(os.fspath(self.project_dir), "checkpoints")
