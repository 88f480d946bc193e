"""Look inside checkpoints and compare them: ``harness inspect`` and ``harness diff``.

    readers.py   one reader per format (native, DCP, DeepSpeed, Accelerate, plain torch.save / safetensors
                 files and folders of them) -> CheckpointContents
    pickles.py   reading pickle-based files without executing code
    model.py     CheckpointContents, TensorEntry, FileCheck; the listing order
    diff.py      EntryDiff, TreeDiff, ContentsDiff
    render.py    text and JSON output
    (the commands: harness/cli/inspect.py)

Re-exports are lazy, so that building the CLI's parser does not import torch.
"""

__all__ = ["CheckpointContents", "FileCheck", "TensorEntry", "ContentsDiff", "EntryDiff", "TreeDiff",
           "diff_contents", "read_checkpoint", "ContentsError"]


def __getattr__(name):
    import importlib

    where = {"CheckpointContents": "model", "FileCheck": "model", "TensorEntry": "model", "ContentsDiff": "diff",
             "EntryDiff": "diff", "TreeDiff": "diff", "diff_contents": "diff", "read_checkpoint": "readers",
             "ContentsError": "readers"}
    if name in where:
        return getattr(importlib.import_module(f"{__name__}.{where[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
