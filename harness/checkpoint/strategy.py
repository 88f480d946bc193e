"""Strategies: what model and optimizer state a checkpoint holds, and which rank writes which file.

The checkpointer meets the training backends here, in the spirit of DCP's planner/storage split: a
`Strategy` decides *what* is written and *by whom*; `layout`, `files`, `manifest` and `storage`
decide *how* (durable checksummed files, the manifest, the atomic commit). Everything else in a
checkpoint (RNG, data position, schedulers, scalers, custom objects: `state.Registry`) is the same
for every strategy.

    ReplicatedStrategy  DDP or one process: rank 0 writes full model and optimizer state into the
                        replicated layout (`shared/model_i.safetensors`, `shared/optimizer_i.*`).
    FSDPStrategy        FSDP2 (`fully_shard`, DTensor parameters). `"sharded"`: each rank writes
                        its shards with torch.distributed.checkpoint into `dcp/`; `"full"`: the state
                        is gathered on rank 0 and written in the replicated layout (DDP can load it).
                        Both load on another world size (DCP reshards onto the new 1-D mesh).
    DeepSpeedStrategy   a DeepSpeed engine (ZeRO 0-3): the engine's own `save_checkpoint` writes
                        model and optimizer into `deepspeed/<tag>/` (torch.save pickles). On another
                        world size (ZeRO 1-2): converted to DeepSpeed's universal checkpoint, loaded.

`detect()` picks the strategy from the prepared models. Data crosses the boundary frozen
(`StrategyInfo`, `SaveContext`, `NativeFiles`); what a backend writes itself is hashed and listed
in the manifest like any other file, and verified before the backend reads it.
"""

from __future__ import annotations

import os
import shutil
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from harness import probe
from harness.tensors import unwrap_model

from . import files
from .errors import CorruptCheckpointError, IncompatibleCheckpointError, NotACheckpointError
from .files import FileRecord

REPLICATED, FSDP, DEEPSPEED = "replicated", "fsdp", "deepspeed"
DCP_DIR, DEEPSPEED_DIR = "dcp", "deepspeed"  # native subfolders of a checkpoint
DEEPSPEED_TAG = "state"
FSDP_STATE_DICTS = ("sharded", "full")
PICKLE_NOTE = ("its files are torch.save pickles, which the native format otherwise never contains; they are "
               "checksummed in the manifest and verified before the backend unpickles them, so only load "
               "checkpoints you trust")


@dataclass(frozen=True)
class StrategyInfo:
    """What the manifest records about the strategy that saved a checkpoint (`backend`, `strategy`)."""

    name: str  # replicated | fsdp | deepspeed
    layout: str  # replicated (shared/ model + optimizer files) | dcp | deepspeed
    mesh: tuple[int, ...] | None = None  # FSDP: the device mesh's shape; DeepSpeed: (data-parallel size,)
    zero_stage: int | None = None
    tag: str | None = None  # DeepSpeed: the tag folder under deepspeed/

    def to_json(self) -> dict:
        return {"name": self.name, "layout": self.layout, "mesh": None if self.mesh is None else list(self.mesh),
                "zero_stage": self.zero_stage, "tag": self.tag}

    @classmethod
    def from_json(cls, doc: dict | None, backend: str) -> StrategyInfo:
        """From the manifest; a version-1/2 manifest has no `strategy`: replicated."""
        if not doc:
            return cls(backend, REPLICATED)
        mesh = doc.get("mesh")
        stage = doc.get("zero_stage")
        return cls(str(doc["name"]), str(doc["layout"]), None if mesh is None else tuple(int(m) for m in mesh),
                   None if stage is None else int(stage), None if doc.get("tag") is None else str(doc["tag"]))

    def describe(self) -> str:
        if self.name == FSDP:
            how = "sharded state dict through DCP" if self.layout == "dcp" else "full state dict"
            return f"FSDP2 ({how}) on a device mesh of shape {self.mesh}"
        if self.name == DEEPSPEED:
            return f"DeepSpeed ZeRO stage {self.zero_stage} (data-parallel size {self.mesh[0] if self.mesh else '?'})"
        return "replicated (DDP / single process)"


@dataclass(frozen=True)
class SaveContext:
    """One save as a strategy sees it."""

    staging: str
    rank: int
    world_size: int
    step: int
    group: object = None  # the checkpointer's gloo process group (None: one process)


@dataclass(frozen=True)
class NativeFiles:
    """Files a backend wrote itself, as this rank reports them for the manifest."""

    records: tuple[FileRecord, ...] = field(default_factory=tuple)


