"""Exact JSON for digest leaves: ``json_leaf`` encodes, ``from_json_leaf`` decodes.

None, bool, int, str: themselves. A finite float: itself (``json.dumps`` writes ``1.0`` and ``-0.0``,
which ``json.loads`` reads back as the same float, distinct from the int ``1``). A non-finite float:
``{"float64": "<16 hex digits>"}``, its bits big-endian (``7ff8000000000000`` is the usual NaN), so
NaN payloads and signs survive. bytes: ``{"bytes": "<hex>"}``. ``Empty(kind)``: ``{"empty": kind}``.
Tensors and arrays are not JSON leaves (``DigestError``).
"""

from __future__ import annotations

import struct

from harness.probe.digest import DigestError, Empty, _float_bits

__all__ = ["json_leaf", "from_json_leaf"]


def json_leaf(value):
    """A JSON-able value that gives back ``value`` exactly, type included (module docstring)."""
    if isinstance(value, Empty):
        return {"empty": value.kind}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        value = float.__float__(value)
        return value if value - value == 0.0 else {"float64": _float_bits(value)}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    raise DigestError(f"not a JSON leaf: a {type(value).__module__}.{type(value).__qualname__} "
                      "(tensors and arrays are digested or written to safetensors)")


def from_json_leaf(j):
    """The leaf that ``json_leaf`` encoded as ``j`` (after a JSON round trip)."""
    if j is None or isinstance(j, (bool, int, float, str)):
        return j
    if isinstance(j, dict) and len(j) == 1:
        (tag, text), = j.items()
        if tag == "float64" and isinstance(text, str) and len(text) == 16:
            return struct.unpack(">d", bytes.fromhex(text))[0]
        if tag == "bytes" and isinstance(text, str):
            return bytes.fromhex(text)
        if tag == "empty" and isinstance(text, str):
            return Empty(text)
    raise ValueError(f"not an encoded JSON leaf: {j!r}")
