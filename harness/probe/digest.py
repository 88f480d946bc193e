"""Digests of nested structures (batches, state_dicts) and tensors, and the key paths of their leaves.

Exact JSON for leaves is in ``json_leaf.py``; digests of model, optimizer and RNG state in ``state_digest.py``.

Leaves and key paths
--------------------
``leaves(obj)`` walks a nested structure and yields ``(path, leaf)`` in a fixed order. The same walk
defines ``digest()`` and the keys of the final-state files that ``probe.finish`` writes, so a digest
and a final-state file always agree on names and order.

- Containers: a dict (any ``Mapping``: dict, OrderedDict, ...), a list, a tuple (namedtuples and
  ``torch.Size`` count as tuples), a dataclass instance (its ``dataclasses.fields``).
- Leaves: torch tensors, numpy arrays (a numpy scalar becomes a 0-d array), None, bool, int,
  float, str, bytes. A subclass of int, float or str (an IntEnum, ``numpy.float64``) is taken as
  its base type's value.
- An empty container is a leaf of its own: ``Empty("dict")``, ``Empty("list")``,
  ``Empty("tuple")``, or for a dataclass without fields ``Empty("dataclass:<module>.<qualname>")``.
  So ``{}``, ``[]`` and ``{"a": {}}`` all have leaves, and all differ.
- Anything else raises ``DigestError`` naming the key path, so a digest never depends on an
  object's memory address.

A key path is its components joined by ``/``; the root is the empty path ``""``. Each component
says which kind of container it indexes and, for a dict, the key's type::

    component   meaning                         example
    text        dict key, a non-empty str       fc.weight, exp_avg, a%2Fb (the key "a/b")
    #<int>      dict key, an int                #0, #-3
    [<int>]     list index                      [0]
    (<int>)     tuple index                     (1)
    .<name>     dataclass field                 .step
    !None !True !False                          dict key None, True, False
    !float:<16 hex digits>                      dict key, a float by its IEEE-754 float64 bits (big-endian)
    !bytes:<hex>                                dict key, bytes
    !str:                                       dict key, the empty str

A str key is written as itself, except that ``%`` becomes ``%25``, ``/`` becomes ``%2F``, and a
first character that is a tag character (one of ``# [ ( . !``) becomes ``%XX`` (its code point in
two upper-case hex digits): ``".a"`` -> ``%2Ea``, ``"#0"`` -> ``%230``. So no str key looks like a
tagged component, a component never contains ``/``, and the path of a leaf is unique within its
structure. Any other dict key type raises ``DigestError``; so do two keys of one dict that give the
same component (two NaN float keys). ``format_path`` and ``parse_path`` convert between a path and
its components; ``parse_path`` accepts only paths in this exact (canonical) form.

Examples: ``model.state_dict()`` keys are unchanged (``fc.weight``); ``optimizer.state_dict()``
gives ``state/#0/exp_avg``, ``param_groups/[0]/lr``, ``param_groups/[0]/betas/(0)``,
``param_groups/[0]/params/[1]``.

Order: dict keys sorted str keys first (by the str), then int keys (by value), then the others (by
component); lists, tuples and dataclass fields in order.

Digest
------
Every digest is an xxh3-128 hex string over, for each leaf in order, a record::

    u64-le length + the path (UTF-8), where a dataclass field component also carries the class,
        ``.<field>:<module>.<qualname>``, so two dataclasses with the same fields differ
    then by leaf type:
      None   b"N"                    bool   b"B" + one byte 0/1
      int    b"I" + len + decimal    float  b"F" + IEEE-754 float64 bits (little-endian)
      str    b"S" + len + UTF-8      bytes  b"Y" + len + the bytes
      Empty  b"E" + len + kind
      tensor b"T" + len + "<dtype> <shape>" + u64 nbytes + xxh3-128 of the raw bytes   (CPU)
             b"T" + len + "<dtype> <shape>" + b"D" + u64 nbytes + u64 s_a + u64 s_b   (other devices)
      array  b"A" + len + "<dtype.str> <shape>" + u64 nbytes + xxh3-128 of the raw bytes

(``len`` is a u64-le byte count; strings are UTF-8 with lone surrogates passed through). A tensor on
an accelerator is reduced on its device to two 64-bit weighted sums of its mixed words
(``device_digest.py``: a change within one 8-byte word always changes them, any other change too but
for a collision of about 2**-64; only 16 bytes are copied to the host). The raw bytes of a CPU tensor are
read zero-copy where possible (``harness.tensors.tensor_bytes``; a DTensor
gives its local shard). Two structures have the same digest only if they have the same paths, leaf
types and values bit for bit: ``{0: x}`` differs from ``{"0": x}``, ``(t,)`` from ``[t]``, ``[t, t]``
from ``{0: t, 1: t}``, ``{"a/b": x}`` from ``{"a": {"b": x}}``, ``{"a": {}}`` from ``{"a": []}``.
A tensor leaf is hashed into its record (a Merkle step), so the bytes are read once even when a
leaf also feeds a per-entry digest (``optimizer_record``).

torch is imported lazily: importing this module costs only xxhash.
"""

