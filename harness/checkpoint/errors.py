"""Errors raised by the reference checkpointer. Each message names the file, key or rank at fault."""


class CheckpointError(Exception):
    """Base class of every checkpoint error."""


class NotACheckpointError(CheckpointError, FileNotFoundError, ValueError):
    """The folder is missing, or is not a checkpoint of this format.

    A FileNotFoundError, and a ValueError as Accelerate's `load_state` raises for a missing folder
    (and for no folder without automatic naming)."""


class CorruptCheckpointError(CheckpointError):
    """A file is missing, truncated, or fails its checksum; the manifest is incomplete or malformed.

    `load_state()` without a path skips such checkpoints and falls back to an older one.
    """


class UnsafeCheckpointError(CorruptCheckpointError):
    """The checkpoint asks for something that could execute code or escape its folder (pickle, `..`)."""


class IncompatibleCheckpointError(CheckpointError, RuntimeError, ValueError):
    """The checkpoint is intact but does not fit what was registered (architecture, world size, objects).

    Never skipped silently: an older checkpoint would not fit either. What Accelerate's `load_state` raises
    for these: a RuntimeError (torch's `load_state_dict` on a model that does not fit; a different number of
    custom objects) or a ValueError (torch's optimizer `load_state_dict` on other parameter groups).
    """


class CheckpointSaveError(CheckpointError):
    """A save failed on at least one rank. The previous checkpoints are untouched."""


class RegistrationError(CheckpointError, ValueError, TypeError):
    """`prepare` or `register_for_checkpointing` got objects it cannot checkpoint; none of the call's objects were
    registered. A ValueError, as in Accelerate; also a TypeError, which the checkpointer raised before."""


class MapLocationError(CheckpointError, ValueError, TypeError):
    """`load_state(map_location=...)` names no device this rank can load to; raised on every rank, naming each.
    A TypeError, as Accelerate raises ("Unsupported optimizer map location passed"); a ValueError as before."""
