"""Tensor names in a checkpoint are injective: no two values of the state ever share a name.

Format version 1 joined raw keys with '/', so {"a/b": t} and {"a": {"b": u}}, or int key 1 and
str key "1", got one name and the later tensor silently replaced the earlier one in the tensor
file. These tests pin the exact encoding (`harness.checkpoint.tree`) and the full save/load path.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.checkpoint_jobs import make_job, train
from harness.checkpoint import tree
from harness.checkpoint.files import read_tensors, write_tensors
from harness.checkpoint.files import FileRecord


def _t(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def same(a, b) -> bool:
    """Exact structural equality: same container types, same key types, tensors bit-equal."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (a.dtype == b.dtype and a.shape == b.shape
                and a.contiguous().view(torch.uint8).numpy().tobytes() == b.contiguous().view(torch.uint8).numpy().tobytes())
    if isinstance(a, dict):
        return (len(a) == len(b) and all(type(k1) is type(k2) and k1 == k2 for k1, k2 in zip(a, b))
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def roundtrip(value, prefix="x"):
    """encode, JSON, safetensors write + verified read, decode: what a checkpoint does."""
    tensors: dict = {}
    doc = json.loads(json.dumps(tree.encode(value, prefix, tensors)))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        size, digest = write_tensors(path, tensors)
        loaded, _ = read_tensors(path, FileRecord("t.safetensors", size, digest))
        return tensors, tree.decode(doc, {k: v.clone() for k, v in loaded.items()})


# Values whose tensors collided under the version-1 naming (the later one overwrote the earlier).
COLLISIONS = {
    "slash_in_key_vs_nested_dict": lambda: {"a/b": _t(1.0), "a": {"b": _t(2.0)}},
    "int_key_vs_str_key": lambda: {1: _t(1.0), "1": _t(2.0)},
    "list_index_vs_str_key": lambda: {"l": [_t(1.0)], "l/0": _t(2.0)},
    "list_index_vs_dict_key_0": lambda: {0: [_t(1.0)], "0": {"0": _t(2.0)}},
    "tuple_index_vs_slash_key": lambda: {"p": (_t(1.0),), "p/0": _t(2.0)},
    "bytes_key_vs_str_key": lambda: {b"k": _t(1.0), "key0": _t(2.0), "0": b"\x01"},
}


@pytest.mark.parametrize("name", sorted(COLLISIONS))
def test_colliding_keys_get_distinct_names_and_roundtrip(name):
    value = COLLISIONS[name]()
    tensors, back = roundtrip(value)
    leaves = _tensor_leaves(value)
    assert len(tensors) == leaves, f"{name}: {leaves} tensors in the state, {len(tensors)} names: {sorted(tensors)}"
    assert same(back, value)


@pytest.mark.parametrize("key", ["#1", "@0", "%23", "%", "a%2Fb", "", "@0:key", "#0"])
def test_tag_characters_in_str_keys_are_escaped(key):
    """A str key that looks like a tagged component gets a name of its own."""
    value = {key: _t(1.0), 0: _t(2.0), 1: [_t(3.0)], (None,): _t(4.0), b"z": _t(5.0)}
    tensors, back = roundtrip(value)
    assert len(tensors) == _tensor_leaves(value) == 6 and same(back, value)


def test_names_are_readable_and_tagged():
    tensors: dict = {}
    tree.encode({"state": {0: {"exp_avg": _t(1.0)}}, "a/b%": [_t(2.0)], "#x": _t(3.0), 1.5: _t(4.0)}, "opt", tensors)
    assert sorted(tensors) == ["opt/#x".replace("#", "%23"), "opt/@3", "opt/a%2Fb%25/#0", "opt/state/#0/exp_avg"]


def test_encoding_the_same_name_twice_is_refused():
    tensors: dict = {}
    tree.encode({"w": _t(1.0)}, "custom/0", tensors)
    with pytest.raises(TypeError, match=r"custom/0/w: two values of the state would be saved under this one tensor name"):
        tree.encode({"w": _t(2.0)}, "custom/0", tensors)
    assert torch.equal(tensors["custom/0/w"], _t(1.0))  # nothing was overwritten


# -- property: encode/decode is exact and loses no tensor -------------------------------------------------

# A small pool of keys makes the near-collisions of version 1 frequent; random text covers the rest.
_str_keys = st.sampled_from(["a", "0", "1", "a/b", "a/0", "0/0", "1/0", "#0", "@0", "@0:key", "%", "%2F", "%23",
                             "key0"]) | st.text(alphabet="ab01/%#@:", max_size=4)
_int_keys = st.integers(0, 1) | st.integers(-3, 12)
# Few keys whose version-1 names overlap ("0/1" vs 0 -> [_, x] vs "0" -> {"1": x}): most collide there.
_dense_keys = st.sampled_from([0, 1, "0", "1", "0/0", "0/1", "1/0", "a", "a/0"])
_other_keys = st.none() | st.booleans() | st.floats(allow_nan=False, width=32) | st.binary(max_size=2) \
    | st.tuples(_int_keys, _str_keys) | st.tuples(st.binary(max_size=2))

_tensors = st.builds(
    lambda values, dtype: torch.tensor(values, dtype=torch.float64).to(dtype),
    st.lists(st.integers(-1000, 1000).map(float) | st.floats(allow_nan=False, allow_infinity=False, width=32),
             max_size=3),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bfloat16, torch.int8]))