class Strategy(ABC):
    """The contract between the checkpointer and a training backend.

    Save (collective, on every rank, main thread): `model_weights` (the list save hooks receive),
    `optimizer_states`, then `save_native` (the backend's own files). Load: `check_compatible` and
    `verify_native` on every rank before the ranks agree; after they agree, `load` changes the
    models and optimizers.
    """

    name: str = REPLICATED

    @abstractmethod
    def info(self) -> StrategyInfo:
        """What the manifest records."""

    def model_weights(self, models: Sequence) -> list[dict]:
        """Full model state dicts for the replicated layout (rank 0 writes them); [] when the backend
        writes the weights itself. Save hooks get this list and may pop entries they save themselves."""
        return []

    def optimizer_states(self, optimizers: Sequence, models: Sequence, rank: int) -> list[dict]:
        """Optimizer state dicts for the replicated layout, on rank 0; [] when the backend writes them."""
        return []

    def save_native(self, ctx: SaveContext, models: Sequence, optimizers: Sequence) -> NativeFiles:
        """Let the backend write its own files into a subfolder of `ctx.staging`; hash and fsync the
        files this rank owns. Collective."""
        return NativeFiles()

    def check_compatible(self, path: str, saved: StrategyInfo, saved_world: int, world_size: int) -> None:
        """Raise IncompatibleCheckpointError if this strategy cannot load what `saved` wrote.

        A replicated layout holds full state dicts: any world size loads them (`elastic.py` maps the
        per-rank state)."""
        if saved.layout != REPLICATED:
            raise _incompatible(path, saved, self.info())

    def verify_native(self, path: str, records: list[FileRecord], rank: int, world_size: int,
                      saved: StrategyInfo, models: Sequence) -> None:
        """Check this rank's share of the backend's files against the manifest (before anything reads them)."""

    @abstractmethod
    def load(self, path: str, saved: StrategyInfo, models: Sequence, model_index: Sequence[int],
             weights: list[dict], optimizers: Sequence, optimizer_states: list[dict], group) -> None:
        """Load models (the hook-filtered `models`, at `model_index` in the registry) and optimizers."""


# -- detection ------------------------------------------------------------------------------------


def is_deepspeed_engine(obj) -> bool:
    return all(hasattr(obj, a) for a in ("save_checkpoint", "load_checkpoint", "zero_optimization_stage"))


def is_fsdp2(model) -> bool:
    """A module sharded with `fully_shard` (its parameters are DTensors)."""
    try:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch.distributed unavailable
        return False
    model = unwrap_model(model)
    return isinstance(model, FSDPModule) or any(isinstance(p, DTensor) for p in model.parameters())


def detect(models: Sequence, *, fsdp_state_dict: str = "sharded") -> Strategy:
    """The strategy of the prepared models: DeepSpeed engine, FSDP2, else replicated. Mixing is refused."""
    kinds = [DEEPSPEED if is_deepspeed_engine(m) else FSDP if is_fsdp2(m) else REPLICATED for m in models]
    found = set(kinds)
    if len(found) > 1:
        listing = ", ".join(f"model {i}: {k}" for i, k in enumerate(kinds))
        raise ValueError(f"the prepared models use different strategies ({listing}); one checkpointer handles "
                         "one strategy: prepare models of one kind, or use one Checkpointer per strategy")
    kind = kinds[0] if kinds else REPLICATED
    if kind == DEEPSPEED:
        if len(models) != 1:
            raise ValueError(f"a DeepSpeed checkpoint holds one engine; {len(models)} models are prepared")
        return DeepSpeedStrategy(models[0])
    if kind == FSDP:
        return FSDPStrategy(models, state_dict=fsdp_state_dict)
    return ReplicatedStrategy()


# -- replicated -----------------------------------------------------------------------------------


class ReplicatedStrategy(Strategy):
    """DDP / one process: rank 0 writes full state dicts into the replicated layout; every rank loads them."""

    name = REPLICATED

    def info(self) -> StrategyInfo:
        return StrategyInfo(REPLICATED, REPLICATED)

    def model_weights(self, models):
        return [unwrap_model(m).state_dict() for m in models]

    def optimizer_states(self, optimizers, models, rank):
        return [o.state_dict() for o in optimizers] if rank == 0 else []

    def load(self, path, saved, models, model_index, weights, optimizers, optimizer_states, group):
        from .state import _load_optimizer

        for model, sd in zip(models, weights):
            unwrap_model(model).load_state_dict(sd, strict=True)
        for opt, sd in zip(optimizers, optimizer_states):
            _load_optimizer(opt, sd)