from __future__ import annotations

import ctypes
import dataclasses
import re
import struct
import sys
from collections.abc import Mapping
from typing import Any, Iterator

import xxhash

from harness.tensors import (  # noqa: F401  (re-exported: probe and checkpoint code use them from here)
    TensorError, is_tensor, plain_tensor, tensor_bytes, unwrap_model)

__all__ = [
    "DigestError", "Empty", "leaves", "format_path", "parse_path", "format_component", "digest",
    "tensor_digest", "combine", "tensor_bytes", "plain_tensor", "unwrap_model",
]

SCALARS = (type(None), bool, int, float, str, bytes)
_TAGS = "#[(.!"
_LEAF_TYPES = ("pass tensors, numpy arrays, None, bools, ints, floats, strings, bytes, "
               "or dicts/lists/tuples/dataclasses of them")


class DigestError(TypeError):
    pass


_is_tensor = is_tensor


def _is_ndarray(obj) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray)


def _is_numpy_scalar(obj) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.generic)


class Empty(dict):
    """The leaf standing for an empty container: ``Empty("dict" | "list" | "tuple")``, or
    ``Empty("dataclass:<module>.<qualname>")``.

    It is a dict equal to its exact JSON, ``{"empty": kind}``, so that code which writes leaves with
    ``json.dump`` writes it as ``json_leaf.json_leaf`` would.
    """

    __slots__ = ()

    def __init__(self, kind: str):
        super().__init__(empty=kind)

    @property
    def kind(self) -> str:
        return self["empty"]

    def __repr__(self) -> str:
        return f"Empty({self.kind!r})"


# -- key paths -----------------------------------------------------------------------------------------
def _escape(text: str) -> str:
    text = text.replace("%", "%25").replace("/", "%2F")
    if text[0] in _TAGS:
        text = f"%{ord(text[0]):02X}{text[1:]}"
    return text


def _float_bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def _key_component(key, where: str) -> tuple[tuple, str]:
    """(sort key, path component) of a dict key."""
    if isinstance(key, str):
        key = str.__str__(key)
        return (0, key), (_escape(key) if key else "!str:")
    if isinstance(key, bool) or key is None:
        return (2, str(key)), f"!{key}"
    if isinstance(key, int):
        key = int.__index__(key)
        return (1, key), f"#{key}"
    if isinstance(key, float):
        c = f"!float:{_float_bits(key)}"
        return (2, c), c
    if isinstance(key, bytes):
        c = f"!bytes:{key.hex()}"
        return (2, c), c
    raise DigestError(f"cannot digest a dict key of type {type(key).__module__}.{type(key).__qualname__} "
                      f"({key!r}) at {where!r}: dict keys must be str, int, bool, None, float or bytes")


def format_component(kind: str, key) -> str:
    """One path component: kind "dict" (key: a dict key), "list" or "tuple" (key: an index),
    "field" (key: a dataclass field name)."""
    if kind == "dict":
        return _key_component(key, "")[1]
    if kind in ("list", "tuple") and isinstance(key, int) and not isinstance(key, bool):
        return f"[{key}]" if kind == "list" else f"({key})"
    if kind == "field" and isinstance(key, str) and key.isidentifier():
        return f".{key}"
    raise ValueError(f"not a path component: {kind!r}, {key!r}")


def format_path(components) -> str:
    """The path of ``[(kind, key), ...]`` (see ``format_component``); ``[]`` gives the root, ``""``."""
    return "/".join(format_component(kind, key) for kind, key in components)


_UNESCAPE = re.compile(r"%([0-9A-F]{2})")


