"""Tensor helpers shared by the probe, the oracle and the reference checkpointer.

One definition of "the bytes of a tensor" and "the model under its wrappers", so that a digest in a
trace, a final-state file and a checkpoint all see exactly the same data. torch is imported lazily:
importing this module costs nothing.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["is_tensor", "tensor_bytes", "plain_tensor", "unwrap_model", "TensorError"]


class TensorError(TypeError):
    """A tensor whose bytes cannot be read (meta device)."""


def _torch():
    import torch  # already imported by any caller that has tensors

    return torch


def is_tensor(obj) -> bool:
    """isinstance(obj, torch.Tensor), without importing torch when no caller has."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def plain_tensor(t):
    """``t`` detached, dense, with its conjugate/negative bits resolved (a DTensor: this rank's shard)."""
    t = t.detach()
    if hasattr(t, "to_local") and callable(t.to_local):
        t = t.to_local()
    if t.is_sparse:
        t = t.to_dense()
    return t.resolve_conj().resolve_neg()


def tensor_bytes(t):
    """The raw bytes of a tensor as a buffer, zero-copy for a contiguous CPU tensor.

    The buffer borrows the tensor's memory: use it while the caller still holds ``t``. A DTensor
    gives its local shard; a tensor on another device is copied to the host.
    """
    torch = _torch()
    if (t.device.type == "cpu" and t.layout is torch.strided and t.is_contiguous()
            and not t.is_conj() and not t.is_neg() and not hasattr(t, "to_local")):
        nbytes = t.numel() * t.element_size()
        return (ctypes.c_char * nbytes).from_address(t.data_ptr()) if nbytes else b""
    t = plain_tensor(t)
    if t.device.type == "meta":
        raise TensorError("cannot read a tensor on the meta device (it has no data)")
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.dtype != torch.uint8:
        t = t.view(torch.uint8)
    return t.numpy()  # the array keeps the temporary tensor alive


_WRAPPERS = ("DistributedDataParallel", "DataParallel")


def unwrap_model(model):
    """The module whose ``state_dict`` keys are the user's: strips DDP / DataParallel (``.module``)
    and torch.compile (``._orig_mod``). FSDP2 (``fully_shard``) wraps nothing; FSDP1 and DeepSpeed
    engines are left as they are, since their own ``state_dict`` is the one that gathers shards."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "_orig_mod", None)
        if inner is None and type(model).__name__ in _WRAPPERS:
            inner = getattr(model, "module", None)
        if inner is None:
            break
        model = inner
    return model