# -- FSDP2 ----------------------------------------------------------------------------------------


def _owner(models: Sequence, opt) -> int:
    """The index of the model whose parameters optimizer `opt` updates."""
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    for i, m in enumerate(models):
        if any(id(p) in ids for p in m.parameters()):
            return i
    raise ValueError("an optimizer updates no parameter of the prepared models; prepare its model too")


def _fqn_to_int(osd: dict) -> dict:
    """A full FQN-keyed optimizer state dict (DCP's) as `torch.optim.Optimizer.state_dict()` lays it out."""
    ids: dict[str, int] = {}
    groups = []
    for g in osd["param_groups"]:
        groups.append({**g, "params": [ids.setdefault(fqn, len(ids)) for fqn in g["params"]]})
    return {"state": {ids[fqn]: v for fqn, v in osd["state"].items()}, "param_groups": groups}


def _int_to_fqn(sd: dict, model, opt) -> dict:
    """The inverse for `opt` (int ids matched to its live parameters by position, then named in `model`)."""
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    fqn: dict = {}
    groups = []
    for sg, live in zip(sd["param_groups"], opt.param_groups):
        for pid, p in zip(sg["params"], live["params"]):
            fqn[pid] = names[id(p)]
        groups.append({**sg, "params": [fqn[pid] for pid in sg["params"]]})
    return {"state": {fqn[k]: v for k, v in sd["state"].items()}, "param_groups": groups}


