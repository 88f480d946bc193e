"""Weights-only model files in the layout Hugging Face libraries read: `save_model` and its loader.

One `model.safetensors` when the weights fit in `max_shard_size`, else `model-00001-of-0000N.safetensors`
shards plus `model.safetensors.index.json` (`{"metadata": {"total_size": ...}, "weight_map": {key: file}}`),
split greedily in state-dict order as `huggingface_hub.split_torch_state_dict_into_shards` does, so
`transformers`, `accelerate.load_checkpoint_in_model` and `safetensors.safe_open` read them as they are.
Unlike `save_state`, this is not a resumable checkpoint (no optimizer, RNG, data position, manifest).

Weights sharded across ranks are gathered first (a collective: every rank calls `save_model`): FSDP2 and
FSDP1 through torch's `get_model_state_dict(full_state_dict=True, cpu_offload=True)`, DeepSpeed ZeRO-3 one
parameter at a time through `deepspeed.zero.GatheredParameters`, so no rank holds more than one full
parameter beyond rank 0's copy. A DeepSpeed engine is saved under its module's keys (no `module.` prefix).

A folder that already holds weights is checked first: the same model's (the same keys and shapes) is replaced and
its stale shards removed afterwards, as transformers and Accelerate do; another model's, or pickled
`pytorch_model*.bin` weights, are refused, so a folder never mixes two models' shards.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings

import torch

from harness.tensors import unwrap_model

from . import files
from .strategy import is_deepspeed_engine, is_fsdp2
from .errors import CorruptCheckpointError, UnsafeCheckpointError

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_PICKLED = re.compile(r"^pytorch_model(-\d{5}-of-\d{5})?\.bin(\.index\.json)?$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(gib|mib|kib|gb|mb|kb|b)?\s*$", re.IGNORECASE)
_UNITS = {"gib": 2**30, "mib": 2**20, "kib": 2**10, "gb": 10**9, "mb": 10**6, "kb": 10**3, "b": 1, None: 1}


def parse_size(size: int | str) -> int:
    """Bytes from `10GB`, `500MB`, `1GiB`, `"1000"` or an int, as Accelerate's `convert_file_size_to_int` reads them
    (a lowercase `b` after a decimal unit means bits: `"8Mb"` is 1,000,000 bytes)."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise ValueError(f"size {size} is negative; use a number of bytes or a string like '5GB', '500MB', '1GiB'")
        return size
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise ValueError(f"size {size!r} is not a valid size: use an integer number of bytes or a string with a unit "
                         "(like '5GB', '500MB', '1.5GiB'; units GB MB KB GiB MiB KiB B)")
    number, unit = match.groups()
    value = int(float(number) * _UNITS[unit.lower() if unit else None])
    if unit and unit.lower() in ("gb", "mb", "kb") and unit.endswith("b"):
        value //= 8  # Accelerate's (and transformers') convention: "Gb" is gigabits
    return value


def shard_names(count: int) -> list[str]:
    if count == 1:
        return [WEIGHTS_NAME]
    return [f"model-{n + 1:05d}-of-{count:05d}.safetensors" for n in range(count)]


def split_into_shards(state_dict: dict[str, torch.Tensor], max_shard_size: int) -> list[dict[str, torch.Tensor]]:
    """Greedy, in order: a tensor larger than `max_shard_size` gets a shard of its own."""
    shards: list[dict] = []
    current: dict = {}
    size = 0
    for key, t in state_dict.items():
        nbytes = t.numel() * t.element_size()
        if nbytes > max_shard_size:
            shards.append({key: t})
            continue
        if current and size + nbytes > max_shard_size:
            shards.append(current)
            current, size = {}, 0
        current[key] = t
        size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def save_model(model: torch.nn.Module, save_directory: str | os.PathLike, max_shard_size: int | str = "10GB",
               safe_serialization: bool = True) -> list[str]:
    """Write `model`'s weights (DDP / torch.compile unwrapped) as safetensors into `save_directory`.

    Accelerate's `Accelerator.save_model` signature. Only global rank 0 writes (replicated weights); returns
    the files written, [] on the other ranks. `safe_serialization=False` is refused with a warning: no pickle.
    """
    limit = parse_size(max_shard_size)
    if not safe_serialization:
        warnings.warn("save_model(safe_serialization=False) ignored: this checkpointer writes only safetensors, never "
                      "pickle", stacklevel=2)
    folder = os.path.abspath(os.fspath(save_directory))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"save_model: {folder} is a file; pass a folder (it is created if missing)")
    state_dict = _full_state_dict(model)
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise TypeError(f"save_model writes tensors only, but the state dict holds non-tensor entries {not_tensors[:8]} "
                        "(module extra state); use save_state, which saves them")
    if _rank() != 0:
        return []
    os.makedirs(folder, exist_ok=True)
    shards = split_into_shards(state_dict, limit)
    names = shard_names(len(shards))
    stale = _check_existing(folder, {k: tuple(v.shape) for k, v in state_dict.items()})
    written = []
    for name, shard in zip(names, shards):
        written.append(_replace(folder, name, lambda p, s=shard: files.write_tensors(p, s, {"format": "pt"})))
    if len(shards) > 1:  # the index last: it names shards that all exist by now
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state_dict.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        written.append(_replace(folder, WEIGHTS_INDEX_NAME, lambda p: files.write_bytes(p, text.encode())))
    for name in sorted(stale - set(names) - ({WEIGHTS_INDEX_NAME} if len(shards) > 1 else set())):
        os.remove(os.path.join(folder, name))
    files.fsync_dir(folder)
    return written