def _parse_component(c: str) -> tuple[str, Any]:
    tag = c[:1]
    if tag == "#":
        return "dict", int(c[1:])
    if tag == "[" and c.endswith("]"):
        return "list", int(c[1:-1])
    if tag == "(" and c.endswith(")"):
        return "tuple", int(c[1:-1])
    if tag == ".":
        return "field", c[1:]
    if tag == "!":
        special = {"!None": None, "!True": True, "!False": False, "!str:": ""}
        if c in special:
            return "dict", special[c]
        if c.startswith("!float:") and len(c) == 23:
            return "dict", struct.unpack(">d", bytes.fromhex(c[7:]))[0]
        if c.startswith("!bytes:"):
            return "dict", bytes.fromhex(c[7:])
        raise ValueError
    if "%" in _UNESCAPE.sub("", c):
        raise ValueError
    return "dict", _UNESCAPE.sub(lambda m: chr(int(m[1], 16)), c)


def parse_path(path: str) -> list[tuple[str, Any]]:
    """The components ``[(kind, key), ...]`` of a key path written by ``leaves()``; ValueError if
    ``path`` is not in that exact form."""
    if path == "":
        return []
    out = []
    for c in path.split("/"):
        try:
            comp = _parse_component(c)
            ok = format_component(*comp) == c
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"not a key path component: {c!r} in {path!r}")
        out.append(comp)
    return out


# -- the walk ----------------------------------------------------------------------------------------
# The walk and the records run once per leaf of every digest (hundreds per training step), so they
# avoid per-leaf Python overhead: a container's kind is looked up by its exact class (one dict lookup
# after the first instance), str/int key components are cached, and leaves are collected into one list
# (no generator per nesting level).
_LEAF, _NP_SCALAR, _MAPPING, _LIST, _TUPLE, _DATACLASS = range(6)
_KINDS: dict = {}  # exact class -> kind: what the checks below decide depends only on the class
_COMPONENTS: dict = {}  # exact str key -> its path component
_STR_KEY_ORDERS: dict = {}  # a dict's str keys, in its order -> [(component, key)] in the digest's order
_CACHE_MAX = 1 << 16


def _kind(obj) -> int:
    cls = type(obj)
    kind = _KINDS.get(cls)
    if kind is not None:
        return kind
    if isinstance(obj, Empty) or is_tensor(obj) or _is_ndarray(obj) or isinstance(obj, SCALARS):
        kind = _LEAF
    elif _is_numpy_scalar(obj):
        kind = _NP_SCALAR
    elif isinstance(obj, Mapping):
        kind = _MAPPING
    elif isinstance(obj, (list, tuple)):
        kind = _TUPLE if isinstance(obj, tuple) else _LIST
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        kind = _DATACLASS
    else:
        return -1
    _KINDS[cls] = kind
    return kind


def _str_component(key: str) -> str:
    c = _COMPONENTS.get(key)
    if c is None:
        if len(_COMPONENTS) >= _CACHE_MAX:
            _COMPONENTS.clear()
        c = _COMPONENTS[key] = _escape(key) if key else "!str:"
    return c


def _dict_items(obj, path: str) -> list:
    """[(component, key)] of a non-empty mapping, in the digest's order."""
    keys = tuple(obj)
    known = _STR_KEY_ORDERS.get(keys)  # a hit means str keys (no other key type equals a str)
    if known is not None:
        return known
    types = {type(key) for key in keys}
    if types == {str}:
        if len(_STR_KEY_ORDERS) >= _CACHE_MAX:
            _STR_KEY_ORDERS.clear()
        known = _STR_KEY_ORDERS[keys] = [(_str_component(key), key) for key in sorted(keys)]
        return known
    if types == {int}:
        return [(f"#{key}", key) for key in sorted(obj)]
    items = []
    for key in obj:
        order, c = _key_component(key, path)
        items.append((order, c, key))
    items.sort(key=lambda item: item[0])
    if len({c for _, c, _ in items}) != len(items):
        dup = sorted(c for _, c, _ in items)
        dup = next(a for a, b in zip(dup, dup[1:]) if a == b)
        raise DigestError(f"cannot digest a dict with two keys written {dup!r} at {path!r}")
    return [(c, key) for _, c, key in items]


