"""Every private API of another package that the harness relies on, in one list, with a cheap check.

"Private": a name starting with ``_`` (``DistributedDataParallel._has_rebuilt_buckets``), or an
undocumented internal (DeepSpeed's ``ds_tensor``, its ``ds_to_universal`` script used as a library).
Such a name can vanish in any release, and the harness would then fail deep inside a training job
with an AttributeError, or worse, quietly do less. So each use is listed here (``APIS``: the object
path, what it is for, the modules that use it) with the versions it is tested with (``TESTED``),
and each user calls ``require(group)`` before it relies on its group: a missing API raises
``PrivateAPIError`` naming the API, the installed version of its package and the tested ones.

When the checks run: the torch groups when the module that uses them is imported or first patches
torch (hasattr on classes and a scan of a class's own code: well under a millisecond, no process
group); the DeepSpeed and Hypothesis groups only where they are used (loading a universal checkpoint;
digesting or saving a model while deepspeed is imported; seeding Hypothesis), so importing
``harness`` never imports them. An entry with a ``fallback`` is listed and tested but never raises:
its user still works without it, doing less (the fallback says what).
Importing this module imports nothing beyond the standard library.

How an entry is checked (``how``):

- ``attr``: ``hasattr(owner, name)`` (a method, a class attribute, a module attribute);
- ``code``: an instance attribute (set in ``__init__``, not on the class): some function defined in
  the owner class's own body (nested functions, properties included) names it, as an attribute or a
  string. That the class's code still names it is what can be checked without building an instance.

Adding a use of a private API: add its entry here (``tests/harness/test_private_apis.py`` checks that
every entry exists in the installed versions) and call ``require`` with its group where it is used.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass

__all__ = ["PrivateAPI", "PrivateAPIError", "APIS", "TESTED", "GROUPS", "require", "missing", "installed_version"]

#: The versions the tests have run with. torch 2.13.0: the whole suite (ci/constraints.txt pins it);
#: 2.14.1: these checks and the checkpoint, probe, oracle and world-size tests, by hand (the rest in the
#: CI workflow's matrix, ci/github-actions.yml). The torch range in pyproject.toml claims only these.
TESTED = {
    "torch": ("2.13.0", "2.14.1"),
    "deepspeed": ("0.19.8",),
    "hypothesis": ("6.170.27",),
    "numpy": ("2.4.6",),
    "python": ("3.11",),
}


@dataclass(frozen=True)
class PrivateAPI:
    group: str  # what one require() call checks
    package: str  # the distribution that provides it (a key of TESTED)
    owner: str  # "module:Qualified.Name" of the object that has it, or "module" for a module attribute
    name: str
    how: str  # "attr" or "code" (module docstring)
    used_for: str
    used_in: tuple[str, ...]  # the harness modules that use it
    fallback: str | None = None  # what the user does without it; None: it cannot work without it

    @property
    def path(self) -> str:
        return f"{self.owner.replace(':', '.')}.{self.name}"


_DDP = "torch.nn.parallel.distributed:DistributedDataParallel"
_REDUCTION = ("harness.checkpoint.reduction",)

APIS: tuple[PrivateAPI, ...] = (
    # -- DDP's reducer: pinning the bucket layout ------------------------------------------------------
    PrivateAPI("torch.ddp", "torch", "torch._C._distributed_c10d:Reducer", "_push_all_rebuilt_params", "attr",
               "pin_bucket_layout: list the parameters in order for DDP's one bucket rebuild (what DDP's own "
               "Join hook calls)", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_has_rebuilt_buckets", "code",
               "pin_bucket_layout: refuse once DDP has rebuilt its buckets", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_lazy_init_ran", "code",
               "pin_bucket_layout: refuse after the model's first forward (the push would be a no-op or "
               "list the parameters twice)", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_comm_hooks", "code",
               "install('rank_ordered'): see whether a comm hook is registered already (DDP allows one)",
               _REDUCTION),
    PrivateAPI("torch.ddp", "torch", "torch._C._distributed_c10d:Reducer", "_rebuild_buckets", "attr",
               "bucket_layout_state / restore_bucket_layout: run DDP's one bucket rebuild now (the call DDP's "
               "forward makes)", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", "torch._C._distributed_c10d:Reducer", "_get_zeros_like_grad_buckets", "attr",
               "bucket_layout: read the buckets' parameters, in bucket order", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", "torch._C._distributed_c10d:Reducer", "_remove_autograd_hooks", "attr",
               "restore_bucket_layout: detach the reducer being replaced from the parameters", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_build_params_for_reducer", "attr",
               "the reducer's parameter list (the indices a recorded layout names)", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_ddp_init_helper", "attr",
               "restore_bucket_layout: build the reducer again over the parameters in the recorded order "
               "(what DDP's __setstate__ runs)", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_build_debug_param_to_name_mapping", "attr",
               "restore_bucket_layout: the new reducer's index -> name map (its error messages)", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_get_ddp_logging_data", "attr",
               "track_bucket_layout: tell a built-in comm hook (logged by name, not in _comm_hooks)", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", _DDP, "_use_python_reducer", "code",
               "track_bucket_layout: the Python reducer has no C++ buckets to restore", _REDUCTION),
    PrivateAPI("torch.ddp", "torch", "torch.distributed", "_register_comm_hook", "attr",
               "restore_bucket_layout: register the model's comm hooks on the new reducer", _REDUCTION),
    # -- DataLoader: the batch each step consumed, and persistent workers -------------------------------
    PrivateAPI("torch.dataloader", "torch", "torch.utils.data.dataloader", "_BaseDataLoaderIter", "attr",
               "auto mode and the probe's evidence: wrap every DataLoader iterator's __next__ to see each batch",
               ("harness.probe.auto", "harness.probe.evidence")),
    PrivateAPI("torch.dataloader", "torch", "torch.utils.data.dataloader:_BaseDataLoaderIter", "__next__", "attr",
               "the method wrapped (above)", ("harness.probe.auto", "harness.probe.evidence")),
    PrivateAPI("torch.dataloader", "torch", "torch.utils.data.dataloader:_BaseDataLoaderIter", "_next_index", "attr",
               "the probe's evidence: the sampler's indices of each batch (the data order, whatever augmentation "
               "the dataset applies)", ("harness.probe.evidence",)),
    PrivateAPI("torch.dataloader", "torch", "torch.utils.data.dataloader:DataLoader", "_iterator", "code",
               "ResumableDataLoader: drop the persistent workers' iterator, whose dataset copies hold old state",
               ("harness.checkpoint.data",)),
    PrivateAPI("torch.dataloader", "torch", "torch.utils.data.dataloader:_MultiProcessingDataLoaderIter",
               "_shutdown_workers", "attr", "ResumableDataLoader: stop those workers before dropping the iterator",
               ("harness.checkpoint.data",)),
    # -- torch.compile and AMP --------------------------------------------------------------------------
    PrivateAPI("torch.compile", "torch", "torch._dynamo.eval_frame:OptimizedModule", "_orig_mod", "code",
               "unwrap_model: the user's module inside a torch.compile wrapper (its state_dict keys)",
               ("harness.tensors",), fallback="the wrapper is not unwrapped: its state_dict keys keep the "
               "wrapper's prefix, in the baseline and the trial alike (harness.tensors imports no other part of "
               "the harness, so it cannot call require)"),
    PrivateAPI("torch.amp", "torch", "torch.amp.grad_scaler:GradScaler", "_growth_tracker", "code",
               "the fp16 scenario records the loss scaler's growth tracker, a key of GradScaler.state_dict()",
               ("harness.scenarios.fp16",)),
    # -- DeepSpeed --------------------------------------------------------------------------------------
    PrivateAPI("deepspeed", "deepspeed", "deepspeed.runtime.engine:DeepSpeedEngine", "_config", "code",
               "load a universal checkpoint: set the engine config's load_universal_checkpoint for one load",
               ("harness.checkpoint.strategy",)),
    PrivateAPI("deepspeed", "deepspeed", "deepspeed.runtime.config:DeepSpeedConfig", "load_universal_checkpoint",
               "code", "the flag set above (DeepSpeed reads it from the config object at load time)",
               ("harness.checkpoint.strategy",)),
    PrivateAPI("deepspeed", "deepspeed", "deepspeed.checkpoint.ds_to_universal", "parse_arguments", "attr",
               "convert a checkpoint to DeepSpeed's universal format in-process (its CLI script, used as a library)",
               ("harness.checkpoint.strategy",)),
    PrivateAPI("deepspeed", "deepspeed", "deepspeed.checkpoint.ds_to_universal", "main", "attr",
               "the conversion itself (above)", ("harness.checkpoint.strategy",)),
    PrivateAPI("deepspeed", "deepspeed", "deepspeed.runtime.engine:DeepSpeedEngine", "checkpoint_engine", "code",
               "hash each file of save_checkpoint as it is written: the engine's TorchCheckpointEngine is wrapped for "
               "one save (harness.checkpoint.hashing_storage.HashingCheckpointEngine)",
               ("harness.checkpoint.strategy", "harness.checkpoint.hashing_storage"),
               fallback="another checkpoint engine is left alone and its files are hashed after the save"),
    PrivateAPI("deepspeed.zero3", "deepspeed", "deepspeed.runtime.zero.partition_parameters:Init", "ds_tensor", "code",
               "ZeRO-3: a parameter's local partition (the parameter itself is empty outside forward); "
               "digested and saved in its place", ("harness.probe.digest",)),
    PrivateAPI("deepspeed.zero3", "deepspeed", "deepspeed.runtime.zero.partition_parameters:Init", "ds_id", "code",
               "ZeRO-3: tell a partitioned parameter (gather it before saving full weights)",
               ("harness.checkpoint.model_files",)),
    PrivateAPI("deepspeed.zero3", "deepspeed", "deepspeed.runtime.zero.stage3:DeepSpeedZeroOptimizer_Stage3",
               "fp32_partitioned_groups_flat", "code",
               "ZeRO-3: the fp32 master partitions the probe digests (the base optimizer holds one sub-group "
               "at a time)", ("harness.scenarios._common",)),
    # -- Hypothesis -------------------------------------------------------------------------------------
    PrivateAPI("hypothesis", "hypothesis", "hypothesis.core", "global_force_seed", "attr",
               "harness fuzz --seed: seed the search and keep the example database (hypothesis.seed and "
               "derandomize turn the database off)", ("harness.fuzz.campaign",)),
    # -- the standard library and numpy: uses with a fallback ------------------------------------------
    PrivateAPI("python", "python", "weakref:finalize", "_registry", "attr",
               "a rank about to _exit skips torch's slow operator-library finalizers",
               ("harness.launch.rank",), fallback="the finalizers run (slower exit)"),
    PrivateAPI("python", "python", "threading", "_shutdown", "attr",
               "a rank ends as the interpreter would: join non-daemon threads before the atexit handlers",
               ("harness.launch.rank",), fallback="threads are not joined"),
    PrivateAPI("python", "python", "atexit", "_run_exitfuncs", "attr",
               "a rank runs its atexit handlers before os._exit", ("harness.launch.rank",)),
    PrivateAPI("numpy", "numpy", "numpy._core", "multiarray", "attr",
               "the pickle reader's allow-list resolves numpy's array reconstructors",
               ("harness.contents.pickles",), fallback="numpy 1's numpy.core.multiarray"),
)

GROUPS = tuple(dict.fromkeys(api.group for api in APIS))


class PrivateAPIError(RuntimeError):
    """An installed package lacks a private API the harness relies on (the message names it and the versions)."""


def installed_version(package: str) -> str:
    if package == "python":
        return sys.version.split()[0]
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _resolve(owner: str):
    module, _, qualname = owner.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


_CODE_NAMES: dict = {}  # id of a class -> (the class, the names its own code uses)


def _code_names(cls) -> set:
    """Every attribute name and string constant in the functions defined in the class's own body."""
    hit = _CODE_NAMES.get(id(cls))
    if hit is not None and hit[0] is cls:
        return hit[1]
    stack = []
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            stack += [f.__code__ for f in (value.fget, value.fset, value.fdel) if hasattr(f, "__code__")]
        elif hasattr(value, "__code__"):
            stack.append(value.__code__)
    names: set = set()
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
            elif isinstance(const, str):
                names.add(const)
    _CODE_NAMES[id(cls)] = (cls, names)
    return names


