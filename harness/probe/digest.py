"""Digests of tensors, nested batches, model/optimizer state and RNG states.

Every digest is an xxh3-128 hex string over, for each leaf in a fixed order: its key path, its
type, and for a tensor its dtype, shape and raw bytes (read zero-copy from the tensor's memory).
Containers are walked the same way by ``leaves()``, which ``probe.finish`` also uses to flatten the
final state, so a digest and a final-state file always agree on names and order:

- dict (any Mapping): keys sorted by ``str(key)``; list/tuple: in order; dataclass: its fields.
- leaves: torch tensors, numpy arrays, None, bool, int, float (as IEEE-754 float64 bits), str, bytes.

Anything else raises ``TypeError`` naming the key path, so a digest never depends on an object's
memory address. torch is imported lazily: importing this module costs only xxhash.
"""

from __future__ import annotations

import ctypes
import dataclasses
import struct
import sys
from collections.abc import Mapping
from typing import Any, Iterator

import xxhash

SCALARS = (type(None), bool, int, float, str, bytes)


class DigestError(TypeError):
    pass


def _torch():
    import torch  # already imported by any caller that has tensors

    return torch


def _is_tensor(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _is_ndarray(obj) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray)


def _is_numpy_scalar(obj) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.generic)


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(key_path, leaf)`` in the fixed order; key paths are joined with '/'."""
    if _is_tensor(obj) or _is_ndarray(obj) or isinstance(obj, SCALARS):
        yield prefix, obj
    elif _is_numpy_scalar(obj):
        yield prefix, sys.modules["numpy"].asarray(obj)
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            yield from leaves(obj[key], f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from leaves(item, f"{prefix}/{i}" if prefix else str(i))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from leaves(getattr(obj, f.name), f"{prefix}/{f.name}" if prefix else f.name)
    else:
        where = f" at {prefix!r}" if prefix else ""
        raise DigestError(
            f"cannot digest a {type(obj).__module__}.{type(obj).__qualname__}{where}: pass tensors, numpy arrays, "
            "numbers, strings, bytes, or dicts/lists/tuples/dataclasses of them")


def tensor_bytes(t):
    """The raw bytes of a tensor as a buffer, zero-copy for a contiguous CPU tensor.

    The buffer borrows the tensor's memory: use it while the caller still holds ``t``.
    """
    if (t.device.type == "cpu" and t.layout is _torch().strided and t.is_contiguous()
            and not t.is_conj() and not t.is_neg() and not hasattr(t, "to_local")):
        nbytes = t.numel() * t.element_size()
        return (ctypes.c_char * nbytes).from_address(t.data_ptr()) if nbytes else b""
    return _tensor_bytes_copy(t)


def plain_tensor(t):
    """``t`` detached, dense, with its conjugate/negative bits resolved (a DTensor: this rank's shard)."""
    t = t.detach()
    if hasattr(t, "to_local") and callable(t.to_local):
        t = t.to_local()
    if t.is_sparse:
        t = t.to_dense()
    return t.resolve_conj().resolve_neg()


def _tensor_bytes_copy(t):
    torch = _torch()
    t = plain_tensor(t)
    if t.device.type == "meta":
        raise DigestError("cannot digest a tensor on the meta device (it has no data)")
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.dtype != torch.uint8:
        t = t.view(torch.uint8)
    return t.numpy()  # the array keeps the temporary tensor alive


def _update_leaf(h, key: str, leaf) -> None:
    h.update(key.encode())
    if _is_tensor(leaf):
        h.update(f"\0T{str(leaf.dtype)[6:]}{tuple(leaf.shape)}\0".encode())
        h.update(tensor_bytes(leaf))
    elif _is_ndarray(leaf):
        np = sys.modules["numpy"]
        if leaf.dtype.hasobject:
            raise DigestError(f"cannot digest a numpy array of dtype object at {key!r}")
        h.update(f"\0A{leaf.dtype.str}{leaf.shape}\0".encode())
        h.update(np.ascontiguousarray(leaf).reshape(-1).view(np.uint8))
    elif isinstance(leaf, float):
        h.update(b"\0f" + struct.pack("<d", leaf))
    elif isinstance(leaf, bytes):
        h.update(b"\0b%d\0" % len(leaf) + leaf)
    else:  # None, bool, int, str
        h.update(f"\0{type(leaf).__name__[0]}{leaf!r}\0".encode())


def digest(obj: Any) -> str:
    """xxh3-128 hex digest of a tensor or a nested structure of tensors and scalars."""
    h = xxhash.xxh3_128()
    for key, leaf in leaves(obj):
        _update_leaf(h, key, leaf)
    return h.hexdigest()


def tensor_digest(t) -> str:
    h = xxhash.xxh3_128()
    _update_leaf(h, "", t)
    return h.hexdigest()


def combine(digests: Mapping[str, str]) -> str:
    """One digest over named digests (in sorted name order), without rehashing the data."""
    h = xxhash.xxh3_128()
    for name in sorted(digests):
        h.update(f"{name}\0{digests[name]}\0".encode())
    return h.hexdigest()


def unwrap_model(model):
    """The module under DDP/FSDP wrappers (``.module``) and torch.compile (``._orig_mod``)."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "_orig_mod", None)
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel",
                                                       "FullyShardedDataParallel"):
            inner = getattr(model, "module", None)
        if inner is None:
            break
        model = inner
    return model


def model_tensors(model) -> dict:
    """Parameters and buffers of the unwrapped model, by name (tied tensors appear once)."""
    model = unwrap_model(model)
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return tensors


def params_digests(model) -> tuple[str, dict]:
    per_tensor = {name: tensor_digest(t) for name, t in model_tensors(model).items()}
    return combine(per_tensor), per_tensor


def optimizer_digest(optimizer) -> str:
    return digest(optimizer.state_dict())


def rng_digests() -> dict:
    """Digests of the python, numpy (legacy global), torch CPU and CUDA RNG states."""
    import random

    out: dict = {"python": None, "numpy": None, "torch": None, "cuda": None}
    version, words, gauss = random.getstate()
    h = xxhash.xxh3_128(f"{version}\0{gauss!r}\0".encode())
    h.update(struct.pack(f"<{len(words)}I", *words))
    out["python"] = h.hexdigest()
    np = sys.modules.get("numpy")
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        h = xxhash.xxh3_128(f"{name}\0{pos}\0{has_gauss}\0".encode() + struct.pack("<d", cached))
        h.update(keys)
        out["numpy"] = h.hexdigest()
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = tensor_digest(torch.get_rng_state())
        if torch.cuda.is_initialized():
            out["cuda"] = digest(list(torch.cuda.get_rng_state_all()))
    return out
