"""Probe points inside a third-party library's save: ``checkpoint.begin``, one ``checkpoint.write`` before
every file it writes, ``checkpoint.committed`` after the save returned.

The libraries call ``torch.save`` and safetensors' ``save_file`` to write their files; while a save runs,
those are wrapped so that each file write is a fault point, as the reference checkpointer's own
``checkpoint.write`` is. Outside the harness every probe call is a no-op.
"""

from __future__ import annotations

import contextlib

import torch

from harness import probe


@contextlib.contextmanager
def save_points(step: int, *modules_attrs: tuple[object, str]):
    """Within the block, ``torch.save`` and each ``(module, attr)`` writer call ``probe.point('checkpoint.write')`` first."""
    patched = [(torch, "save")] + list(modules_attrs)
    originals = [(mod, attr, getattr(mod, attr)) for mod, attr in patched]

    def wrap(fn):
        def writer(obj, f, *a, **kw):
            probe.point("checkpoint.write", file=str(f))
            return fn(obj, f, *a, **kw)
        return writer

    probe.point("checkpoint.begin", step=step)
    for mod, attr, fn in originals:
        setattr(mod, attr, wrap(fn))
    try:
        yield
    finally:
        for mod, attr, fn in originals:
            setattr(mod, attr, fn)
    probe.point("checkpoint.committed", step=step)