def _present(api: PrivateAPI) -> str | None:
    """None if the API is there, else why not (one line)."""
    try:
        owner = _resolve(api.owner)
    except Exception as e:  # noqa: BLE001 - an import or attribute error of the owner: say which
        return f"{api.owner.replace(':', '.')} is not there ({type(e).__name__}: {e})"
    if api.how == "attr":
        return None if hasattr(owner, api.name) else f"{api.owner.replace(':', '.')} has no attribute {api.name}"
    if api.how == "code":
        if not isinstance(owner, type):
            return f"{api.owner.replace(':', '.')} is not a class"
        return None if api.name in _code_names(owner) else (
            f"the code of {api.owner.replace(':', '.')} no longer sets or reads {api.name}")
    raise ValueError(f"unknown check {api.how!r} for {api.path}")


def missing(group: str | None = None) -> list[tuple[PrivateAPI, str]]:
    """The APIs of ``group`` (all groups: None) that are absent here, each with why."""
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown private-API group {group!r}; known: {', '.join(GROUPS)}")
    out = []
    for api in APIS:
        if group is None or api.group == group:
            why = _present(api)
            if why is not None:
                out.append((api, why))
    return out


_CHECKED: set = set()  # groups found complete in this process


def require(group: str) -> None:
    """Raise ``PrivateAPIError`` unless every API of ``group`` without a fallback is there. Cached per process."""
    if group in _CHECKED:
        return
    gone = [(api, why) for api, why in missing(group) if api.fallback is None]
    if gone:
        raise PrivateAPIError(_message(gone))
    _CHECKED.add(group)


def _message(gone: list[tuple[PrivateAPI, str]]) -> str:
    lines = ["resume-harness relies on private APIs that the installed packages lack:"]
    for api, why in gone:
        lines.append(f"  - {api.path} ({api.package} {installed_version(api.package)}; "
                     f"tested with {api.package} {', '.join(TESTED[api.package])}): {why}.")
        lines.append(f"    Used for: {api.used_for} (in {', '.join(api.used_in)}).")
    lines.append("Install a tested version (pip install -c ci/constraints.txt -e .), or report the versions above "
                 "as an issue of the resume-harness (harness/private_apis.py lists every such API).")
    return "\n".join(lines)
