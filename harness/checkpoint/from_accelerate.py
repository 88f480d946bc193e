"""Read a folder written by HF Accelerate's `save_state` and convert it to the native format.

Accelerate pickles the optimizer, scheduler, scaler, RNG states and custom objects
(`optimizer.bin`, `random_states_0.pkl`, ...): unpickling them can execute arbitrary code. So this
module refuses unless the caller opts in with `allow_unsafe_pickle=True` (`harness convert
--allow-unsafe-pickle`), for folders it trusts. The native copy it writes has no pickle at all.

What Accelerate does not save cannot be converted: the data loader position (its `sampler.bin`
branch is dead code and the epoch is never saved), registered generators. A converted checkpoint
marks the data position as unknown; loading it leaves registered data loaders where they are,
with a warning.
"""

from __future__ import annotations

import glob
import os
import re
import warnings

import torch

from . import layout, storage, tree
from .errors import NotACheckpointError, UnsafeCheckpointError
from .manifest import rank_dir

_NUMBERED = re.compile(r"^(?P<stem>[a-z_]+?)(?:_(?P<i>\d+))?\.(?P<ext>bin|pkl|pt|safetensors)$")


def is_accelerate_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "random_states_0.pkl")) or (
        os.path.isfile(os.path.join(path, "optimizer.bin")) and not os.path.isfile(os.path.join(path, "manifest.json")))


def _numbered(src: str, stem: str, ext: str) -> list[str]:
    """`stem.ext`, `stem_1.ext`, `stem_2.ext`, ... in index order (Accelerate's naming)."""
    found = {}
    for name in os.listdir(src):
        m = _NUMBERED.match(name)
        if m and m["stem"] == stem and m["ext"] == ext:
            found[int(m["i"] or 0)] = os.path.join(src, name)
    return [found[i] for i in sorted(found)]


def convert(src: str, dst: str, *, allow_unsafe_pickle: bool = False) -> str:
    """Write a native checkpoint at `dst` (a new folder) from Accelerate's folder `src`; return `dst`."""
    src, dst = os.path.abspath(src), os.path.abspath(dst)
    if not os.path.isdir(src) or not is_accelerate_folder(src):
        raise NotACheckpointError(f"{src}: not an HF Accelerate checkpoint (no random_states_0.pkl / optimizer.bin)")
    pickles = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, "*")) if p.endswith((".bin", ".pkl", ".pt")))
    if not allow_unsafe_pickle:
        raise UnsafeCheckpointError(
            f"{src}: HF Accelerate pickled {', '.join(pickles)}; unpickling can execute arbitrary code. Only for a "
            "folder you trust, pass allow_unsafe_pickle=True (`harness convert --allow-unsafe-pickle`)")
    if os.path.exists(dst) and os.listdir(dst):
        raise FileExistsError(f"{dst} exists and is not empty; convert into a new folder")

    def unpickle(path):  # the one place that unpickles, behind the opt-in above
        return torch.load(path, map_location="cpu", weights_only=False)

    from safetensors.torch import load_file

    weights = [load_file(p) for p in _numbered(src, "model", "safetensors")] or \
              [unpickle(p) for p in _numbered(src, "pytorch_model", "bin")]
    optimizers = [unpickle(p) for p in _numbered(src, "optimizer", "bin")]
    schedulers = [unpickle(p) for p in _numbered(src, "scheduler", "bin")]
    customs = [unpickle(p) for p in _numbered(src, "custom_checkpoint", "pkl")]
    scalers = [unpickle(p) for p in _numbered(src, "scaler", "pt")]
    rngs = [unpickle(p) for p in _numbered(src, "random_states", "pkl")]
    if not rngs:
        raise NotACheckpointError(f"{src}: no random_states_0.pkl; not a complete Accelerate checkpoint")
    for name in ("sampler", "dl_state_dict"):
        if _numbered(src, name, "bin"):
            warnings.warn(f"{src}: {name}*.bin is not converted (Accelerate's data state cannot be mapped); "
                          "the data position of the converted checkpoint is unknown", stacklevel=2)
    step = int(rngs[0].get("step", 0))
    counts = {"models": len(weights), "optimizers": len(optimizers), "schedulers": len(schedulers),
              "dataloaders": None, "scalers": len(scalers), "custom": len(customs), "per_rank_custom": [],
              "generators": 0}
    shared_tensors: dict = {}
    shared = {"step": step, "iteration": None, "counts": counts,
              "schedulers": [tree.encode(s, f"schedulers/{i}", shared_tensors) for i, s in enumerate(schedulers)],
              "custom": {str(i): tree.encode(c, f"custom/{i}", shared_tensors) for i, c in enumerate(customs)}}
    jobs = layout.shared_files(shared, shared_tensors, weights, optimizers, max_shard_size=4 * 10**9)
    for rank, states in enumerate(rngs):
        tensors: dict = {}
        rng = {"python": states["random_state"], "numpy": states["numpy_random_seed"],
               "torch": states["torch_manual_seed"], "cuda": states.get("torch_cuda_manual_seed"), "generators": []}
        doc = {"step": step, "rng": tree.encode(rng, "rng", tensors), "dataloaders": None,
               "scalers": [tree.encode(s, f"scalers/{i}", tensors) for i, s in enumerate(scalers)], "custom": {}}
        jobs += layout.rank_files(rank, doc, tensors)
    staging = storage.prepare_staging(dst, clean_siblings=False)
    for rank in ["shared"] + [rank_dir(r) for r in range(len(rngs))]:
        os.makedirs(os.path.join(staging, rank))
    records = layout.write_files(staging, jobs)
    layout.write_manifest(staging, records, world_size=len(rngs), step=step, iteration=None,
                          contents={**counts, "source": f"accelerate:{src}"})
    if os.path.isdir(dst):
        os.rmdir(dst)  # empty, checked above
    storage.commit(staging, dst)
    return dst