def _is_fsdp1(module) -> bool:
    return type(module).__name__ == "FullyShardedDataParallel"


def _full_state_dict(model: torch.nn.Module) -> dict:
    """The model's full (unsharded) state dict on rank 0, under the user's keys. Collective for sharded models;
    on other ranks it may be empty (FSDP's cpu_offload keeps the gathered copy on rank 0 only)."""
    engine = model if is_deepspeed_engine(model) else None
    target = unwrap_model(engine.module if engine is not None else model)
    if is_fsdp2(target) or _is_fsdp1(target):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(target, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    with_vars = target.state_dict(keep_vars=True)
    if "deepspeed" in sys.modules:  # ZeRO-3 parameters are told by DeepSpeed's ds_id
        from harness import private_apis

        private_apis.require("deepspeed.zero3")
    if not any(hasattr(v, "ds_id") for v in with_vars.values()):
        return target.state_dict()
    # ZeRO-3: a partitioned parameter's local tensor is empty; gather each one in turn, keep it on rank 0
    import deepspeed

    rank, out = _rank(), {}
    for key, value in with_vars.items():
        if hasattr(value, "ds_id"):
            with deepspeed.zero.GatheredParameters([value], modifier_rank=None):
                if rank == 0:
                    out[key] = value.detach().clone().cpu()
        elif rank == 0:
            out[key] = value.detach().cpu() if isinstance(value, torch.Tensor) else value
    return out


def load_checkpoint_in_model(model: torch.nn.Module, checkpoint: str | os.PathLike, strict: bool = False) -> None:
    """Load weights written by `save_model` (or by transformers / Accelerate as safetensors) into `model`.

    `checkpoint`: a folder with `model.safetensors` or `model.safetensors.index.json` and its shards, a
    `.safetensors` file, or an index `.json` file (Accelerate's `load_checkpoint_in_model` accepts the same).
    With `strict=False` (Accelerate's default) missing and unexpected keys are warned about; a shape
    mismatch is always an error. Pickled weights are refused.
    """
    path = os.path.abspath(os.fspath(checkpoint))
    partitioned = any(hasattr(p, "ds_id") for p in unwrap_model(model.module if is_deepspeed_engine(model) else model).parameters())
    if is_deepspeed_engine(model) or partitioned:
        raise TypeError(f"load_checkpoint_in_model({path}): the model is a DeepSpeed engine, whose optimizer keeps "
                        "its own fp32 copy of the weights that loading into the module would not change; load the "
                        "weights into the model before deepspeed.initialize, or resume with load_state")
    state_dict = _read_weights(path)
    target = unwrap_model(model)
    own = target.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}" for k, v in state_dict.items()
                  if k in own and isinstance(own[k], torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise ValueError(f"{path}: shapes do not match the model (a different architecture?): {mismatched[:8]}")
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        what = f"{path}: missing keys {missing[:8]} ({len(missing)}), unexpected keys {unexpected[:8]} ({len(unexpected)})"
        if strict:
            raise ValueError(what + "; pass strict=False to load the keys that match")
        warnings.warn(what, stacklevel=2)
    if is_fsdp2(target) or _is_fsdp1(target):
        # every rank read the full file; torch shards it onto this rank's parameters in place
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(target, state_dict, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    target.load_state_dict(state_dict, strict=False)


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    if os.path.isdir(path):
        names = set(os.listdir(path))
        has_single, has_index = WEIGHTS_NAME in names, WEIGHTS_INDEX_NAME in names
        if has_single and has_index:
            raise ValueError(f"{path}: holds both {WEIGHTS_NAME} and {WEIGHTS_INDEX_NAME}, so which weights are meant is "
                             "ambiguous; remove the stale one (or pass the file to load)")
        if has_single:
            return _read_file(os.path.join(path, WEIGHTS_NAME))
        if has_index:
            return _read_index(os.path.join(path, WEIGHTS_INDEX_NAME))
        pickled = sorted(n for n in names if _PICKLED.match(n))
        if pickled:
            raise UnsafeCheckpointError(f"{path}: holds only pickled weights {pickled}; they are never "
                                              "unpickled here: re-save them as safetensors")
        raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} (not a save_model folder)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    return _read_index(path) if path.endswith(".json") else _read_file(path)


def _read_index(index_path: str) -> dict[str, torch.Tensor]:
    folder = os.path.dirname(index_path)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CorruptCheckpointError(f"{index_path}: not a valid index file ({type(e).__name__}: {e})") from None
    out: dict[str, torch.Tensor] = {}
    for name in sorted(set(weight_map.values())):
        if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
            raise UnsafeCheckpointError(f"{index_path}: shard {name!r} is not a file name in the index's folder")
        tensors = _read_file(os.path.join(folder, name))
        expected = {k for k, v in weight_map.items() if v == name}
        if expected - set(tensors):
            raise CorruptCheckpointError(f"{os.path.join(folder, name)}: lacks {sorted(expected - set(tensors))[:8]}, "
                                               f"which {os.path.basename(index_path)} places there")
        out.update({k: tensors[k] for k in expected})
    return out


def _read_file(path: str) -> dict[str, torch.Tensor]:
    try:
        data = files.map_file(path)
    except FileNotFoundError:
        raise CorruptCheckpointError(f"{path}: missing (named by the index)") from None
    if data[8:9] != b"{":
        files.refuse_pickle(path, data[:4])
    return files.parse_safetensors(path, data)[0]


def _safetensors_shapes(path: str) -> dict[str, tuple]:
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        try:
            if not 0 < n <= files.MAX_HEADER:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
            return {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__"}
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptCheckpointError(f"{path}: not a valid safetensors file ({e}); remove it") from None


def _check_existing(folder: str, shapes: dict[str, tuple]) -> set[str]:
    """The weight files already in `folder` (to remove after the save); raise if they are another model's
    (other tensor names, or the same names with other shapes: another size of the same architecture)."""
    keys = set(shapes)
    names = set(os.listdir(folder))
    pickled = sorted(n for n in names if _PICKLED.match(n))
    if pickled:
        raise FileExistsError(f"save_model: {folder} already holds pickled weights {pickled}; loaders would not know "
                              "which weights are meant. Delete them, or save into another folder")
    existing = {n for n in names if n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) or _SHARD.match(n)}
    if not existing:
        return existing
    old: set[str] = set()
    old_shapes: dict[str, tuple] = {}
    for name in sorted(existing):
        full = os.path.join(folder, name)
        if name == WEIGHTS_INDEX_NAME:
            try:
                with open(full, encoding="utf-8") as f:
                    old |= set(json.load(f)["weight_map"])
            except (OSError, ValueError, KeyError, TypeError):
                raise FileExistsError(f"save_model: {full} is not a valid index; delete it, or save into another "
                                      "folder") from None
        else:
            found = _safetensors_shapes(full)
            old |= set(found)
            old_shapes.update(found)
    if old != keys:
        extra, missing = sorted(old - keys), sorted(keys - old)
        raise FileExistsError(
            f"save_model: {folder} already holds the weights of a different model ({sorted(existing)}: "
            f"{len(extra)} keys this model lacks, e.g. {extra[:3]}; {len(missing)} keys they lack, e.g. {missing[:3]}). "
            "Saving would mix two models' shards: save into another folder, or delete those files first")
    resized = sorted(k for k in keys if k in old_shapes and old_shapes[k] != tuple(shapes[k]))
    if resized:
        k = resized[0]
        raise FileExistsError(
            f"save_model: {folder} already holds the weights of a different model ({sorted(existing)}): "
            f"{len(resized)} tensors have other shapes, e.g. {k} {list(old_shapes[k])} there vs {list(shapes[k])} "
            "here. Save into another folder, or delete those files first")
    return existing


def _replace(folder: str, name: str, write) -> str:
    """Write a file under a temporary name, then rename it over `name`: a reader sees the old file or the new one."""
    final = os.path.join(folder, name)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return final


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
