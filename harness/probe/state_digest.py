"""Digests of training state: a model's tensors, an optimizer's state (per entry), the RNG streams.

Built from the records of ``harness.probe.digest`` (its walk and leaf records, imported below), so a
per-entry digest here and ``digest()`` of the whole state_dict hash the very same bytes.

Optimizer detail (``optimizer_record``)
---------------------------------------
``{"digest": ..., "groups": [...], "state": {...}}``: ``digest`` is ``digest(optimizer.state_dict())``;
``groups[i]`` maps the key path, relative to param group *i*, of each hyperparameter leaf (every key
but ``params``) to its exact JSON (``lr``, ``betas/(0)``); a tensor or array hyperparameter becomes
``{"dtype", "shape", "hex"}`` (its raw bytes; dtype: torch's name, ``float32``, or numpy's
``dtype.str``) when it holds at most 64 bytes, else ``{"dtype", "shape", "digest"}``, plus ``"value"`` (the ``json_leaf`` of its one element) when it has exactly
one real element. ``state`` maps ``"<param> <state key>"`` (``"0.weight exp_avg"``) to the digest of
that entry's records as they are in ``digest`` (paths from the state_dict's root): ``<param>`` is
the parameter's name in ``unwrap_model(model).named_parameters()`` (matched by identity through the
live ``optimizer.param_groups``), else the state key's path component (``#3``, or an FQN when the
state_dict is keyed by names); ``<state key>`` is the path component of the key in that
parameter's state. A parameter whose state is not a non-empty dict has one entry, ``"<param>"``.

torch is imported lazily.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Mapping

import xxhash

from harness.probe.digest import (_KINDS, _LEAF, _MAPPING, _dict_items, _is_ndarray, _key_component, _kind, _record,
                                  _walk, combine, digest, leaves, tensor_digest)
from harness.probe.json_leaf import json_leaf
from harness.tensors import is_tensor, plain_tensor, tensor_bytes, unwrap_model

__all__ = ["model_tensors", "params_digests", "NamedParams", "optimizer_record", "optimizer_digest",
           "optimizer_state_dict", "model_state_dict", "loose_state_tensors", "rng_digests", "json_hyper"]


def _check_deepspeed() -> None:
    """ZeRO-3 parameters are told and read by DeepSpeed's ``ds_tensor`` (``_leaf_record``): where deepspeed is
    imported, check that it still has it (harness.private_apis; cached after the first call)."""
    if "deepspeed" in sys.modules:
        from harness import private_apis

        private_apis.require("deepspeed.zero3")


def model_tensors(model, named_params=None) -> dict:
    """Parameters and buffers of the unwrapped model, by name (tied tensors appear once).
    ``named_params``: the model's ``named_parameters()``, when the caller has them already."""
    _check_deepspeed()
    model = unwrap_model(model)
    tensors = dict(model.named_parameters() if named_params is None else named_params)
    tensors.update(model.named_buffers())
    return tensors


def params_digests(model, named_params=None) -> tuple[str, dict]:
    per_tensor = {name: tensor_digest(t) for name, t in model_tensors(model, named_params).items()}
    return combine(per_tensor), per_tensor


class NamedParams:
    """A model's ``named_parameters()``, listed once and handed to several digests of one step."""

    def __init__(self, named: list):
        self._named = named

    def named_parameters(self):
        return iter(self._named)


def json_hyper(leaf):
    """A hyperparameter leaf as exact JSON; a tensor or array by dtype, shape and bytes or digest."""
    if is_tensor(leaf):
        t = plain_tensor(leaf)
        out = {"dtype": str(t.dtype)[6:], "shape": list(t.shape)}
        if t.numel() * t.element_size() <= 64:
            out["hex"] = bytes(tensor_bytes(t)).hex()
        else:
            out["digest"] = tensor_digest(t)
        if t.numel() == 1 and not t.is_complex():
            out["value"] = json_leaf(t.reshape(-1)[0].item())
        return out
    if _is_ndarray(leaf):
        out = {"dtype": leaf.dtype.str, "shape": list(leaf.shape)}
        if leaf.nbytes <= 64:
            out["hex"] = leaf.tobytes().hex()
        else:
            out["digest"] = digest(leaf)
        if leaf.size == 1 and leaf.dtype.kind in "biuf":
            out["value"] = json_leaf(leaf.reshape(-1)[0].item())
        return out
    return json_leaf(leaf)