class FSDPStrategy(Strategy):
    """FSDP2 models. `state_dict="sharded"`: DCP, each rank its shards; `"full"`: gathered on rank 0."""

    name = FSDP

    def __init__(self, models: Sequence, state_dict: str = "sharded") -> None:
        if state_dict not in FSDP_STATE_DICTS:
            raise ValueError(f"fsdp_state_dict must be one of {FSDP_STATE_DICTS}, got {state_dict!r}")
        self.state_dict = state_dict
        self.mesh = None
        from torch.distributed.tensor import DTensor

        for m in models:
            for p in m.parameters():
                if isinstance(p, DTensor):
                    self.mesh = tuple(p.device_mesh.shape)
                    break
            if self.mesh is not None:
                break

    def info(self) -> StrategyInfo:
        return StrategyInfo(FSDP, DCP_DIR if self.state_dict == "sharded" else REPLICATED, self.mesh)

    @staticmethod
    def _options(**kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(**kw)

    def model_weights(self, models):
        if self.state_dict == "sharded":
            return []
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        opts = self._options(full_state_dict=True, cpu_offload=True)  # rank 0 gets the tensors, others {}
        return [get_model_state_dict(m, options=opts) for m in models]

    def optimizer_states(self, optimizers, models, rank):
        if self.state_dict == "sharded":
            return []
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        opts = self._options(full_state_dict=True, cpu_offload=True)
        out = [get_optimizer_state_dict(models[_owner(models, o)], o, options=opts) for o in optimizers]
        return [_fqn_to_int(sd) for sd in out] if rank == 0 else []

    def _dcp_state(self, models, optimizers, model_index=None) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        index = list(range(len(models))) if model_index is None else list(model_index)
        state = {f"model_{i}": get_model_state_dict(m) for i, m in zip(index, models)}
        for j, o in enumerate(optimizers):
            state[f"optimizer_{j}"] = get_optimizer_state_dict(models[_owner(models, o)], o)
        return state

    def save_native(self, ctx, models, optimizers):
        if self.state_dict != "sharded":
            return NativeFiles()
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        from .hashing_storage import HashingFileSystemWriter

        folder = os.path.join(ctx.staging, DCP_DIR)
        os.makedirs(folder, exist_ok=True)
        state = self._dcp_state(models, optimizers)
        probe.point(probe.Point.WRITE, file=f"{DCP_DIR}/")
        writer = HashingFileSystemWriter(folder, sync_files=True)  # checksums taken as DCP writes: no re-read
        try:
            dcp.save(state, storage_writer=writer, process_group=ctx.group)
        except CheckpointException as e:  # as an Exception, so that save_state reports it through its agreement
            raise RuntimeError(f"torch.distributed.checkpoint could not save {DCP_DIR}/: {dcp_failures(e)}") from None
        # `__{r}_*.distcp` are rank r's shards; `.metadata` (a pickle) is the coordinator's, rank 0.
        mine = re.compile(rf"^__{ctx.rank}_\d+\.distcp$")
        return NativeFiles(_hash_owned(ctx.staging, DCP_DIR, lambda name: bool(mine.match(name)) or (
            ctx.rank == 0 and not name.endswith(".distcp")), writer.fs.digests))

    def check_compatible(self, path, saved, saved_world, world_size):
        if saved.layout == DCP_DIR and saved.name == FSDP:
            # DCP reshards a sharded state dict onto another 1-D mesh (any world size); a mesh of more
            # dimensions (HSDP, TP) changing shape is not tested here, so it is refused.
            one_d = saved.mesh is not None and self.mesh is not None and len(saved.mesh) == len(self.mesh) == 1
            if saved.mesh is not None and self.mesh is not None and saved.mesh != self.mesh and not one_d:
                raise IncompatibleCheckpointError(
                    f"{path}: saved by {saved_world} rank(s) on an FSDP2 device mesh of shape {saved.mesh}, loading "
                    f"on {self.mesh} ({world_size} rank(s)): the harness reshards only between 1-D (FSDP) meshes; "
                    "resume on the same mesh")
            return
        if saved.layout != REPLICATED:
            raise _incompatible(path, saved, self.info())

    def verify_native(self, path, records, rank, world_size, saved, models):
        if saved.layout != DCP_DIR:
            return
        from .hashing_storage import VerifiedFiles

        meta = f"{DCP_DIR}/.metadata"
        by_path = {r.path: r for r in records}
        if meta not in by_path:
            raise CorruptCheckpointError(
                f"{path}: the DCP folder {DCP_DIR}/ has no .metadata in the manifest (DCP writes it last: the save "
                "did not finish); this checkpoint cannot be loaded, use an older one")
        # Each rank verifies the shard file it reads itself (`__{rank}_*`, on the same world size) and keeps it
        # mapped for DCP to read from (`load`): one pass over the file. The other files are shared out.
        self._verified = VerifiedFiles()
        self._listed = [os.path.join(path, r.path) for r in records if r.path.startswith(f"{DCP_DIR}/")]
        _verify_share(path, records, rank, world_size, always=(meta,), verified=self._verified,
                      owner=_dcp_owner if saved.mesh == (world_size,) else None)
        _check_dcp_keys(path, os.path.join(path, DCP_DIR), models)

    def load(self, path, saved, models, model_index, weights, optimizers, optimizer_states, group):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        if saved.layout == REPLICATED:  # full state dicts (DDP, or FSDP "full"): every rank shards its copy
            full = self._options(full_state_dict=True)
            for model, sd in zip(models, weights):
                set_model_state_dict(model, sd, options=full)
            all_models = list(models)
            for opt, sd in zip(optimizers, optimizer_states):
                owner = all_models[_owner(all_models, opt)]
                set_optimizer_state_dict(owner, opt, _int_to_fqn(sd, owner, opt), options=full)
                for live, saved_group in zip(opt.param_groups, sd["param_groups"]):  # exact hyperparameters:
                    live.update({k: v for k, v in saved_group.items() if k != "params"})  # tuples stay tuples
            return
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        from .hashing_storage import VerifiedFiles, VerifiedFileSystemReader

        verified = getattr(self, "_verified", None) or VerifiedFiles()
        reader = VerifiedFileSystemReader(os.path.join(path, DCP_DIR), verified, getattr(self, "_listed", None), path)
        state = self._dcp_state(models, optimizers, model_index)
        try:
            dcp.load(state, storage_reader=reader, process_group=group)
        except CheckpointException as e:  # a BaseException: it would pass every `except Exception`
            raise IncompatibleCheckpointError(f"{path}: torch.distributed.checkpoint could not load {DCP_DIR}/ into "
                                              f"the registered models and optimizers: {dcp_failures(e)}") from None
        finally:
            verified.release()
        for i, model in zip(model_index, models):
            set_model_state_dict(model, state[f"model_{i}"])
        for j, opt in enumerate(optimizers):
            set_optimizer_state_dict(models[_owner(models, opt)], opt, state[f"optimizer_{j}"])


def dcp_failures(e) -> str:
    """Each rank's reason in DCP's CheckpointException, one line each (its str() holds whole tracebacks)."""
    failures = getattr(e, "failures", None) or {}
    parts = []
    for r, failure in sorted(failures.items()):
        exc = failure[0] if isinstance(failure, tuple) else failure
        parts.append(f"rank {r}: {type(exc).__name__}: {str(exc).strip()}")
    return "; ".join(parts) or str(e).strip().splitlines()[0]


def _check_dcp_keys(path: str, folder: str, models: Sequence) -> None:
    """Compare the model entries of DCP's (verified) `.metadata` with the registered models."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        meta = FileSystemReader(folder).read_metadata().state_dict_metadata
    except Exception as e:  # noqa: BLE001 - a damaged pickle can raise anything
        raise CorruptCheckpointError(f"{path}: {DCP_DIR}/.metadata cannot be read ({type(e).__name__}: {e})") from None
    for i, m in enumerate(models):
        prefix = f"model_{i}."
        saved = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
        now = unwrap_model(m).state_dict()
        missing = [k for k in now if k not in saved]
        unexpected = [k for k in saved if k not in now]
        mismatched = [f"{k}: checkpoint {tuple(saved[k].size)}, model {tuple(v.shape)}" for k, v in now.items()
                      if k in saved and hasattr(saved[k], "size") and isinstance(v, torch.Tensor)
                      and tuple(saved[k].size) != tuple(v.shape)]
        if missing or unexpected or mismatched:
            parts = [f"{what} {items[:8]}" for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                                               ("shape mismatches", mismatched)) if items]
            raise IncompatibleCheckpointError(f"{path}: model {i} does not match {DCP_DIR}/.metadata (different "
                                              "architecture?): " + "; ".join(parts))


# -- DeepSpeed ------------------------------------------------------------------------------------

_DS_RANK = re.compile(r"(?:^|_)zero_pp_rank_(\d+)_")


class DeepSpeedStrategy(Strategy):
    """A DeepSpeed engine: its own save_checkpoint/load_checkpoint write and read model and optimizer."""

    name = DEEPSPEED

    def __init__(self, engine) -> None:
        self.engine = engine
        self.stage = int(engine.zero_optimization_stage())
        dp = engine.dp_world_size if hasattr(engine, "dp_world_size") else None
        self.mesh = (int(dp),) if dp is not None else None

    def info(self) -> StrategyInfo:
        return StrategyInfo(DEEPSPEED, DEEPSPEED, self.mesh, self.stage, DEEPSPEED_TAG)

    def save_native(self, ctx, models, optimizers):
        folder = os.path.join(ctx.staging, DEEPSPEED_DIR)
        os.makedirs(folder, exist_ok=True)
        probe.point(probe.Point.WRITE, file=f"{DEEPSPEED_DIR}/")
        # save_latest=False: DeepSpeed's own `latest` is written without a barrier and could name a
        # half-written tag; ours is written below, inside the staging folder, committed with the rest.
        # universal_checkpoint_info: what ds_to_universal needs to convert it on another world size.
        from deepspeed.checkpoint.constants import (UNIVERSAL_CHECKPOINT_INFO, UNIVERSAL_CHECKPOINT_VERSION_KEY,
                                                    UNIVERSAL_CHECKPOINT_VERSION_VALUE)

        from .hashing_storage import HashingCheckpointEngine

        # Each torch.save file DeepSpeed writes is hashed right after, from the page cache (hashing_storage.py
        # says why not while writing); whatever it writes otherwise (zero_to_fp32.py, or every file under a
        # checkpoint engine other than torch.save's) is hashed below. All are fsynced at once in _hash_owned.
        inner = getattr(self.engine, "checkpoint_engine", None)
        hashing = HashingCheckpointEngine.wrap(inner)
        if hashing is not None:
            self.engine.checkpoint_engine = hashing
        try:
            self.engine.save_checkpoint(folder, tag=DEEPSPEED_TAG, save_latest=False, client_state={
                UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}})
        finally:
            if hashing is not None:
                self.engine.checkpoint_engine = inner
        extra = []
        if ctx.rank == 0:
            size, digest = files.write_bytes(os.path.join(folder, "latest"), DEEPSPEED_TAG.encode())
            extra.append(FileRecord(f"{DEEPSPEED_DIR}/latest", size, digest))

        def owned(name: str) -> bool:
            m = _DS_RANK.search(name)
            return int(m.group(1)) == ctx.rank if m else (ctx.rank == 0 and name != "latest")

        return NativeFiles(tuple(extra) + _hash_owned(ctx.staging, DEEPSPEED_DIR, owned,
                                                      hashing.digests if hashing is not None else None))

    def check_compatible(self, path, saved, saved_world, world_size):
        if saved_world != world_size and (saved.zero_stage not in UNIVERSAL_STAGES or self.stage != saved.zero_stage):
            probe.point(probe.Point.CANNOT_RESHARD, strategy=DEEPSPEED, saved_world=saved_world, world_size=world_size,
                        reason=f"ZeRO stage {saved.zero_stage} loaded with stage {self.stage}; the harness converts to "
                               f"DeepSpeed's universal checkpoint only for stages {UNIVERSAL_STAGES}, unchanged")
            raise IncompatibleCheckpointError(
                f"{path}: saved by {saved_world} rank(s) ({saved.describe()}), loading on {world_size} "
                f"({self.info().describe()}): the DeepSpeed strategy cannot reshard this: the harness converts a ZeRO "
                f"checkpoint to DeepSpeed's universal checkpoint only for ZeRO stages {UNIVERSAL_STAGES} (the same "
                f"stage on both sides); resume with the same world size ({saved_world}), or convert it yourself "
                f"(python -m deepspeed.checkpoint.ds_to_universal --input_folder "
                f"{os.path.join(path, DEEPSPEED_DIR, saved.tag or DEEPSPEED_TAG)} --output_folder OUT) and load OUT with "
                "the engine config checkpoint.load_universal=true, outside the harness's checkpointer")
        if saved.layout != DEEPSPEED:
            raise _incompatible(path, saved, self.info())
        if saved.zero_stage != self.stage:
            raise IncompatibleCheckpointError(
                f"{path}: saved with DeepSpeed ZeRO stage {saved.zero_stage}, loading with stage {self.stage}; "
                f"configure zero_optimization.stage={saved.zero_stage} to resume from it (the harness does not "
                "convert between ZeRO partitionings)")

    def verify_native(self, path, records, rank, world_size, saved, models):
        tag = saved.tag or DEEPSPEED_TAG
        in_tag = [r for r in records if r.path.startswith(f"{DEEPSPEED_DIR}/{tag}/")]
        if not in_tag:
            raise CorruptCheckpointError(f"{path}: the manifest lists no file of the DeepSpeed tag folder "
                                         f"{DEEPSPEED_DIR}/{tag}/; this checkpoint cannot be loaded")
        own = [r for r in in_tag if (m := _DS_RANK.search(os.path.basename(r.path))) and int(m.group(1)) == rank
               and "optim_states" in r.path]
        resharded = saved.mesh is not None and saved.mesh[0] != world_size  # converted: every file is read on rank 0
        if self.stage > 0 and not own and not resharded:
            raise CorruptCheckpointError(f"{path}: the manifest lists no optimizer file of rank {rank} "
                                         f"(zero_pp_rank_{rank}_*optim_states.pt) in {DEEPSPEED_DIR}/{tag}/")
        _verify_share(path, records, rank, world_size)

    def load(self, path, saved, models, model_index, weights, optimizers, optimizer_states, group):
        if not models:  # a load pre-hook took the engine
            return
        tag = saved.tag or DEEPSPEED_TAG
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if saved.mesh is not None and saved.mesh[0] != world:
            self._load_universal(path, tag, group)
            return
        loaded, _ = self.engine.load_checkpoint(os.path.join(path, DEEPSPEED_DIR), tag=tag,
                                                load_optimizer_states=True, load_lr_scheduler_states=False)
        if loaded is None:
            raise CorruptCheckpointError(f"{path}: DeepSpeed's load_checkpoint could not load tag {tag!r} from "
                                         f"{DEEPSPEED_DIR}/ (see its log above)")


    def _load_universal(self, path: str, tag: str, group) -> None:
        """Another data-parallel size: rank 0 converts the (verified) tag folder into DeepSpeed's universal
        checkpoint in a temporary sibling folder of the checkpoint; every rank loads it, then it is removed."""
        import shutil
        import tempfile

        import torch.distributed as dist

        from harness import private_apis

        private_apis.require("deepspeed")  # on every rank, before any collective: engine._config, ds_to_universal

        multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank = dist.get_rank() if multi else 0
        msg: list = [None, None]  # [universal folder, error]
        if rank == 0:
            try:
                parent = os.path.dirname(os.path.abspath(path))
                clear_stale_universal(parent)
                tmp = tempfile.mkdtemp(prefix=UNIVERSAL_PREFIX, dir=parent)
                msg[0] = os.path.join(tmp, tag)
                _ds_to_universal(os.path.join(path, DEEPSPEED_DIR, tag), msg[0])
            except Exception as e:  # noqa: BLE001 - reported on every rank below
                msg[1] = f"{type(e).__name__}: {e}"
        if multi:
            dist.broadcast_object_list(msg, src=0, group=group)
        out, error = msg
        try:
            if error is not None:
                raise IncompatibleCheckpointError(
                    f"{path}: converting {DEEPSPEED_DIR}/{tag} to DeepSpeed's universal checkpoint (to load it on "
                    f"another world size) failed on rank 0: {error}; a checkpoint saved before the harness recorded "
                    "universal_checkpoint_info cannot be converted: resume with the world size that saved it")
            config = self.engine._config
            config.load_universal_checkpoint = True
            try:
                loaded, _ = self.engine.load_checkpoint(os.path.dirname(out), tag=tag, load_optimizer_states=True,
                                                        load_lr_scheduler_states=False)
            finally:
                config.load_universal_checkpoint = False
            if loaded is None:
                raise CorruptCheckpointError(f"{path}: DeepSpeed could not load the universal checkpoint converted "
                                             f"from {DEEPSPEED_DIR}/{tag} (see its log above)")
        finally:
            if multi:
                dist.barrier(group=group)
            if rank == 0 and out is not None:
                shutil.rmtree(os.path.dirname(out), ignore_errors=True)


UNIVERSAL_STAGES = (1, 2)  # ZeRO stages whose checkpoints the harness converts to DeepSpeed's universal checkpoint


UNIVERSAL_PREFIX = ".harness-universal-"


def clear_stale_universal(parent: str) -> list[str]:
    """Remove conversions left behind in `parent` by a load that was killed mid-conversion (rank 0, before
    converting again). A finished load deletes its own; one job loads from a checkpoint folder at a time."""
    removed = []
    for name in sorted(os.listdir(parent)):
        full = os.path.join(parent, name)
        if name.startswith(UNIVERSAL_PREFIX) and os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
            removed.append(full)
    return removed


def _ds_to_universal(src: str, out: str) -> None:
    """DeepSpeed's ds_to_universal, in this process, without worker processes."""
    import contextlib
    import io
    import sys

    from deepspeed.checkpoint import ds_to_universal as conv

    argv = sys.argv
    with contextlib.redirect_stdout(io.StringIO()):  # its progress report
        try:
            sys.argv = ["ds_to_universal", "--input_folder", src, "--output_folder", out, "--num_extract_workers", "1",
                        "--num_merge_workers", "1"]
            args = conv.parse_arguments()
        finally:
            sys.argv = argv
        conv.main(args)


# -- shared helpers -------------------------------------------------------------------------------


def _hash_owned(staging: str, sub: str, owned: Callable[[str], bool],
                digests: dict[str, tuple[int, str]] | None = None) -> tuple[FileRecord, ...]:
    """(size, checksum) of the files under `staging/sub` that this rank wrote (per `owned(basename)`), all fsynced.

    `digests` (absolute path -> (size, digest)): files hashed while (DCP) or right after (DeepSpeed) they were
    written; they are not read again. Any other owned file is hashed here (through a mapping of the page
    cache), as is one whose size on disk differs from what was hashed (never trust a stale digest). Then
    every file and folder is fsynced, all at once."""
    digests = digests or {}
    out, paths, folders = [], [], []
    root = os.path.join(staging, sub)
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if owned(name):
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, staging).replace(os.sep, "/")
                known = digests.get(os.path.abspath(full))
                if known is None or os.stat(full).st_size != known[0]:
                    known = files.hash_file(full, sync=False)
                out.append(FileRecord(rel, *known))
                paths.append(full)
        folders.append(folder)
    files.fsync_all(paths, folders)  # the files (again, where the backend synced them: then it costs nothing) at once
    return tuple(out)


