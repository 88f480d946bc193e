"""Exact distances between raw tensor bytes: element counts, max abs diff, ULP distance.

ULP distance. A float's bit pattern, read as sign and magnitude, is mapped to a signed integer whose
order is the numeric order:

    ordinal(bits) = magnitude          when the sign bit is 0
    ordinal(bits) = -magnitude - 1     when the sign bit is 1

and the distance is |ordinal(a) - ordinal(b)|. The map is a bijection on bit patterns, so the distance
is 0 exactly when the bits are equal. Choices that follow from it, on purpose:

* +0.0 and -0.0 are different bit patterns: the oracle reports them, at distance 1 (-0.0 is -1, +0.0
  is 0). Hence stepping across zero costs one extra ULP: nextafter(-0.0, +inf) is 2 ULP from -0.0 and
  -denorm_min -> +denorm_min is 3. Everywhere else nextafter(x) is exactly 1 ULP from x.
* NaN has an ordinal too, but a distance to a NaN means nothing: `diff_stats` leaves NaN pairs out of
  max_abs_diff / max_ulp and says so in the note ("nan: ...").
* The distance of two float64 patterns can reach 2**64 - 1; it is computed in uint64 without overflow.

Integers: the ULP distance is the exact absolute difference. bool: no distance (max_ulp None).
Nothing here has a tolerance: every difference is counted, however small.
"""

from __future__ import annotations

import numpy as np

# canonical dtype name -> (kind, itemsize); kinds: f float, i signed int, u unsigned int, b bool, c complex
DTYPES = {
    "float64": ("f", 8), "float32": ("f", 4), "float16": ("f", 2), "bfloat16": ("f", 2),
    "float8_e4m3fn": ("f", 1), "float8_e5m2": ("f", 1),
    "float8_e4m3fnuz": ("f", 1), "float8_e5m2fnuz": ("f", 1),
    "int64": ("i", 8), "int32": ("i", 4), "int16": ("i", 2), "int8": ("i", 1),
    "uint64": ("u", 8), "uint32": ("u", 4), "uint16": ("u", 2), "uint8": ("u", 1),
    "bool": ("b", 1), "complex64": ("c", 8), "complex128": ("c", 16),
}
_ALIASES = {
    # safetensors names
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64", "C128": "complex128",
    # torch / numpy spellings
    "double": "float64", "float": "float32", "half": "float16", "long": "int64", "int": "int32",
    "short": "int16", "cfloat": "complex64", "cdouble": "complex128", "bf16": "bfloat16",
    "fp64": "float64", "fp32": "float32", "fp16": "float16",
}
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def canonical_dtype(name: str) -> str:
    """'torch.float32', 'F32', 'float32' -> 'float32'; unknown names come back unchanged."""
    n = str(name)
    for prefix in ("torch.", "numpy.", "np."):
        if n.startswith(prefix):
            n = n[len(prefix):]
    return _ALIASES.get(n, n)


def ordinal(bits: np.ndarray) -> np.ndarray:
    """Unsigned float bit patterns (uint8..uint64) -> int64 ordinals, monotonic in the float value."""
    bits = np.asarray(bits)
    width = bits.dtype.itemsize * 8
    u = bits.astype(np.uint64)
    sign = (u >> np.uint64(width - 1)).astype(bool)
    mag = (u & np.uint64((1 << (width - 1)) - 1)).astype(np.int64)  # < 2**63: fits
    return np.where(sign, -mag - 1, mag)


def ulp_distance(bits_a: np.ndarray, bits_b: np.ndarray) -> np.ndarray:
    """Element-wise ULP distance of two arrays of float bit patterns, as exact uint64."""
    oa, ob = np.atleast_1d(ordinal(bits_a)), np.atleast_1d(ordinal(bits_b))
    hi, lo = np.maximum(oa, ob), np.minimum(oa, ob)
    return hi.view(np.uint64) - lo.view(np.uint64)  # wraps mod 2**64; the true distance is < 2**64


def float_bits(x) -> np.ndarray:
    """Bit patterns of a numpy float array / scalar (float16/32/64) or Python float (as float64)."""
    a = np.atleast_1d(np.asarray(x, dtype=np.float64) if isinstance(x, float) else np.asarray(x))
    return a.view(_UINT[a.dtype.itemsize])


def ulp(a, b) -> int:
    """ULP distance between two floats of the same numpy dtype (Python floats count as float64)."""
    return int(ulp_distance(float_bits(a), float_bits(b))[0])