_INT_LISTS: dict = {}  # (path, the ints) -> their records: a param group's "params", the same every step


def _records_under(value, path: str) -> list:
    """The records of the leaves under ``value`` at ``path`` (no dataclass above it)."""
    if type(value) is list and value and all(type(v) is int for v in value):
        key = (path, tuple(value))
        recs = _INT_LISTS.get(key)
        if recs is None:
            if len(_INT_LISTS) >= 1024:
                _INT_LISTS.clear()
            recs = _INT_LISTS[key] = [_record(p, h, leaf) for p, h, leaf in _walk(value, path, path)]
        return recs
    return [_record(p, h, leaf) for p, h, leaf in _walk(value, path, path)]


def optimizer_record(optimizer, model=None) -> dict:
    """``{"digest", "groups", "state"}`` of an optimizer (module docstring), from one walk of its
    state_dict: each tensor's bytes are read once."""
    sd = optimizer_state_dict(optimizer)
    if not isinstance(sd, Mapping):
        return {"digest": digest(sd), "groups": [], "state": {}}
    sd_groups = sd.get("param_groups")
    sd_groups = sd_groups if isinstance(sd_groups, (list, tuple)) else []
    sd_state = sd.get("state")
    sd_state = sd_state if isinstance(sd_state, Mapping) else {}

    groups = []
    for group in sd_groups:
        if isinstance(group, Mapping):
            rest = {k: v for k, v in group.items() if k != "params"}
            groups.append({path: json_hyper(leaf) for path, leaf in leaves(rest)} if rest else {})
        else:
            groups.append({path: json_hyper(leaf) for path, leaf in leaves(group)})

    names = {}
    if model is not None:
        names = {id(p): name for name, p in unwrap_model(model).named_parameters()}
    param_of = {}
    for group, live in zip(sd_groups, getattr(optimizer, "param_groups", None) or []):
        if isinstance(group, Mapping) and isinstance(live, Mapping):
            for key, p in zip(group.get("params") or (), live.get("params") or ()):
                try:
                    param_of[key] = p
                except TypeError:  # an unhashable key
                    pass
    label = {}  # path component of a state key -> "<param>", and whether its state is per state key
    for key, value in sd_state.items():
        c = f"#{key}" if type(key) is int else _key_component(key, "state")[1]
        p = param_of.get(key) if isinstance(key, (int, str)) else None
        label[c] = (names.get(id(p), c) if p is not None else c), isinstance(value, Mapping) and bool(value)

    records: list = []
    entries: dict = {}  # entry -> its records
    if _kind(sd) == _MAPPING and sd:
        # The walk of digest(sd), one level at a time, so that each entry's records come without
        # parsing their paths (no dataclass above these levels: the hashed paths are the paths).
        for c, key in _dict_items(sd, ""):
            value = sd[key]
            if c == "param_groups" and type(value) is list and value:
                for i, group in enumerate(value):
                    gpath = f"param_groups/[{i}]"
                    if type(group) is not dict or not group:
                        records += [_record(p, h, leaf) for p, h, leaf in _walk(group, gpath, gpath)]
                        continue
                    for gc, gkey in _dict_items(group, gpath):
                        records += _records_under(group[gkey], f"{gpath}/{gc}")
                continue
            if c != "state" or _kind(value) != _MAPPING or not value:
                records += [_record(p, h, leaf) for p, h, leaf in _walk(value, c, c)]
                continue
            for sc, skey in _dict_items(value, "state"):
                name, per_key = label[sc]
                sub, spath = value[skey], "state/" + sc
                if per_key and _kind(sub) == _MAPPING:
                    for kc, kkey in _dict_items(sub, spath):
                        kpath, leaf = f"{spath}/{kc}", sub[kkey]
                        if _KINDS.get(type(leaf)) == _LEAF:  # a tensor or a number: Adam's moments, its step
                            rec = _record(kpath, kpath, leaf)
                            records.append(rec)
                            entries.setdefault(f"{name} {kc}", []).append(rec)
                            continue
                        recs = [_record(p, h, leaf) for p, h, leaf in _walk(leaf, kpath, kpath)]
                        records += recs
                        entries.setdefault(f"{name} {kc}", []).extend(recs)
                else:
                    recs = [_record(p, h, leaf) for p, h, leaf in _walk(sub, spath, spath)]
                    records += recs
                    entries.setdefault(name, []).extend(recs)
    else:
        records = [_record(p, h, leaf) for p, h, leaf in _walk(sd)]
    return {"digest": xxhash.xxh3_128(b"".join(records)).hexdigest(), "groups": groups,
            "state": {entry: xxhash.xxh3_128(recs[0] if len(recs) == 1 else b"".join(recs)).hexdigest()
                      for entry, recs in entries.items()}}


