"""The on-device digest: its properties, checked on CPU tensors (the same code runs on CUDA)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
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
    # A known value, so a change of the arithmetic (or of torch's integer wrap-around) is noticed:
    # f(1), f(2) are murmur3's fmix64 of 1 and 2, weighted by a_i = 2i + 1 and b_i.
    f1, f2 = 0xB456BCFC34C2CB2C, 0x3ABF2A20650683E7
    assert dd.word_sums(torch.tensor([1, 2], dtype=torch.int64)) == (
        (f1 * 1 + f2 * 3) % 2**64,
        (f1 * (0x632BE59BD9B4E019 | 1) + f2 * ((0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64 | 1)) % 2**64)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(1, 9))
def test_torch_ops_equal_the_python_reference(data, chunk):
    """The int64 torch ops (masked shifts, wrapping multiplies) compute exactly the documented integers,
    whatever the chunking (what a GPU runs is these same ops)."""
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    expected = dd.word_sums_reference(data)
    before = dd.CHUNK_WORDS
    dd.CHUNK_WORDS = chunk
    try:
        assert dd.word_sums(t) == expected
    finally:
        dd.CHUNK_WORDS = before


def test_sign_flips_do_not_cancel():
    """Issue 17 item 8: with linear sums two bit-63 flips cancelled (2**63 * odd + 2**63 * odd = 0 mod 2**64)."""
    t = torch.tensor([1.5, -2.25], dtype=torch.float64)
    assert dd.device_digest(-t) != dd.device_digest(t)
    t = torch.arange(1, 9, dtype=torch.float32)
    two = t.clone()
    two[[1, 5]] *= -1  # elements 1 and 5: the top bit of words 0 and 2
    assert dd.device_digest(two) != dd.device_digest(t)
    four = torch.arange(1, 9, dtype=torch.float64)
    assert dd.device_digest(-four) != dd.device_digest(four)  # eight bit-63 flips


_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64]
_NICE = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, 1e-3]  # few distinct values: structured tensors, equal words


@st.composite
def _tensors(draw):
    """A 1-D tensor of one of _DTYPES: random bits (NaNs included), or a few distinct small values."""
    dtype = draw(st.sampled_from(_DTYPES))
    size = torch.empty(0, dtype=dtype).element_size()
    n = draw(st.integers(2, 40))
    if draw(st.booleans()):
        raw = bytearray(draw(st.binary(min_size=n * size, max_size=n * size)))
        return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).clone()
    return torch.tensor(draw(st.lists(st.sampled_from(_NICE), min_size=n, max_size=n))).to(dtype)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8).reshape(-1)


@settings(max_examples=300, deadline=None)
@given(_tensors(), st.data())
def test_property_sign_flips_swaps_and_bit_flips_change_the_digest(t, data):
    """For fp32/fp64/bf16/fp16/int64 tensors: flipping the sign bit of any 1-2 elements, swapping two
    different elements, or flipping any 1-3 distinct bits changes the digest."""
    base = dd.device_digest(t)
    size, n = t.element_size(), t.numel()
    kind = data.draw(st.sampled_from(["sign", "swap", "bits"]))
    out = t.clone()
    if kind == "sign":
        idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2, unique=True))
        for i in idx:
            _bits(out)[i * size + size - 1] ^= 0x80  # the top bit of a little-endian element: its sign
    elif kind == "swap":
        i, j = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        raw = _bits(t)
        assume(not torch.equal(raw[i * size:(i + 1) * size], raw[j * size:(j + 1) * size]))
        _bits(out)[i * size:(i + 1) * size] = raw[j * size:(j + 1) * size]
        _bits(out)[j * size:(j + 1) * size] = raw[i * size:(i + 1) * size]
    else:
        for b in data.draw(st.lists(st.integers(0, n * size * 8 - 1), min_size=1, max_size=3, unique=True)):
            _bits(out)[b // 8] ^= 1 << (b % 8)
    assert not torch.equal(_bits(out), _bits(t))
    assert dd.device_digest(out) != base, kind


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
