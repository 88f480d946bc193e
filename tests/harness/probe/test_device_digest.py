"""The on-device digest: its properties, checked on CPU tensors (the same code runs on CUDA)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.probe import device_digest as dd
from harness.probe import digest


def _flip(t: torch.Tensor, bit: int) -> torch.Tensor:
    out = t.clone()
    raw = out.view(torch.uint8).reshape(-1)
    raw[bit // 8] ^= 1 << (bit % 8)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.int8, torch.float16])
def test_every_single_bit_flip_changes_the_digest(dtype):
    torch.manual_seed(0)
    t = (torch.randn(37) * 100).to(dtype)  # 37 elements: the last word is zero-padded for small dtypes
    base = dd.device_digest(t)
    nbits = t.numel() * t.element_size() * 8
    assert all(dd.device_digest(_flip(t, b)) != base for b in range(nbits))


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=256), st.data())
def test_a_flipped_bit_anywhere_changes_the_sums(data, draw):
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    bit = draw.draw(st.integers(0, len(data) * 8 - 1))
    assert dd.word_sums(t) != dd.word_sums(_flip(t, bit))


def test_stable_across_runs_and_chunkings(monkeypatch):
    t = torch.arange(10_000, dtype=torch.float32).sin()
    first = dd.device_digest(t)
    assert dd.device_digest(t.clone()) == first
    monkeypatch.setattr(dd, "CHUNK_WORDS", 7)  # another reduction split: integer sums do not care
    assert dd.device_digest(t) == first
    # A known value, so a change of the arithmetic (or of torch's integer wrap-around) is noticed.
    assert dd.word_sums(torch.tensor([1, 2], dtype=torch.int64)) == (1 * 1 + 2 * 3,
                                                                     (((0x632BE59BD9B4E019 | 1)
                                                                       + 2 * ((0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019)
                                                                              % 2**64 | 1)) % 2**64))


def test_swapped_words_and_dtype_or_shape_changes_are_caught():
    t = torch.arange(8, dtype=torch.float64)
    swapped = t[[1, 0, 2, 3, 4, 5, 6, 7]]
    assert dd.device_digest(t) != dd.device_digest(swapped)
    assert dd.device_digest(t) != dd.device_digest(t.view(torch.int64))
    assert dd.device_digest(t) != dd.device_digest(t.reshape(2, 4))


def test_non_contiguous_views_digest_their_values():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert dd.device_digest(t.t()) == dd.device_digest(t.t().contiguous())


def test_digest_uses_the_device_path_off_the_cpu(monkeypatch):
    """A tensor on another device is never copied: the digest goes through word_sums."""
    calls = []
    monkeypatch.setattr(dd, "word_sums", lambda t: calls.append(t) or (1, 2))

    class FakeDevice:
        type = "cuda"

    t = torch.ones(3)
    original = torch.Tensor.device
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: FakeDevice() if self is t else original.__get__(self)))
    is_cpu = torch.Tensor.is_cpu
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda self: False if self is t else is_cpu.__get__(self)))
    d = digest.tensor_digest(t)
    assert calls and calls[0] is t and d != digest.tensor_digest(torch.ones(3))