def _collect(obj: Any, path: str, hpath: str, out: list) -> None:
    """Append (path, hashed path, leaf) of every leaf under ``obj``: the hashed path also names each
    dataclass's class."""
    kind = _kind(obj)
    if kind == _LEAF:
        out.append((path, hpath, obj))
        return
    pre, hpre = (path + "/", hpath + "/") if path else ("", hpath + "/" if hpath else "")
    if kind == _MAPPING:
        if not obj:
            out.append((path, hpath, Empty("dict")))
            return
        for c, key in _dict_items(obj, path):
            _collect(obj[key], pre + c, hpre + c, out)
    elif kind == _LIST or kind == _TUPLE:
        if not obj:
            out.append((path, hpath, Empty("tuple" if kind == _TUPLE else "list")))
            return
        fmt = "({})" if kind == _TUPLE else "[{}]"
        for i, item in enumerate(obj):
            c = fmt.format(i)
            _collect(item, pre + c, hpre + c, out)
    elif kind == _NP_SCALAR:
        out.append((path, hpath, sys.modules["numpy"].asarray(obj)))
    elif kind == _DATACLASS:
        cls = type(obj)
        name = f"{cls.__module__}.{cls.__qualname__}".replace("%", "%25").replace("/", "%2F")
        fields = dataclasses.fields(obj)
        if not fields:
            out.append((path, hpath, Empty(f"dataclass:{name}")))
        for f in fields:
            _collect(getattr(obj, f.name), f"{pre}.{f.name}", f"{hpre}.{f.name}:{name}", out)
    else:
        where = f" at {path!r}" if path else ""
        raise DigestError(f"cannot digest a {type(obj).__module__}.{type(obj).__qualname__}{where}: {_LEAF_TYPES}")


def _walk(obj: Any, path: str = "", hpath: str = "") -> list[tuple[str, str, Any]]:
    """[(path, hashed path, leaf)] of every leaf, in the fixed order."""
    out: list = []
    _collect(obj, path, hpath, out)
    return out


