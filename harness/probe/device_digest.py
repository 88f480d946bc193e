"""Digests computed where a tensor lives, so only a few bytes ever cross to the host.

Hashing a GPU tensor with xxh3 means copying every byte to the host first: gigabytes per step on a
real model. Here the tensor's bytes are read as 64-bit words ``x_i`` (zero-padded to a multiple of
8 bytes), each word is mixed by a fixed bijection ``f`` (murmur3's 64-bit finalizer: xor-shift,
multiply, xor-shift, multiply, xor-shift), and the mixed words are reduced on the tensor's own
device with integer arithmetic only:

    s_a = sum_i  f(x_i) * a_i   (mod 2**64),    a_i = 2*i + 1
    s_b = sum_i  f(x_i) * b_i   (mod 2**64),    b_i = (i * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) | 1

Why the mix: without it the sums are linear in the words, and a flip of bit 63 moves a sum by
``2**63 * w_i``, which is ``2**63`` for every odd weight: two such flips cancel, so an fp32 tensor
with two elements negated, or a negated 2-element fp64 tensor, kept its digest. ``f`` makes a word's
contribution a pseudo-random function of the word, so no set of changes cancels by structure.

What is guaranteed: ``f`` is a bijection and the weights are odd (invertible mod 2**64), so a change
of any bits within one word always changes both sums, by construction. Changes in two or more words
change the digest unless ``f``'s pseudo-random differences happen to satisfy both sums' equations: a
collision, about a 2**-64 event for data that is not chosen to attack ``f`` (it is fixed and public,
not a keyed hash). ``b_i`` mixes positions, so swapped words are caught the same way. Integer addition
is associative, so the result does not depend on how the device orders the reduction: it is the same
on every run, process and device. The two sums (16 bytes) are then hashed on the host with the dtype
and shape.

torch's int64 multiplication and addition wrap modulo 2**64 (two's complement) on CPU and CUDA; its
``>>`` on int64 is arithmetic, so each shift is masked to act as a logical one. The same code runs on
CPU tensors, which is how the tests check it (against a pure-Python reference) without a GPU.
"""

from __future__ import annotations

import xxhash

#: Words reduced per chunk: bounds the temporary int64 buffers to a few tens of MiB.
CHUNK_WORDS = 1 << 22
_PHI = 0x9E3779B97F4A7C15
_OFFSET = 0x632BE59BD9B4E019
# murmur3's fmix64: shift 33, multiply by these, shift 33 (each step is invertible, so f is a bijection)
_SHIFT = 33
_MIX_1 = 0xFF51AFD7ED558CCD
_MIX_2 = 0xC4CEB9FE1A85EC53
_MASK64 = (1 << 64) - 1


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


def mix_reference(x: int) -> int:
    """f of the module docstring on one unsigned 64-bit word, in plain Python (the tests' reference)."""
    x ^= x >> _SHIFT
    x = (x * _MIX_1) & _MASK64
    x ^= x >> _SHIFT
    x = (x * _MIX_2) & _MASK64
    return x ^ (x >> _SHIFT)


def _mix(words):
    """f of each int64 word, as torch int64 ops on the words' device (a new tensor; wraps mod 2**64)."""
    import torch

    low = (1 << (64 - _SHIFT)) - 1  # masks an arithmetic >> down to a logical one
    tmp = torch.bitwise_right_shift(words, _SHIFT)
    tmp &= low
    x = words ^ tmp
    for factor in (_MIX_1, _MIX_2):
        x *= _signed(factor)
        torch.bitwise_right_shift(x, _SHIFT, out=tmp)
        tmp &= low
        x ^= tmp
    return x


def word_sums(t) -> tuple[int, int]:
    """(s_a, s_b) of the module docstring, as unsigned ints (computed on the tensor's device)."""
    import torch

    words = _words(t)
    n = words.numel()
    total_a = torch.zeros((), dtype=torch.int64, device=words.device)
    total_b = torch.zeros((), dtype=torch.int64, device=words.device)
    for start in range(0, n, CHUNK_WORDS):
        mixed = _mix(words[start:start + CHUNK_WORDS])
        idx = torch.arange(start, start + mixed.numel(), dtype=torch.int64, device=words.device)
        total_a += (mixed * (idx * 2 + 1)).sum()
        idx *= _signed(_PHI)
        idx += _signed(_OFFSET)
        idx |= 1
        mixed *= idx
        total_b += mixed.sum()
    both = torch.stack([total_a, total_b]).cpu()  # the only copy to the host: 16 bytes
    return tuple(int(v) & _MASK64 for v in both.tolist())


def word_sums_reference(data: bytes) -> tuple[int, int]:
    """``word_sums`` of a tensor with these raw bytes, in plain Python integers (slow: for tests)."""
    data = bytes(data) + bytes(-len(data) % 8)
    s_a = s_b = 0
    for i in range(len(data) // 8):
        y = mix_reference(int.from_bytes(data[8 * i:8 * i + 8], "little"))
        s_a += y * (2 * i + 1)
        s_b += y * (((i * _PHI + _OFFSET) & _MASK64) | 1)
    return s_a & _MASK64, s_b & _MASK64


def device_digest(t) -> str:
    """A 128-bit hex digest of a tensor (dtype, shape and the two word sums), computed on its device."""
    s_a, s_b = word_sums(t)
    h = xxhash.xxh3_128(f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}\0".encode())
    h.update(s_a.to_bytes(8, "little") + s_b.to_bytes(8, "little"))
    return h.hexdigest()
