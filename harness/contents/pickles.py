"""Read the pickle-based files of other checkpoint formats without executing their code.

Two readers, one per kind of file:

* `load_torch(path)`, for torch.save archives (DeepSpeed `*.pt`, Accelerate `*.bin` / `*.pkl`, the
  items inside DCP's `*.distcp`): `torch.load(weights_only=True)`, torch's restricted unpickler.
  Numpy arrays (Accelerate's RNG states) are rebuilt with numpy's own reconstruction functions,
  allowed by name. Every other global the file names (DeepSpeed's `LossScaler`, `ZeroStageEnum`, ...;
  listed by `torch.serialization.get_unsafe_globals_in_checkpoint` without unpickling) is allowed only
  as a stand-in: an inert `Opaque` record of its name and pickled arguments/state. The real class is
  never imported and none of its code runs. torch lists the globals of zip archives only, so a
  legacy-format file (`_use_new_zipfile_serialization=False`) gets the numpy names and nothing else.
* `load_data_pickle(path)`, for plain pickles (DCP's `.metadata`, which DCP itself reads with an
  unrestricted `pickle.load`; torch offers no weights-only reader for it): a `pickle.Unpickler` whose
  `find_class` never imports anything and returns an `Opaque` stand-in class for every global, so
  the file is read as data only (the "restricting globals" recipe of the pickle documentation, with
  nothing allowed).

A file that still cannot be read raises `UnreadableFileError` naming it and saying why.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from harness.oracle.artefacts import InertRecord


class UnreadableFileError(Exception):
    """A file that cannot be read safely (or at all); the message names it."""


class Opaque(InertRecord):
    """A stand-in for an object of a class that is never imported: its pickled data only."""

    def __repr__(self):
        return f"<{self.qualname}>"


def opaque_class(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (Opaque,), {"qualname": qualname, "__module__": __name__})


def opaque_data(obj: Opaque) -> dict:
    """What an Opaque holds, for display and comparison (only the parts that are set)."""
    out: dict = {}
    if obj.args:
        out["args"] = list(obj.args)
    if obj.state is not None:
        out["state"] = obj.state
    if obj.items:
        out["items"] = obj.items
    if obj.elements:
        out["elements"] = obj.elements
    return out


def is_opaque_class(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, Opaque)


# numpy arrays and dtypes, as Accelerate's random_states_*.pkl pickle them (numpy 1 and 2 module names)
_NUMPY = ("numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
          "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")


def _numpy_global(name: str):
    import numpy as np

    if name in ("numpy.ndarray", "numpy.dtype"):
        return getattr(np, name.split(".")[1])
    if name.startswith("numpy.dtypes.") and isinstance(getattr(np.dtypes, name.split(".")[-1], None), type):
        return getattr(np.dtypes, name.split(".")[-1])  # a dtype class (UInt32DType, ...): data only
    if name in _NUMPY:
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy 1
            from numpy.core import multiarray
        return getattr(multiarray, name.rsplit(".", 1)[1])
    return None


_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save(_use_new_zipfile_serialization=False)


def _is_legacy(source) -> bool:
    if isinstance(source, io.BytesIO):
        return source.getvalue()[:len(_LEGACY_MAGIC)] == _LEGACY_MAGIC
    try:
        with open(source, "rb") as f:
            return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
    except OSError:
        return False


def load_torch(path: str, data: bytes | None = None) -> Any:
    """A torch.save archive (the file at `path`, or its bytes `data`) read with weights_only=True."""
    import torch
    from torch.serialization import get_unsafe_globals_in_checkpoint

    def source():
        return io.BytesIO(data) if data is not None else path

    try:
        names = get_unsafe_globals_in_checkpoint(source())
    except Exception as e:  # noqa: BLE001 - a damaged archive can raise anything
        if not _is_legacy(source()):
            raise UnreadableFileError(f"{path}: not a readable torch.save archive ({type(e).__name__}: {e})") from None
        # torch lists globals of zip archives only: a legacy-format file gets numpy's arrays (RNG states)
        # and nothing else, so any other class in it is refused by weights_only below
        names = list(_NUMPY)
    allowed = []
    for name in names:
        real = _numpy_global(name)
        allowed.append((real, name) if real is not None else (opaque_class(name), name))
    if any(name.startswith("numpy") for name in names):  # an array's dtype is built from its dtype class
        import numpy as np

        allowed += [c for c in (getattr(np.dtypes, n) for n in dir(np.dtypes)) if isinstance(c, type)
                    and issubclass(c, np.dtype)]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(source(), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's message opens with generic advice; the line naming the refused global says why
        why = next((ln for ln in lines if "GLOBAL" in ln or ln.startswith(("Unsupported", "Can only build"))),
                   lines[0] if lines else type(e).__name__)
        raise UnreadableFileError(
            f"{path}: cannot be read without executing code (torch.load with weights_only=True failed: {why}); "
            "the harness does not unpickle arbitrary objects. Load it with the library that wrote it, "
            "and only if you trust the file") from None


class _DataOnlyUnpickler(pickle.Unpickler):
    """Never imports: every global becomes an Opaque stand-in class."""

    def find_class(self, module, name):
        return opaque_class(f"{module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"persistent id {pid!r} (not a plain pickle)")


def load_data_pickle(path: str) -> Any:
    """A plain pickle read as data: every object of a class comes back as an Opaque record."""
    try:
        with open(path, "rb") as f:
            return _DataOnlyUnpickler(f).load()
    except OSError as e:
        raise UnreadableFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - a damaged pickle can raise anything
        raise UnreadableFileError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