_DCP_SHARD = re.compile(r"^__(\d+)_\d+\.distcp$")


def _dcp_owner(rec: FileRecord, world_size: int) -> int | None:
    """The rank that reads `rec` on a load at the world size that saved it: rank r its `__{r}_*.distcp`."""
    m = _DCP_SHARD.match(os.path.basename(rec.path))
    return int(m.group(1)) if m and int(m.group(1)) < world_size else None


def _verify_share(path: str, records: Sequence[FileRecord], rank: int, world_size: int, always=(),
                  verified=None, owner: Callable[[FileRecord, int], int | None] | None = None) -> None:
    """Verify this rank's share of the backend files (the ranks agree on the result before any is read).

    A file goes to `owner(rec, world_size)` when that names a rank (the rank that will read it), else to
    every `world_size`-th rank in path order; `always` to every rank. With `verified` (a `VerifiedFiles`),
    the verified files stay mapped for the backend to read."""
    for i, rec in enumerate(sorted(records, key=lambda r: r.path)):
        who = owner(rec, world_size) if owner is not None else None
        if (i % world_size if who is None else who) == rank or rec.path in always:
            full = os.path.realpath(os.path.join(path, rec.path))
            if not full.startswith(os.path.realpath(path) + os.sep):
                from .errors import UnsafeCheckpointError

                raise UnsafeCheckpointError(f"{path}: {rec.path} resolves outside the checkpoint folder; refusing")
            if verified is not None:
                verified.verify(full, rec, key=os.path.join(path, rec.path))
            else:
                files.verify(full, rec)


