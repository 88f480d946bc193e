"""The reference checkpointer: the full training state, no pickle, atomic, checksummed.

    from harness.checkpoint import Checkpointer, ProjectConfiguration
"""

from .config import ProjectConfiguration
from .data import ResumableDataLoader
from .errors import (CheckpointError, CheckpointSaveError, CorruptCheckpointError, IncompatibleCheckpointError,
                     MapLocationError, NotACheckpointError, RegistrationError, UnsafeCheckpointError)
from .manager import Checkpointer, CheckpointSkippedWarning
from .model_files import load_checkpoint_in_model, parse_size, save_model
from .reduction import (BucketLayoutError, BucketLayoutWarning, CommHookConflictWarning, bucket_layout,
                        bucket_layout_state, pin_bucket_layout, rank_ordered_allreduce_hook, restore_bucket_layout,
                        track_bucket_layout)

__all__ = [
    "Checkpointer", "ProjectConfiguration", "ResumableDataLoader", "CheckpointSkippedWarning",
    "CheckpointError", "CheckpointSaveError", "CorruptCheckpointError", "IncompatibleCheckpointError",
    "MapLocationError", "NotACheckpointError", "RegistrationError", "UnsafeCheckpointError",
    "save_model", "load_checkpoint_in_model", "parse_size",
    "BucketLayoutError", "BucketLayoutWarning", "CommHookConflictWarning", "bucket_layout", "bucket_layout_state",
    "pin_bucket_layout", "rank_ordered_allreduce_hook", "restore_bucket_layout", "track_bucket_layout",
]