def optimizer_state_dict(optimizer):
    """``optimizer.state_dict()``, or torch's packing of it when the optimizer's state holds tensors that its
    param_groups no longer list, on which ``state_dict()`` raises KeyError: DeepSpeed ZeRO-3 puts each
    sub-group's flat fp32 partition into the torch optimizer's param_groups for its step only. Such a
    tensor is numbered after the listed ones, in the state's (insertion) order."""
    try:
        return optimizer.state_dict()
    except KeyError:
        groups, state = getattr(optimizer, "param_groups", None), getattr(optimizer, "state", None)
        if not isinstance(groups, list) or not isinstance(state, Mapping):
            raise
    index: dict = {}
    packed = []
    for group in groups:
        g = {k: v for k, v in group.items() if k != "params"}
        g["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
        packed.append(g)
    return {"state": {index.setdefault(id(p), len(index)) if is_tensor(p) else p: v for p, v in state.items()},
            "param_groups": packed}


def model_state_dict(model) -> dict:
    """``unwrap_model(model).state_dict()``, with a DeepSpeed ZeRO-3 parameter (empty outside forward) given as
    this rank's partition of it."""
    _check_deepspeed()
    model = unwrap_model(model)
    try:
        zero3 = any(getattr(p, "ds_tensor", None) is not None for p in model.parameters())
    except (AttributeError, TypeError):  # a duck-typed model: its state_dict() is all there is
        zero3 = False
    if not zero3:  # state_dict(keep_vars=...) is not every model's signature (a wrapper's own state_dict)
        return model.state_dict()
    out = {}
    for key, value in model.state_dict(keep_vars=True).items():
        part = getattr(value, "ds_tensor", None)
        out[key] = (value if part is None else part).detach() if is_tensor(value) else value
    return out


def loose_state_tensors(optimizer) -> list:
    """Tensors that key the optimizer's state but are in none of its param_groups (DeepSpeed ZeRO-3's flat
    fp32 partitions, between steps): the weights the optimizer steps, in the state's order."""
    listed = {id(p) for g in getattr(optimizer, "param_groups", None) or () for p in g.get("params", ())}
    state = getattr(optimizer, "state", None)
    return [p for p in (state if isinstance(state, Mapping) else ()) if is_tensor(p) and id(p) not in listed]


def optimizer_digest(optimizer) -> str:
    """``digest(optimizer.state_dict())``, the same as ``optimizer_record(optimizer)["digest"]``."""
    return digest(optimizer_state_dict(optimizer))


_MT_WORDS: dict = {}  # number of words of python's Mersenne Twister state -> its packer


def rng_digests() -> dict:
    """Digests of the python, numpy (legacy global), torch CPU and CUDA RNG states."""
    import random

    out: dict = {"python": None, "numpy": None, "torch": None, "cuda": None}
    version, words, gauss = random.getstate()
    h = xxhash.xxh3_128(f"{version}\0{gauss!r}\0".encode())
    packer = _MT_WORDS.get(len(words))
    if packer is None:
        packer = _MT_WORDS[len(words)] = struct.Struct(f"<{len(words)}I")
    h.update(packer.pack(*words))
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
