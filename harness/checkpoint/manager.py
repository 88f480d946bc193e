"""`Checkpointer`: save and load the full training state, collectively, atomically, without pickle.

One save, step by step (every rank calls `save_state`; it is collective):

1. agree on the folder name (automatic names only ever increase, see `_auto_index`);
2. rank 0 creates `.staging-<name>/`; every rank snapshots its state (a copy in host memory when
   `blocking=False`) and calls the save pre-hooks;
3. each rank writes its own files (only rank *r* writes `rank{r}/`, only rank 0 writes `shared/`),
   hashing and fsyncing them, then reports its file list to the others;
4. if any rank failed, the staging folder is removed and every rank raises CheckpointSaveError;
   else rank 0 writes `manifest.json`, fsyncs, renames the folder into place and tells the others;
5. rank 0 deletes automatic checkpoints beyond `total_limit`: only now, after the commit.

A kill at any instant leaves either the previous checkpoints (the staging folder is ignored and
cleaned up by the next save) or the new, complete one.

Load verifies every file it reads against the manifest (size, checksum), checks the checkpoint
against what is registered, and agrees across ranks before changing anything; `load_state()`
without a folder walks back from the newest checkpoint to the newest one valid on every rank.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
import threading
import warnings
from dataclasses import dataclass, field

import torch
from torch.utils.hooks import RemovableHandle

from harness import probe

from . import elastic, files, from_accelerate, layout, reduction, storage, tree
from . import strategy as strategies
from .comm import Comm
from .config import ProjectConfiguration
from .errors import (CheckpointError, CheckpointSaveError, CorruptCheckpointError, IncompatibleCheckpointError,
                     NotACheckpointError, UnsafeCheckpointError)
from .files import FileRecord
from .layout import FileJob
from .manifest import SHARED, rank_dir, read_manifest
from .state import Registry
from .strategy import SaveContext, StrategyInfo


class CheckpointSkippedWarning(UserWarning):
    """`load_state()` skipped a checkpoint that is not valid on every rank and fell back to an older one."""


def parse_size(size: int | str) -> int:
    """`4GB`, `500MB`, `1GiB` or a number of bytes."""
    if isinstance(size, int):
        return size
    text = size.strip().upper().replace(" ", "")
    for unit, factor in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6),
                         ("KB", 10**3), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


@dataclass
class _SaveJob:
    final: str
    staging: str
    step: int
    iteration: int | None
    contents: dict
    jobs: list[FileJob] = field(default_factory=list)
    error: str | None = None  # the snapshot failed
    strategy: StrategyInfo = field(default_factory=lambda: StrategyInfo("replicated", "replicated"))
    native: tuple[FileRecord, ...] = ()  # files the backend wrote itself (this rank's), already hashed


class Checkpointer:
    """Save and restore a training job's complete state. Names follow HF Accelerate.

    >>> ckpt = Checkpointer(ProjectConfiguration("run", automatic_checkpoint_naming=True, total_limit=3))
    >>> model, optimizer, loader, scheduler = ckpt.prepare(model, optimizer, loader, scheduler)
    >>> ckpt.load_state(missing_ok=True)   # resume if a checkpoint exists
    >>> ...; ckpt.save_state()             # every rank calls it
    """

    def __init__(self, project_config: ProjectConfiguration | None = None, *, max_shard_size: int | str = "4GB",
                 timeout_s: float = 1800.0, fsdp_state_dict: str = "sharded",
                 deterministic_reduction: bool | str = True) -> None:
        if deterministic_reduction not in (True, False, *reduction.MODES):
            raise ValueError(f"deterministic_reduction must be True, False or one of {reduction.MODES}, "
                             f"got {deterministic_reduction!r}")
        self.deterministic_reduction = deterministic_reduction  # DDP models given to prepare(): see reduction.py
        if fsdp_state_dict not in strategies.FSDP_STATE_DICTS:
            raise ValueError(f"fsdp_state_dict must be one of {strategies.FSDP_STATE_DICTS}, got {fsdp_state_dict!r}")
        self.project_configuration = project_config or ProjectConfiguration()
        self.fsdp_state_dict = fsdp_state_dict
        self.max_shard_size = parse_size(max_shard_size)
        self.step = 0
        self._registry = Registry()
        self._comm = Comm(timeout_s)
        self._save_hooks: OrderedDict = OrderedDict()  # RemovableHandle needs a weak-referenceable dict
        self._load_hooks: OrderedDict = OrderedDict()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._buffers: dict[str, torch.Tensor] = {}

    # -- registration -----------------------------------------------------------------------------

    @property
    def strategy(self) -> strategies.Strategy:
        """How model and optimizer state are saved, detected from the prepared models (`harness.checkpoint.strategy`)."""
        return strategies.detect(self._registry.models, fsdp_state_dict=self.fsdp_state_dict)

    @property
    def project_dir(self):
        return self.project_configuration.project_dir

    def prepare(self, *objs):
        """Register models, optimizers, schedulers, DataLoaders (wrapped into ResumableDataLoader) and
        GradScalers; return them in order (a single object is returned as is).

        A DDP model also gets a gradient reduction whose summation order survives a restart (its bucket
        layout pinned; see `reduction.py`), unless `deterministic_reduction=False`.
        """
        out = tuple(self._registry.add(o, prepare=True) for o in objs)
        for o in out:
            reduction.install(o, self.deterministic_reduction)
        return out[0] if len(out) == 1 else out

    def register_for_checkpointing(self, *objs, per_rank: bool = False) -> None:
        """Register objects with state_dict/load_state_dict, or generators (torch, numpy, random.Random).

        Custom objects are replicated (rank 0 saves, every rank loads) unless `per_rank=True`.
        Generators are always per rank.
        """
        for o in objs:
            self._registry.add(o, prepare=False, per_rank=per_rank)

    def register_save_state_pre_hook(self, hook) -> RemovableHandle:
        """`hook(models, weights, output_dir)` runs on every rank before weights are written.

        `weights` is the list of model state dicts; a hook may pop entries it saves itself. Files it
        writes into `output_dir` (the staging folder) become part of the checkpoint and are checksummed.
        """
        handle = RemovableHandle(self._save_hooks)
        self._save_hooks[handle.id] = hook
        return handle

    def register_load_state_pre_hook(self, hook) -> RemovableHandle:
        """`hook(models, input_dir)` runs before weights are loaded; it may pop models it loads itself."""
        handle = RemovableHandle(self._load_hooks)
        self._load_hooks[handle.id] = hook
        return handle

    # -- save -------------------------------------------------------------------------------------

    def save_state(self, output_dir: str | os.PathLike | None = None, *, blocking: bool = True) -> str:
        """Write a checkpoint; returns its folder. Collective: every rank calls it.

        With `blocking=False` the state is copied to host memory and written by a background thread;
        training may go on (and change the model, optimizer, RNG) meanwhile. The next `save_state`,
        `load_state` or `wait()` joins it and raises its error, if any.
        """
        self.wait()
        comm = self._comm
        comm.setup()
        final, auto_index = self._target(output_dir)
        probe.point("checkpoint.begin", path=final, step=self.step)
        error = None
        staging = storage.staging_path(final)
        if comm.rank == 0:
            try:
                staging = storage.prepare_staging(final, clean_siblings=auto_index is not None)
                os.makedirs(os.path.join(staging, SHARED))
            except OSError as e:
                error = f"{type(e).__name__}: {e}"
        _raise_failures(comm.all_gather_json(error), f"could not create the staging folder for {final}")
        try:
            job = self._snapshot(final, staging, auto_index, copy=not blocking)
        except Exception as e:  # reported through the same agreement, so no rank is left waiting
            job = _SaveJob(final, staging, self.step, auto_index, {}, error=f"{type(e).__name__}: {e}")
        if auto_index is not None:
            self.project_configuration.iteration = auto_index + 1
        if blocking:
            self._write_and_commit(job)
        else:
            self._thread_error = None
            self._thread = threading.Thread(target=self._background, args=(job,), name="checkpoint-save")
            self._thread.start()
        return final

    def wait(self) -> None:
        """Join a background save; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._thread_error is not None:
                err, self._thread_error = self._thread_error, None
                raise err

    def _background(self, job: _SaveJob) -> None:
        try:
            self._write_and_commit(job)
        except BaseException as e:  # surfaced by wait()
            self._thread_error = e

    def _target(self, output_dir) -> tuple[str, int | None]:
        """(final folder, automatic index or None), the same on every rank."""
        cfg = self.project_configuration
        if output_dir is not None:
            final = os.path.abspath(os.fspath(output_dir))
            error = None
            if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
                error = (f"{final} exists and is not empty; refusing to overwrite it (a failed save must never "
                         "destroy a checkpoint): save into a new folder, or use automatic naming")
            _raise_failures(self._comm.all_gather_json(error), "cannot save")
            return final, None
        if not cfg.automatic_checkpoint_naming:
            raise ValueError("save_state() needs a folder: pass output_dir, or use "
                             "ProjectConfiguration(project_dir=..., automatic_checkpoint_naming=True)")
        index = max(self._comm.all_gather_json(self._auto_index()))
        return os.path.join(cfg.checkpoints_dir, f"checkpoint_{index}"), index

    def _auto_index(self) -> int:
        """`iteration`, raised above every existing checkpoint_N so that names only ever increase.

        A collision (a restart that did not restore `iteration`, Accelerate #1601/#3306) is resolved by
        taking the next free number, with a warning, never by failing mid-run.
        """
        cfg = self.project_configuration
        existing = storage.auto_checkpoints(cfg.checkpoints_dir)
        index = cfg.iteration
        if existing and existing[0][0] >= index:
            if any(n == index for n, _ in existing):
                warnings.warn(f"checkpoint_{index} already exists in {cfg.checkpoints_dir}; saving as "
                              f"checkpoint_{existing[0][0] + 1} instead", stacklevel=4)
            index = existing[0][0] + 1
        return index

    def _snapshot(self, final: str, staging: str, auto_index: int | None, copy: bool) -> _SaveJob:
        comm, reg = self._comm, self._registry
        rank = comm.rank
        strategy = self.strategy
        job = _SaveJob(final, staging, self.step, auto_index, reg.counts(), strategy=strategy.info())
        weights = strategy.model_weights(reg.models)  # [] when the backend writes the weights itself
        for hook in self._save_hooks.values():
            hook(reg.models, weights, staging)
        tensors: dict = {}
        job.jobs += layout.rank_files(rank, reg.rank_state(self.step, tensors), tensors)
        optimizers = strategy.optimizer_states(reg.optimizers, reg.models, rank)
        if rank == 0:
            shared_tensors: dict = {}
            shared = reg.shared_state(self.step, auto_index, shared_tensors)
            job.jobs += layout.shared_files(shared, shared_tensors, weights, optimizers, self.max_shard_size)
        # The backend's own files (DCP shards, DeepSpeed's), written now, on this thread, also when blocking=False.
        ctx = SaveContext(staging, rank, comm.world_size, self.step, comm.group)
        job.native = strategy.save_native(ctx, reg.models, reg.optimizers).records
        if copy:
            for fj in job.jobs:
                if fj.is_tensors:
                    fj.payload = {k: self._host_copy(f"{fj.rel}:{k}", t) for k, t in fj.payload.items()}
        return job

    def _host_copy(self, key: str, t: torch.Tensor) -> torch.Tensor:
        """Copy `t` into a host buffer reused across saves (no page faults after the first save)."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
            self._buffers[key] = buf
        buf.copy_(t.detach())
        return buf

    def _write_and_commit(self, job: _SaveJob) -> None:
        comm = self._comm
        rank = comm.rank
        records: list[FileRecord] = []
        error = job.error
        if error is None:
            try:
                os.makedirs(os.path.join(job.staging, rank_dir(rank)), exist_ok=True)
                records = layout.write_files(job.staging, job.jobs) + list(job.native)
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
        reports = comm.all_gather_json({"error": error, "files": [r.to_json() for r in records]})
        errors = [rep["error"] for rep in reports]
        if any(errors):
            if rank == 0:
                shutil.rmtree(job.staging, ignore_errors=True)
            _raise_failures(errors, f"saving {job.final} failed, previous checkpoints are untouched")
        commit_error = None
        if rank == 0:
            try:
                self._commit(job, reports)
            except Exception as e:
                commit_error = f"{type(e).__name__}: {e}"
                shutil.rmtree(job.staging, ignore_errors=True)
        commit_error = comm.broadcast_json(commit_error)
        if commit_error:
            raise CheckpointSaveError(f"rank 0 could not commit {job.final} (previous checkpoints are untouched): {commit_error}")
        probe.point("checkpoint.committed", path=job.final, step=job.step)
        cfg = self.project_configuration
        if rank == 0 and job.iteration is not None and cfg.total_limit is not None:
            probe.point("checkpoint.rotate")
            try:
                storage.rotate(cfg.checkpoints_dir, cfg.total_limit, keep=job.final)
            except OSError as e:
                warnings.warn(f"total_limit rotation failed after committing {job.final}: {e}", stacklevel=2)

    def _commit(self, job: _SaveJob, reports: list[dict]) -> None:
        probe.point("checkpoint.manifest")
        records = [FileRecord(r["path"], r["size"], r[files.HASH]) for rep in reports for r in rep["files"]]
        layout.write_manifest(job.staging, records, world_size=self._comm.world_size, step=job.step,
                              iteration=job.iteration, contents=job.contents, backend=job.strategy.name,
                              strategy=job.strategy.to_json())
        probe.point("checkpoint.commit")
        storage.commit(job.staging, job.final)

    # -- load -------------------------------------------------------------------------------------

    def load_state(self, input_dir: str | os.PathLike | None = None, *, strict_rng: bool = True,
                   missing_ok: bool = False, allow_unsafe_pickle: bool = False) -> str | None:
        """Restore everything registered from a checkpoint; returns its folder. Collective.

        With no folder: the newest automatic checkpoint that is valid on every rank; the ones skipped
        are reported with a CheckpointSkippedWarning naming the reason. With `missing_ok=True`, no
        checkpoint at all (e.g. a kill before the first save finished) returns None instead of raising.

        A folder written by HF Accelerate's save_state is read only with `allow_unsafe_pickle=True`:
        it holds pickles, which can execute code. Each rank converts it to a private native copy first.
        """
        self.wait()
        self._comm.setup()
        if input_dir is not None and allow_unsafe_pickle and from_accelerate.is_accelerate_folder(os.fspath(input_dir)):
            with tempfile.TemporaryDirectory(prefix="harness-from-accelerate-") as tmp:
                native = from_accelerate.convert(os.fspath(input_dir), os.path.join(tmp, "native"),
                                                 allow_unsafe_pickle=True)
                self.load_state(native, strict_rng=strict_rng)
            return os.path.abspath(os.fspath(input_dir))
        if input_dir is not None:
            candidates = [os.path.abspath(os.fspath(input_dir))]
        else:
            candidates = [p for _, p in storage.auto_checkpoints(self.project_configuration.checkpoints_dir)]
            if not candidates:
                if missing_ok:
                    return None
                raise NotACheckpointError(f"no checkpoint in {self.project_configuration.checkpoints_dir}")
        skipped = []
        for path in candidates:
            loaded, error, kind, unexpected = None, None, None, None
            try:
                loaded = self._read(path, strict_rng)
            except (CorruptCheckpointError, NotACheckpointError, IncompatibleCheckpointError) as e:
                error, kind = str(e), type(e).__name__
            except Exception as e:  # re-raised after the agreement, so that no other rank is left waiting in it
                unexpected = e
                error, kind = f"{path}: rank {self._comm.rank}: {type(e).__name__}: {e}", "CheckpointError"
            reports = self._comm.all_gather_json({"error": error, "kind": kind})
            if unexpected is not None:
                raise unexpected
            failures = [rep for rep in reports if rep["error"]]
            if not failures:
                self._apply(path, loaded)
                return path
            message = "; ".join(dict.fromkeys(rep["error"] for rep in failures))
            kinds = [rep["kind"] for rep in failures]
            if "CheckpointError" in kinds:  # that rank raised its own error: stop on every rank
                raise CheckpointError(message)
            if input_dir is not None or "IncompatibleCheckpointError" in kinds:
                # An older checkpoint would not fit either; an explicit folder has no fallback.
                cls = _ERRORS["IncompatibleCheckpointError" if "IncompatibleCheckpointError" in kinds else kinds[0]]
                raise cls(message)
            skipped.append(f"{os.path.basename(path)}: {message}")
            warnings.warn(f"skipping checkpoint {path}: {message}", CheckpointSkippedWarning, stacklevel=2)
        raise CorruptCheckpointError("no valid checkpoint in "
                                     f"{self.project_configuration.checkpoints_dir}; skipped: " + " | ".join(skipped))

    def _read(self, path: str, strict_rng: bool) -> dict:
        """Read and verify everything this rank needs from `path`, and validate it against the registry."""
        comm = self._comm
        manifest = read_manifest(path)
        saved = StrategyInfo.from_json(manifest.strategy, manifest.backend)
        strategy = self.strategy
        strategy.check_compatible(path, saved, manifest.world_size, comm.world_size)
        elastic.check_resume(path, self._registry.dataloaders, manifest.world_size, comm.world_size, comm.rank,
                             f"saved by {manifest.world_size} rank(s) ({saved.describe()}), loading on "
                             f"{comm.world_size} ({strategy.info().describe()})")
        src = elastic.source_rank(comm.rank, manifest.world_size, comm.world_size)  # per-rank files read from
        records = {r.path: r for r in manifest.records_for(src)}
        root = os.path.realpath(path)

        read_files: set[str] = set()

        def resolve(rel: str) -> str:
            if rel not in records:
                raise CorruptCheckpointError(f"{path}: the manifest does not list {rel} (for rank {comm.rank})")
            full = os.path.realpath(os.path.join(root, rel))
            if not full.startswith(root + os.sep):
                raise UnsafeCheckpointError(f"{path}: {rel} resolves outside the checkpoint folder; refusing")
            return full

        def read(rel: str, as_tensors: bool):
            full = resolve(rel)
            read_files.add(rel)
            return files.read_tensors(full, records[rel])[0] if as_tensors else files.read_json(full, records[rel])

        own = rank_dir(src)
        try:
            shared = read(f"{SHARED}/state.json", False)
            per_rank = read(f"{own}/state.json", False)
            tensors = {**read(f"{SHARED}/state.safetensors", True), **read(f"{own}/state.safetensors", True)}
            weights = []
            for m in shared["models"]:
                sd = tree.decode(m["extra"], tensors)  # extra state's tensors are in shared/state.safetensors
                for rel in m["files"]:
                    sd.update(read(rel, True))
                weights.append(sd)
            optimizers = [tree.decode(read(f"{p}.json", False), read(f"{p}.safetensors", True))
                          for p in shared["optimizers"]]
            rng_state = tree.decode(per_rank["rng"], tensors)
            self._registry.validate(shared, per_rank, tensors, weights, optimizers, rng_state, comm.rank, strict_rng)
            for rel in sorted(records.keys() - read_files):  # what save hooks added: verified for the load hooks
                files.verify(resolve(rel), records[rel])
            native = [r for group in (strategies.DCP_DIR, strategies.DEEPSPEED_DIR) for r in manifest.files.get(group, [])]
            strategy.verify_native(path, native, comm.rank, comm.world_size, saved, self._registry.models)
        except (KeyError, TypeError, ValueError) as e:  # a malformed tree (what tree.decode raises, a missing key)
            raise CorruptCheckpointError(f"{path}: state files are malformed ({type(e).__name__}: {e})") from None
        return {"shared": shared, "per_rank": per_rank, "tensors": tensors, "weights": weights,
                "optimizers": optimizers, "rng": rng_state, "step": manifest.step, "saved": saved,
                "strategy": strategy, "saved_world": manifest.world_size}

    def _apply(self, path: str, loaded: dict) -> None:
        reg = self._registry
        models = list(reg.models)
        for hook in self._load_hooks.values():
            hook(models, path)
        index = [i for i, m in enumerate(reg.models) if any(m is x for x in models)]
        try:
            loaded["strategy"].load(path, loaded["saved"], models, index, loaded["weights"], reg.optimizers,
                                    loaded["optimizers"], self._comm.group)
            reg.apply(models, [], [], loaded["shared"], loaded["per_rank"],
                      loaded["tensors"], loaded["rng"], self._comm.rank)
        except CheckpointError:
            raise
        except (KeyError, ValueError, RuntimeError) as e:
            raise IncompatibleCheckpointError(f"{path}: rank {self._comm.rank}: {type(e).__name__}: {e}") from None
        self.step = loaded["shared"]["step"]
        if loaded["shared"]["iteration"] is not None:
            self.project_configuration.iteration = loaded["shared"]["iteration"] + 1
        elastic.after_load(path, reg.generators, loaded["saved_world"], self._comm.world_size, self._comm.rank,
                           self.step, len(loaded["per_rank"].get("custom") or {}) + len(reg.scalers))
        probe.point("checkpoint.loaded", path=path, step=self.step)


_ERRORS = {cls.__name__: cls for cls in (CorruptCheckpointError, NotACheckpointError, IncompatibleCheckpointError,
                                         UnsafeCheckpointError)}


def _raise_failures(errors: list, what: str) -> None:
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if failed:
        raise CheckpointSaveError(f"{what}: " + "; ".join(f"rank {r}: {e}" for r, e in failed))