_leaves = _tensors | _tensors | st.none() | st.integers(-5, 5) | _str_keys | st.binary(max_size=3) \
    | st.builds(lambda a: np.asarray(a, dtype=np.int32), st.lists(st.integers(-9, 9), max_size=3))


def _dicts(inner):
    return (st.dictionaries(_dense_keys, inner, min_size=1, max_size=4)
            | st.dictionaries(_str_keys, inner, max_size=5)
            | st.dictionaries(_int_keys, inner, max_size=4)
            | st.dictionaries(_int_keys | _str_keys, inner, max_size=6)
            | st.dictionaries(_int_keys | _str_keys | _other_keys, inner, max_size=6))


_states = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                       | st.tuples(inner) | _dicts(inner) | st.dictionaries(_dense_keys, inner, min_size=2, max_size=5),
                       max_leaves=25)


def _tensor_leaves(obj) -> int:
    """How many entries of the flat tensor dict `obj` needs: tensors, arrays and bytes, keys included."""
    if isinstance(obj, (torch.Tensor, np.ndarray, bytes, bytearray)):
        return 1
    if isinstance(obj, dict):
        return sum(_tensor_leaves(k) + _tensor_leaves(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_leaves(v) for v in obj)
    return 0


def _exact(a, b) -> bool:
    """`same`, with numpy arrays and bytes compared by type and raw bytes too."""
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return (type(b) is dict and len(a) == len(b)
                and all(type(k1) is type(k2) and _exact(k1, k2) for k1, k2 in zip(a, b))
                and all(_exact(v1, v2) for v1, v2 in zip(a.values(), b.values())))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_exact(x, y) for x, y in zip(a, b))
    return same(a, b)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_states)
def test_property_encode_decode_is_exact_and_injective(value):
    tensors, back = roundtrip(value)
    assert len(tensors) == _tensor_leaves(value), f"names: {sorted(tensors)}"
    assert _exact(back, value)


# -- the full checkpointer ----------------------------------------------------------------------------------

class Colliding:
    """A custom object whose state_dict has every kind of key that collided under version 1."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.state = {k: v for name in sorted(COLLISIONS) for k, v in COLLISIONS[name]().items()}
        self.state.update({"a/b": torch.randn(3, generator=g), "a": {"b": torch.randn(3, generator=g)},
                           1: torch.randn(2, generator=g), "1": torch.randn(2, generator=g),
                           "l": [torch.randn(4, generator=g)], "l/0": torch.randn(4, generator=g)})

    def state_dict(self):
        return self.state

    def load_state_dict(self, sd):
        self.state = sd


@pytest.mark.parametrize("per_rank", [False, True])
def test_checkpointer_roundtrips_colliding_keys(tmp_path, per_rank):
    job = make_job(tmp_path)
    train(job, 2)
    saved = Colliding(seed=1)
    job[0].register_for_checkpointing(saved, per_rank=per_rank)
    path = job[0].save_state()

    again = make_job(tmp_path)
    loaded = Colliding(seed=2)  # different values: only a faithful load makes them equal
    again[0].register_for_checkpointing(loaded, per_rank=per_rank)
    assert again[0].load_state(path) == path
    assert same(loaded.state, saved.state)