def leaves(obj: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(key_path, leaf)`` in the fixed order (module docstring); empty containers are
    ``Empty`` leaves."""
    for path, _, leaf in _walk(obj):
        yield path, leaf


# -- digests -----------------------------------------------------------------------------------------
_U64 = struct.Struct("<Q").pack
_NO_BYTES = _U64(0)
_TENSOR_HEADS: dict = {}  # (dtype, shape) -> (b"T" + the length-prefixed "<dtype> <shape>", dtype is complex)
_PLAIN_TENSOR_TYPES: frozenset = frozenset()  # torch.Tensor and Parameter, once a tensor was seen
_STRIDED = None


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def _lp(data: bytes) -> bytes:
    return _U64(len(data)) + data


def _payload(buf) -> bytes:
    nbytes = memoryview(buf).nbytes
    return _U64(nbytes) + (xxhash.xxh3_128(buf).digest() if nbytes else b"")


def _plain_types() -> frozenset:
    global _PLAIN_TENSOR_TYPES, _STRIDED
    if not _PLAIN_TENSOR_TYPES:
        import torch

        _PLAIN_TENSOR_TYPES, _STRIDED = frozenset((torch.Tensor, torch.nn.Parameter)), torch.strided
    return _PLAIN_TENSOR_TYPES


def _plain_cpu_record(t) -> bytes | None:
    """The record of a contiguous CPU tensor of a plain tensor type, hashed in place (None: take the
    general path). What depends only on the dtype and shape (the header; whether the dtype is quantized
    or complex) is cached, not recomputed for every tensor."""
    if not t.is_cpu or t.layout is not _STRIDED or not t.is_contiguous() or t.is_neg():
        return None
    key = (t.dtype, t.shape)
    cached = _TENSOR_HEADS.get(key)
    if cached is None:
        if t.is_quantized:  # a quantized dtype: its bytes are read the general way
            return None
        if len(_TENSOR_HEADS) >= _CACHE_MAX:
            _TENSOR_HEADS.clear()
        cached = _TENSOR_HEADS[key] = (b"T" + _lp(f"{str(t.dtype)[6:]} {tuple(t.shape)}".encode()),
                                       t.dtype.is_complex)
    head, is_complex = cached
    if is_complex and t.is_conj():  # only a complex tensor has a conjugate bit
        return None
    nbytes = t.nbytes
    if not nbytes:
        return head + _NO_BYTES
    return head + _U64(nbytes) + xxhash.xxh3_128((ctypes.c_char * nbytes).from_address(t.data_ptr())).digest()


_F64 = struct.Struct("<d").pack


def _leaf_record(path: str, leaf) -> bytes:
    cls = type(leaf)
    # The exact types first (the common leaves: a parameter index, a step count, a hyperparameter); each
    # record is the one the isinstance chain below gives.
    if cls is int:
        return b"I" + _lp(int.__repr__(leaf).encode())
    if cls is float:
        return b"F" + _F64(leaf)
    plain = cls in _PLAIN_TENSOR_TYPES
    tensor = plain or is_tensor(leaf)
    if plain or (tensor and cls in _plain_types()):
        part = getattr(leaf, "ds_tensor", None)
        if part is not None:  # DeepSpeed ZeRO-3: outside forward the parameter is empty; its data is this partition
            leaf = part
        record = _plain_cpu_record(leaf)
        if record is not None:
            return record
    if isinstance(leaf, Empty):
        return b"E" + _lp(_utf8(leaf.kind))
    if tensor and leaf.device.type not in ("cpu", "meta"):
        # On an accelerator: reduce on the device and copy 16 bytes, never the tensor (device_digest.py).
        from harness.probe.device_digest import word_sums

        s_a, s_b = word_sums(leaf)
        nbytes = leaf.numel() * leaf.element_size()
        return b"T" + _lp(f"{str(leaf.dtype)[6:]} {tuple(leaf.shape)}".encode()) + b"D" + \
            struct.pack("<QQQ", nbytes, s_a, s_b)
    if tensor:
        try:
            data = tensor_bytes(leaf)
        except TensorError as e:
            raise DigestError(f"cannot digest the tensor at {path!r}: {e}") from None
        return b"T" + _lp(f"{str(leaf.dtype)[6:]} {tuple(leaf.shape)}".encode()) + _payload(data)
    if _is_ndarray(leaf):
        if leaf.dtype.hasobject:
            raise DigestError(f"cannot digest a numpy array of dtype object at {path!r}")
        np = sys.modules["numpy"]
        data = np.ascontiguousarray(leaf).reshape(-1).view(np.uint8)
        return b"A" + _lp(f"{leaf.dtype.str} {leaf.shape}".encode()) + _payload(data)
    if leaf is None:
        return b"N"
    if isinstance(leaf, bool):
        return b"B\x01" if leaf else b"B\x00"
    if isinstance(leaf, int):
        return b"I" + _lp(int.__repr__(leaf).encode())
    if isinstance(leaf, float):
        return b"F" + struct.pack("<d", leaf)
    if isinstance(leaf, str):
        return b"S" + _lp(_utf8(leaf))
    if isinstance(leaf, bytes):
        return b"Y" + _lp(leaf)
    raise DigestError(f"cannot digest a {type(leaf).__qualname__} at {path!r}: {_LEAF_TYPES}")


_PATH_PREFIXES: dict = {}  # hashed path -> its length-prefixed UTF-8 (the same paths recur every step)


def _record(path: str, hpath: str, leaf) -> bytes:
    prefix = _PATH_PREFIXES.get(hpath)
    if prefix is None:
        if len(_PATH_PREFIXES) >= _CACHE_MAX:
            _PATH_PREFIXES.clear()
        prefix = _PATH_PREFIXES[hpath] = _lp(_utf8(hpath))
    return prefix + _leaf_record(path, leaf)


def digest(obj: Any) -> str:
    """xxh3-128 hex digest of a tensor or a nested structure of tensors and scalars (module docstring)."""
    # Hashing the records joined is hashing them one after the other (xxh3 streams), with one call.
    return xxhash.xxh3_128(b"".join([_record(path, hpath, leaf) for path, hpath, leaf in _walk(obj)])).hexdigest()


_ROOT_PATH = _lp(b"")


def tensor_digest(t) -> str:
    """``digest(t)`` of a tensor."""
    return xxhash.xxh3_128(_ROOT_PATH + _leaf_record("", t)).hexdigest()


def combine(digests: Mapping[str, str]) -> str:
    """One digest over named digests (in sorted name order), without rehashing the data."""
    return xxhash.xxh3_128("".join([f"{name}\0{digests[name]}\0" for name in sorted(digests)]).encode()).hexdigest()