def decode_float(bits: np.ndarray, dtype: str) -> np.ndarray:
    """Float bit patterns of `dtype` -> float64 values (exact: every narrower float fits in float64)."""
    dtype = canonical_dtype(dtype)
    if dtype in ("float64", "float32", "float16"):
        return bits.view(np.dtype(dtype)).astype(np.float64)
    if dtype == "bfloat16":  # the top half of a float32
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    import torch  # float8 formats: let torch decode them

    return torch.from_numpy(bits.astype(np.uint8)).view(getattr(torch, dtype)).double().numpy()


def decode_scalar(raw: bytes, dtype: str):
    """The value of one element given as raw bytes (a float as float64, an int as int), None if unknown."""
    kind, size = DTYPES.get(canonical_dtype(dtype), ("?", 0))
    if len(raw) != size or kind not in "fiub":
        return None
    bits = np.frombuffer(raw, _UINT[size])
    if kind == "f":
        return float(decode_float(bits, dtype)[0])
    return int(bits.view(np.dtype(f"{kind}{size}"))[0]) if kind != "b" else bool(bits[0])


def diff_stats(dtype: str, a: bytes | np.ndarray, b: bytes | np.ndarray) -> dict | None:
    """Compare two equally shaped tensors given as raw bytes in `dtype`.

    Returns None when the bytes are equal, else {"n_diff", "max_abs_diff", "max_ulp", "note"}.
    n_diff counts differing elements (bytes, for a dtype unknown here).
    """
    a8 = np.frombuffer(a, np.uint8) if isinstance(a, (bytes, bytearray, memoryview)) else a.view(np.uint8).reshape(-1)
    b8 = np.frombuffer(b, np.uint8) if isinstance(b, (bytes, bytearray, memoryview)) else b.view(np.uint8).reshape(-1)
    if a8.shape != b8.shape:
        raise ValueError(f"byte sizes differ: {a8.size} vs {b8.size}")
    if np.array_equal(a8, b8):
        return None
    dtype = canonical_dtype(dtype)
    kind, size = DTYPES.get(dtype, ("?", 1))
    if kind in ("?", "c") or a8.size % size:  # no ordering: count differing elements (or bytes)
        size = 1 if kind == "?" or a8.size % size else size
        n = int(np.count_nonzero((a8.reshape(-1, size) != b8.reshape(-1, size)).any(axis=1)))
        what = "elements" if size > 1 else "bytes"
        return {"n_diff": n, "max_abs_diff": None, "max_ulp": None, "note": f"{n} {what} differ; no ULP for {dtype}"}
    ua, ub = a8.view(_UINT[size]), b8.view(_UINT[size])
    neq = ua != ub
    n = int(np.count_nonzero(neq))
    ua, ub = ua[neq], ub[neq]
    if kind == "b":
        return {"n_diff": n, "max_abs_diff": None, "max_ulp": None, "note": "bool"}
    if kind in ("i", "u"):
        if kind == "i":
            sa, sb = ua.view(np.dtype(f"i{size}")).astype(np.int64), ub.view(np.dtype(f"i{size}")).astype(np.int64)
            d = np.maximum(sa, sb).view(np.uint64) - np.minimum(sa, sb).view(np.uint64)
        else:
            wa, wb = ua.astype(np.uint64), ub.astype(np.uint64)
            d = np.maximum(wa, wb) - np.minimum(wa, wb)
        m = int(d.max())
        return {"n_diff": n, "max_abs_diff": float(m), "max_ulp": m, "note": ""}
    va, vb = decode_float(ua, dtype), decode_float(ub, dtype)
    nan = np.isnan(va) | np.isnan(vb)
    notes = []
    one_sided = int(np.count_nonzero(np.isnan(va) != np.isnan(vb)))
    if one_sided:
        notes.append(f"nan: {one_sided} element(s) NaN on one side only")
    if int(np.count_nonzero(nan)) > one_sided:
        notes.append(f"nan: {int(np.count_nonzero(nan)) - one_sided} element(s) with different NaN bits")
    zeros = int(np.count_nonzero((va == 0) & (vb == 0)))
    if zeros:
        notes.append(f"{zeros} element(s) differ only in the sign of zero")
    ok = ~nan
    if not ok.any():
        return {"n_diff": n, "max_abs_diff": None, "max_ulp": None, "note": "; ".join(notes)}
    with np.errstate(over="ignore", invalid="ignore"):
        max_abs = float(np.max(np.abs(va[ok] - vb[ok])))
    max_ulp = int(ulp_distance(ua[ok], ub[ok]).max())
    return {"n_diff": n, "max_abs_diff": max_abs, "max_ulp": max_ulp, "note": "; ".join(notes)}