def _incompatible(path: str, saved: StrategyInfo, now: StrategyInfo) -> IncompatibleCheckpointError:
    how = {
        DCP_DIR: "load it under FSDP2 with fsdp_state_dict='sharded', or save it with "
                 "Checkpointer(fsdp_state_dict='full') to get a checkpoint that DDP can load",
        DEEPSPEED: "load it under a DeepSpeed engine with the same ZeRO stage (DeepSpeed's zero_to_fp32.py in "
                   f"{DEEPSPEED_DIR}/ turns it into plain weights, without optimizer state)",
        REPLICATED: "load it under DDP / one process, or under FSDP2 (a full state dict is sharded on load)",
    }[saved.layout]
    return IncompatibleCheckpointError(
        f"{path}: saved by strategy {saved.name!r} ({saved.describe()}), but the prepared models use "
        f"{now.name!r} ({now.describe()}); this combination is not supported: {how}")


def diagnose_foreign(folder: str) -> str | None:
    """Why a folder without our manifest is not loadable, when it is a raw DeepSpeed or DCP folder."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return None
    if "latest" in names:
        try:
            with open(os.path.join(folder, "latest")) as f:
                tag = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            return f"a raw DeepSpeed folder whose `latest` file cannot be read ({e})"
        if not tag or not os.path.isdir(os.path.join(folder, tag)):
            return (f"a raw DeepSpeed folder whose `latest` names tag {tag!r}, but {os.path.join(folder, tag)} does "
                    "not exist (DeepSpeed writes `latest` without waiting for the other ranks: a save interrupted "
                    "there leaves this); pass an existing tag folder to engine.load_checkpoint(dir, tag=...)")
        return (f"a raw DeepSpeed checkpoint (tag {tag!r}), not a resume-harness checkpoint: it has no manifest, "
                "no checksums, no RNG or data position; " + PICKLE_NOTE.replace("they are checksummed in the manifest "
                "and verified before the backend unpickles them", "here nothing verifies them") +
                ". Load it with engine.load_checkpoint(dir, tag) yourself, or save with the harness's Checkpointer")
    tags = sorted(n for n in names if os.path.isdir(os.path.join(folder, n))
                  and any(x.endswith("_model_states.pt") for x in os.listdir(os.path.join(folder, n))))
    if tags:
        return (f"a raw DeepSpeed folder without a `latest` file (tag folders: {', '.join(tags)}); DeepSpeed's "
                "load_checkpoint(dir) without a tag only warns and loads nothing: pass tag=... explicitly")
    if any(n.endswith("_model_states.pt") for n in names):
        return ("a raw DeepSpeed tag folder (it holds *_model_states.pt), not a resume-harness checkpoint; load it "
                "with engine.load_checkpoint(parent, tag=name) yourself (pickle: only if you trust it)")
    if any(n.endswith(".distcp") for n in names):
        if ".metadata" not in names:
            return ("a torch.distributed.checkpoint (DCP) folder without .metadata: DCP writes .metadata last, so "
                    "the save that wrote it did not finish; it cannot be loaded, use an older checkpoint")
        return ("a raw torch.distributed.checkpoint (DCP) folder, not a resume-harness checkpoint (no manifest, no "
                "checksums, no RNG or data position); load it with dcp.load yourself (its .metadata is a pickle)")
    return None


def not_a_checkpoint_hint(folder: str) -> NotACheckpointError | None:
    why = diagnose_foreign(folder)
    return None if why is None else NotACheckpointError(f"{folder}: {why}")
