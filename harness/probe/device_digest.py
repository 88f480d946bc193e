"""Digests computed where a tensor lives, so only a few bytes ever cross to the host.

Hashing a GPU tensor with xxh3 means copying every byte to the host first: gigabytes per step on a
real model. Here the tensor's bytes are read as 64-bit words ``x_i`` (zero-padded to a multiple of
8 bytes) and reduced on the tensor's own device with integer arithmetic only:

    s_a = sum_i  x_i * a_i   (mod 2**64),    a_i = 2*i + 1
    s_b = sum_i  x_i * b_i   (mod 2**64),    b_i = (i * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) | 1

Both weight sequences are odd, so a single flipped bit of word ``x_i`` (a change of ``±2**k``) moves
each sum by ``±2**k * w_i``, which is never ``0 (mod 2**64)`` for ``k < 64`` and odd ``w_i``: any single
bit flip changes the digest, by construction. Integer addition is associative, so the result does
not depend on how the device orders the reduction: it is the same on every run and every device.
``b_i`` mixes positions, so swapped words are caught as well (with high probability, not by
construction). Two *different* flips can give the same digest (a flip of bit 63 moves both sums by
``2**63`` in any word): the guarantee is that each differs from the original. The two sums (16 bytes) are then hashed on the host with the dtype and shape.

torch's int64 multiplication and addition wrap modulo 2**64 (two's complement) on CPU and CUDA; the
same code runs on CPU tensors, which is how the tests check its properties without a GPU.
"""

from __future__ import annotations

import xxhash

#: Words reduced per chunk: bounds the temporary int64 buffers to a few tens of MiB.
CHUNK_WORDS = 1 << 22
_PHI = 0x9E3779B97F4A7C15
_OFFSET = 0x632BE59BD9B4E019


def _signed(x: int) -> int:
    """An unsigned 64-bit constant as the int64 torch can hold."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _words(t):
    """The tensor's bytes as int64 words on its device (zero-padded to a multiple of 8 bytes)."""
    import torch

    from harness.tensors import plain_tensor

    flat = plain_tensor(t).contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat
    pad = (-raw.numel()) % 8
    if pad:
        raw = torch.cat([raw, torch.zeros(pad, dtype=torch.uint8, device=raw.device)])
    return raw.view(torch.int64)


def word_sums(t) -> tuple[int, int]:
    """(s_a, s_b) of the module docstring, as unsigned ints (computed on the tensor's device)."""
    import torch

    words = _words(t)
    n = words.numel()
    total_a = torch.zeros((), dtype=torch.int64, device=words.device)
    total_b = torch.zeros((), dtype=torch.int64, device=words.device)
    for start in range(0, n, CHUNK_WORDS):
        chunk = words[start:start + CHUNK_WORDS]
        idx = torch.arange(start, start + chunk.numel(), dtype=torch.int64, device=words.device)
        a = idx * 2 + 1
        b = (idx * _signed(_PHI) + _signed(_OFFSET)) | 1
        total_a += (chunk * a).sum()
        total_b += (chunk * b).sum()
    both = torch.stack([total_a, total_b]).cpu()  # the only copy to the host: 16 bytes
    return tuple(int(v) & ((1 << 64) - 1) for v in both.tolist())


def device_digest(t) -> str:
    """A 128-bit hex digest of a tensor (dtype, shape and the two word sums), computed on its device."""
    s_a, s_b = word_sums(t)
    h = xxhash.xxh3_128(f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}\0".encode())
    h.update(s_a.to_bytes(8, "little") + s_b.to_bytes(8, "little"))
    return h.hexdigest()
