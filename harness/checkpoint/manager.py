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
                     MapLocationError, NotACheckpointError, UnsafeCheckpointError)
from .files import FileRecord
from .host_copy import HostCopies
from .layout import FileJob
from .manifest import SHARED, Manifest, rank_dir, read_manifest
from .model_files import parse_size, save_model as _save_model
from .state import Registry
from .strategy import SaveContext, StrategyInfo


class CheckpointSkippedWarning(UserWarning):
    """`load_state()` skipped a checkpoint that is not valid on every rank and fell back to an older one."""


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
    writer: int = 0  # the rank that writes the shared files and the manifest into this folder, and commits it
    members: list[int] | None = None  # save_on_each_node: the ranks whose files go into this folder (else all)
    copies: HostCopies | None = None  # blocking=False: the copies into host buffers, made while the thread writes


class Checkpointer:
    """Save and restore a training job's complete state. Names follow HF Accelerate.

    >>> ckpt = Checkpointer(ProjectConfiguration("run", automatic_checkpoint_naming=True, total_limit=3))
    >>> ckpt = Checkpointer(project_dir="run", project_config=ProjectConfiguration(automatic_checkpoint_naming=True))
    >>> model, optimizer, loader, scheduler = ckpt.prepare(model, optimizer, loader, scheduler)
    >>> ckpt.load_state(missing_ok=True)   # resume if a checkpoint exists
    >>> ...; ckpt.save_state()             # every rank calls it
    """

    def __init__(self, project_config: ProjectConfiguration | str | os.PathLike | None = None, *,
                 project_dir: str | os.PathLike | None = None, max_shard_size: int | str = "4GB",
                 timeout_s: float = 1800.0, fsdp_state_dict: str = "sharded",
                 deterministic_reduction: bool | str = True) -> None:
        if deterministic_reduction not in (True, False, *reduction.MODES):
            raise ValueError(f"deterministic_reduction must be True, False or one of {reduction.MODES}, "
                             f"got {deterministic_reduction!r}")
        self.deterministic_reduction = deterministic_reduction  # DDP models given to prepare(): see reduction.py
        if fsdp_state_dict not in strategies.FSDP_STATE_DICTS:
            raise ValueError(f"fsdp_state_dict must be one of {strategies.FSDP_STATE_DICTS}, got {fsdp_state_dict!r}")
        self.project_configuration = _project_configuration(project_config, project_dir)
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

    @property
    def save_iteration(self) -> int:
        """The N of the next automatic checkpoint (Accelerate's name)."""
        return self.project_configuration.iteration

    def prepare(self, *objs):
        """Register models, optimizers, schedulers, DataLoaders (wrapped into ResumableDataLoader) and
        GradScalers; return all arguments in order (a single object is returned as is).

        Anything else (None, numbers, objects it does not manage) is returned unchanged and not registered,
        as Accelerate's prepare does; register custom objects with `register_for_checkpointing`. All or
        nothing: if one argument cannot be prepared, none is registered and a ValueError names each by index.

        A DDP model also gets a gradient reduction whose summation order survives a restart (the bucket
        layout DDP rebuilds is recorded by save_state and restored by load_state; see `reduction.py`),
        unless `deterministic_reduction=False`.
        """
        out = tuple(self._registry.add_all(objs, prepare=True))
        for o in out:
            reduction.install(o, self.deterministic_reduction)
        return out[0] if len(out) == 1 else out

    def register_for_checkpointing(self, *objs, per_rank: bool = False) -> None:
        """Register objects with state_dict/load_state_dict, or generators (torch, numpy, random.Random).

        Custom objects are replicated (rank 0 saves, every rank loads) unless `per_rank=True`.
        Generators are always per rank. All or nothing, as in Accelerate: every object is checked first; if
        any cannot be checkpointed, none is registered and a ValueError names each bad one by its index.
        """
        self._registry.add_all(objs, prepare=False, per_rank=per_rank)

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

    def skip_first_batches(self, dataloader, num_batches: int = 0):
        """Accelerate's resume recipe, kept so the swap is one line: a prepared loader is already positioned.

        After `load_state` the loader resumes where the checkpoint left it, so `num_batches` equal to its
        restored position (or 0) returns it unchanged. A loader still at the start of its epoch (nothing
        restored, e.g. a converted Accelerate checkpoint) is moved to `num_batches`, skipping at the index
        level. Any other number would skip twice or not at all: it raises.
        """
        if not isinstance(num_batches, int) or num_batches < 0:
            raise ValueError(f"num_batches must be an integer >= 0, got {num_batches!r}")
        position = getattr(dataloader, "position", None)
        if num_batches == 0 or position == num_batches:
            return dataloader
        if position is None or not hasattr(dataloader, "load_state_dict"):
            raise TypeError(f"skip_first_batches: a {type(dataloader).__name__} is not a loader returned by "
                            "prepare(); prepare it, and its position is restored by load_state")
        if position != 0:
            raise ValueError(f"skip_first_batches({num_batches}): the loader was restored at batch {position} of its "
                             "epoch by load_state; skipping again would lose data. Drop the call (the prepared "
                             "loader resumes by itself) or pass its position")
        dataloader.load_state_dict({**dataloader.state_dict(), "position": num_batches})
        return dataloader

    # -- save -------------------------------------------------------------------------------------

    def save_model(self, model: torch.nn.Module, save_directory: str | os.PathLike, max_shard_size: int | str = "10GB",
                   safe_serialization: bool = True) -> list[str]:
        """Weights only, as safetensors shards + `model.safetensors.index.json` (`harness.checkpoint.model_files`)."""
        return _save_model(model, save_directory, max_shard_size=max_shard_size, safe_serialization=safe_serialization)

    def save_state(self, output_dir: str | os.PathLike | None = None, safe_serialization: bool = True, *,
                   blocking: bool = True, **save_model_func_kwargs) -> str:
        """Write a checkpoint; returns its folder. Collective: every rank calls it.

        With `blocking=False` the state is copied to host memory and written by a background thread;
        training may go on (and change the model, optimizer, RNG) meanwhile. The next `save_state`,
        `load_state` or `wait()` joins it and raises its error, if any.

        Accelerate's signature: the format is always pickle-free, so `safe_serialization=False` only warns;
        `save_model_func_kwargs` (which Accelerate forwards to DeepSpeed's `save_checkpoint`) are ignored
        with a warning naming them.
        """
        if not safe_serialization:
            warnings.warn("save_state(safe_serialization=False) ignored: the checkpoint format is always pickle-free "
                          "(safetensors and JSON)", stacklevel=2)
        if save_model_func_kwargs:
            warnings.warn(f"save_state: ignoring {sorted(save_model_func_kwargs)} (Accelerate passes extra arguments to "
                          "DeepSpeed's save_checkpoint; this checkpointer decides what each backend writes itself)",
                          stacklevel=2)
        self.wait()
        comm = self._comm
        comm.setup()
        final, auto_index, writer, members = self._target(output_dir)
        probe.point(probe.Point.BEGIN, path=final, step=self.step)
        staging = self._create_staging(final, auto_index, writer, several_writers=members is not None)
        try:
            job = self._snapshot(final, staging, auto_index, copy=not blocking, writer=writer)
        except Exception as e:  # reported through the same agreement, so no rank is left waiting
            job = _SaveJob(final, staging, self.step, auto_index, {}, error=f"{type(e).__name__}: {e}")
        job.writer, job.members = writer, members
        if auto_index is not None:
            self.project_configuration.iteration = auto_index + 1
        if blocking:
            self._write_and_commit(job)
        else:
            self._thread_error = None
            self._thread = threading.Thread(target=self._background, args=(job,), name="checkpoint-save")
            self._thread.start()
            if job.copies is not None:
                job.copies.run()  # the stall: one copy of the state, each tensor written as soon as it is copied
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

    def _target(self, output_dir) -> tuple[str, int | None, int, list[int] | None]:
        """(final folder, automatic index or None, writer rank, ranks written into the folder or None for all).

        Checked on every rank before anything is written: all ranks name one folder, or, with
        `save_on_each_node`, the ranks of each node name one folder (their node's).
        """
        cfg, comm = self.project_configuration, self._comm
        auto_index, error = None, None
        if output_dir is not None:
            final = os.path.abspath(os.fspath(output_dir))
            if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
                error = (f"{final} exists and is not empty; refusing to overwrite it (a failed save must never "
                         "destroy a checkpoint): save into a new folder, or use automatic naming")
        else:
            if not cfg.automatic_checkpoint_naming:
                raise ValueError("save_state() needs a folder: pass output_dir, or use "
                                 "ProjectConfiguration(project_dir=..., automatic_checkpoint_naming=True)")
            auto_index = self._auto_index()
            final = os.path.abspath(cfg.checkpoints_dir)  # the folder's parent until the ranks agree on the index
        if cfg.save_on_each_node and self.strategy.info().name != "replicated":
            raise ValueError(f"save_on_each_node=True supports replicated models (DDP, a plain module), not "
                             f"{self.strategy.info().name}: its files need one coordinator; save to a shared folder")
        # One agreement: the automatic index (every rank proposes one), the folder, errors, the node.
        reports = comm.all_gather_json({"final": final, "error": error, "auto_index": auto_index,
                                        "node": _local_rank_env() if cfg.save_on_each_node else None})
        _raise_failures([r["error"] for r in reports], "cannot save")
        named = [r for r, rep in enumerate(reports) if rep["auto_index"] is None]
        if named and len(named) < len(reports):
            raise CheckpointSaveError(f"ranks {named} passed save_state(output_dir) and the others used automatic "
                                      "naming; nothing was written. Every rank must call save_state the same way")
        if output_dir is None:
            auto_index = max(r["auto_index"] for r in reports)
            for r in reports:
                r["final"] = os.path.join(r["final"], f"checkpoint_{auto_index}")
            final = reports[comm.rank]["final"]
        finals = [r["final"] for r in reports]
        if not cfg.save_on_each_node:
            if len(set(finals)) > 1:
                raise CheckpointSaveError(
                    f"the ranks name different folders for this checkpoint ({_by_folder(finals, range(len(finals)))}); "
                    "nothing was written. Every rank must name the same folder on a filesystem all ranks share, or "
                    "set ProjectConfiguration(save_on_each_node=True) for node-local disks (one copy per node). "
                    "If your test harness gives each rank its own temporary folder (pytest's tmp_path or "
                    "tempfile.mkdtemp() in every process), share one folder across the ranks instead: create it on "
                    "rank 0 and send its path to the others (torch.distributed.broadcast_object_list), or make it "
                    "from a name every rank knows")
            return final, auto_index, 0, None
        members = next(g for g in _node_groups([r["node"] for r in reports]) if comm.rank in g)
        if len({finals[r] for r in members}) > 1:
            raise CheckpointSaveError(
                f"save_on_each_node=True, but the ranks of one node (ranks {members}) name different folders "
                f"({_by_folder(finals, members)}); nothing was written. The ranks of a node must name the same folder "
                "(save_on_each_node writes one copy per node, not per rank): if your test harness gives each rank its "
                "own temporary folder, share one folder across the ranks of each node (create it on the node's local "
                "rank 0 and send its path to the others)")
        return final, auto_index, members[0], members

    def _create_staging(self, final: str, auto_index: int | None, writer: int, several_writers: bool = False) -> str:
        """The writer creates `.staging-<name>`; every rank checks that it sees that very folder, before writing."""
        comm = self._comm
        staging = storage.staging_path(final)
        is_writer = comm.rank == writer
        error = None
        if is_writer:  # leftovers of killed saves first, before any writer creates a folder (nodes may share a disk)
            try:
                storage.clean_staging(final, clean_siblings=auto_index is not None)
            except OSError as e:
                error = f"{type(e).__name__}: {e}"
        if several_writers:  # one node's cleaning must not remove the staging folder another node just created
            _raise_failures(comm.all_gather_json(error), f"could not create the staging folder for {final}")
        token = None
        if is_writer and error is None:
            try:
                token = storage.create_staging(final)
                os.makedirs(os.path.join(staging, SHARED))
            except FileExistsError:
                error = (f"{staging} was created by another node's writer at the same time: the nodes share this "
                         "folder, so save_on_each_node=True would write one folder twice; set save_on_each_node=False "
                         "on a shared filesystem, or give each node its own folder")
            except OSError as e:
                error = f"{type(e).__name__}: {e}"
        reports = comm.all_gather_json({"error": error, "token": token})
        if not any(r["error"] for r in reports) and not is_writer and storage.read_token(staging) != reports[writer]["token"]:
            error = (f"does not see the staging folder {staging} that rank {writer} created: the ranks do not share "
                     "this folder (node-local disks?). Name a folder on a filesystem every rank sees, or set "
                     "ProjectConfiguration(save_on_each_node=True) to write one checkpoint per node")
        errors = comm.all_gather_json(error or reports[comm.rank]["error"])
        if any(errors):
            if is_writer and token is not None:
                shutil.rmtree(staging, ignore_errors=True)
            _raise_failures(errors, f"could not create the staging folder for {final}; nothing was written")
        return staging

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

    def _snapshot(self, final: str, staging: str, auto_index: int | None, copy: bool, writer: int = 0) -> _SaveJob:
        comm, reg = self._comm, self._registry
        rank = comm.rank
        strategy = self.strategy
        job = _SaveJob(final, staging, self.step, auto_index, reg.counts(), strategy=strategy.info())
        weights = strategy.model_weights(reg.models)  # [] when the backend writes the weights itself
        for hook in self._save_hooks.values():
            hook(reg.models, weights, staging)
        tensors: dict = {}
        job.jobs += layout.rank_files(rank, reg.rank_state(self.step, tensors), tensors)
        # rank - writer: the writer is "rank 0" of its folder (save_on_each_node: replicated only; else writer == 0)
        optimizers = strategy.optimizer_states(reg.optimizers, reg.models, rank - writer)
        ddp_layouts = [reduction.bucket_layout_state(m) for m in reg.models]  # every rank: may rebuild (collective)
        if rank == writer:
            shared_tensors: dict = {}
            shared = reg.shared_state(self.step, auto_index, shared_tensors)
            shared["ddp_bucket_layouts"] = ddp_layouts
            job.jobs += layout.shared_files(shared, shared_tensors, weights, optimizers, self.max_shard_size)
        # The backend's own files (DCP shards, DeepSpeed's), written now, on this thread, also when blocking=False.
        ctx = SaveContext(staging, rank, comm.world_size, self.step, comm.group)
        job.native = strategy.save_native(ctx, reg.models, reg.optimizers).records
        if copy:  # host buffers swapped in now, filled by save_state once the writing thread runs (host_copy.py)
            job.copies = HostCopies.plan(job.jobs, self._host_buffer)
        return job

    def _host_buffer(self, key: str, t: torch.Tensor) -> torch.Tensor:
        """A host buffer for `t`, reused across saves (no page faults after the first save)."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
            self._buffers[key] = buf
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
            if rank == job.writer:
                shutil.rmtree(job.staging, ignore_errors=True)
            _raise_failures(errors, f"saving {job.final} failed, previous checkpoints are untouched")
        commit_error = None
        if rank == job.writer:
            try:
                self._commit(job, [reports[r] for r in (job.members or range(comm.world_size))])
            except Exception as e:
                commit_error = f"{type(e).__name__}: {e}"
                shutil.rmtree(job.staging, ignore_errors=True)
        failed = [(r, e) for r, e in enumerate(comm.all_gather_json(commit_error)) if e]
        if failed:
            raise CheckpointSaveError("; ".join(f"rank {r} could not commit {job.final} (previous checkpoints are "
                                                f"untouched): {e}" for r, e in failed))
        probe.point(probe.Point.COMMITTED, path=job.final, step=job.step)
        cfg = self.project_configuration
        if rank == job.writer and job.iteration is not None and cfg.total_limit is not None:
            probe.point(probe.Point.ROTATE)
            try:
                storage.rotate(cfg.checkpoints_dir, cfg.total_limit, keep=job.final)
            except OSError as e:
                warnings.warn(f"total_limit rotation failed after committing {job.final}: {e}", stacklevel=2)

    def _commit(self, job: _SaveJob, reports: list[dict]) -> None:
        probe.point(probe.Point.MANIFEST)
        records = [FileRecord(r["path"], r["size"], r[files.HASH]) for rep in reports for r in rep["files"]]
        storage.remove_token(job.staging)
        _check_present(job.staging, records)
        layout.write_manifest(job.staging, records, world_size=self._comm.world_size, step=job.step,
                              iteration=job.iteration, contents=job.contents, backend=job.strategy.name,
                              strategy=job.strategy.to_json(), ranks=job.members)
        probe.point(probe.Point.COMMIT)
        storage.commit(job.staging, job.final)

    # -- load -------------------------------------------------------------------------------------

    def load_state(self, input_dir: str | os.PathLike | None = None, map_location=None, *, strict_rng: bool = True,
                   missing_ok: bool = False, allow_unsafe_pickle: bool = False, load_kwargs: dict | None = None,
                   **load_model_func_kwargs) -> str | None:
        """Restore everything registered from a checkpoint; returns its folder. Collective.

        With no folder: the newest automatic checkpoint that is valid on every rank; the ones skipped
        are reported with a CheckpointSkippedWarning naming the reason. With `missing_ok=True`, no
        checkpoint at all (e.g. a kill before the first save finished) returns None instead of raising.

        `map_location` (Accelerate's): where optimizer state is loaded before `load_state_dict` places it
        with its parameters: None or "cpu", "on_device" (the device of the first registered model), or a
        torch device, which must exist on every rank. `load_kwargs` and other keyword arguments (Accelerate
        passes them to torch.load and DeepSpeed) are ignored with a warning: nothing here is torch.load-ed.

        A folder written by HF Accelerate's save_state is read only with `allow_unsafe_pickle=True`:
        it holds pickles, which can execute code. Each rank converts it to a private native copy first.
        """
        if load_kwargs or load_model_func_kwargs:
            warnings.warn(f"load_state: ignoring {sorted({**(load_kwargs or {}), **load_model_func_kwargs})} (Accelerate "
                          "passes them to torch.load or DeepSpeed; this checkpointer never unpickles)", stacklevel=2)
        self.wait()
        self._comm.setup()
        # One agreement before anything is read: the device on every rank, and every rank's checkpoints.
        checkpoints_dir = os.path.abspath(self.project_configuration.checkpoints_dir) if input_dir is None else None
        device, found = self._agree_to_load(map_location, checkpoints_dir)
        if input_dir is not None and allow_unsafe_pickle and from_accelerate.is_accelerate_folder(os.fspath(input_dir)):
            with tempfile.TemporaryDirectory(prefix="harness-from-accelerate-") as tmp:
                native = from_accelerate.convert(os.fspath(input_dir), os.path.join(tmp, "native"),
                                                 allow_unsafe_pickle=True)
                self.load_state(native, map_location, strict_rng=strict_rng)
            return os.path.abspath(os.fspath(input_dir))
        if input_dir is not None:
            candidates = [os.path.abspath(os.fspath(input_dir))]
        else:  # every rank's checkpoints, newest first (node-local folders may differ; a rank lacking one skips it)
            candidates = [os.path.join(checkpoints_dir, f"checkpoint_{n}")
                          for n in sorted({n for per_rank in found for n in per_rank}, reverse=True)]
            if not candidates:
                if missing_ok:
                    return None
                raise NotACheckpointError(f"no checkpoint in {self.project_configuration.checkpoints_dir}")
        skipped = []
        for path in candidates:
            loaded, error, kind, unexpected = None, None, None, None
            try:
                loaded = self._read(path, strict_rng, device)
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

    def _read(self, path: str, strict_rng: bool, device: torch.device | None = None) -> dict:
        """Read and verify everything this rank needs from `path`, and validate it against the registry."""
        comm = self._comm
        manifest = read_manifest(path)
        _check_holds_rank(path, manifest, comm.rank, comm.world_size)
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
            optimizers = [_to_device(tree.decode(read(f"{p}.json", False), read(f"{p}.safetensors", True)), device)
                          for p in shared["optimizers"]]
            rng_state = tree.decode(per_rank["rng"], tensors)
            self._registry.validate(shared, per_rank, tensors, weights, optimizers, rng_state, comm.rank, strict_rng)
            for rel in sorted(records.keys() - read_files):  # what save hooks added: verified for the load hooks
                files.verify(resolve(rel), records[rel])
            native = [r for group in (strategies.DCP_DIR, strategies.DEEPSPEED_DIR) for r in manifest.files.get(group, [])]
            strategy.verify_native(path, native, comm.rank, comm.world_size, saved, self._registry.models)
        except CheckpointError:  # several are ValueErrors too (as in Accelerate): not malformed trees
            raise
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
            layouts = loaded["shared"].get("ddp_bucket_layouts") or [None] * len(reg.models)  # absent: older format
            for m, layout_state in zip(reg.models, layouts):
                reduction.restore_bucket_layout(m, layout_state)  # before the first forward (collective)
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
        probe.point(probe.Point.LOADED, path=path, step=self.step)


    def _agree_to_load(self, map_location, checkpoints_dir: str | None) -> tuple[torch.device | None, list[list[int]]]:
        """The device `map_location` names (None for the CPU), checked on every rank before anything is read;
        and, in the same agreement, the automatic checkpoints each rank sees in `checkpoints_dir` (when given)."""
        device, error = None, None
        try:
            device = _resolve_device(map_location, self._registry.models)
        except ValueError as e:
            error = str(e)
        mine = [n for n, _ in storage.auto_checkpoints(checkpoints_dir)] if checkpoints_dir is not None else []
        reports = self._comm.all_gather_json({"error": error, "found": mine})
        failed = [(r, rep["error"]) for r, rep in enumerate(reports) if rep["error"]]
        if failed:
            raise MapLocationError("load_state: " + "; ".join(f"rank {r}: {e}" for r, e in failed))
        return device, [rep["found"] for rep in reports]


_ERRORS = {cls.__name__: cls for cls in (CorruptCheckpointError, NotACheckpointError, IncompatibleCheckpointError,
                                         UnsafeCheckpointError)}


def _project_configuration(config, project_dir) -> ProjectConfiguration:
    """Accelerate's rules: `project_config` if given, with `project_dir` filling in a missing project_dir."""
    if isinstance(config, (str, os.PathLike)):  # Checkpointer("runs/x")
        if project_dir is not None:
            raise ValueError("pass the project folder once: Checkpointer(project_dir=...) or Checkpointer(folder)")
        config, project_dir = None, config
    if config is None:
        return ProjectConfiguration(project_dir=project_dir)
    if not isinstance(config, ProjectConfiguration):
        fields = ("project_dir", "automatic_checkpoint_naming", "total_limit", "iteration")
        if not all(hasattr(config, f) for f in fields):
            raise TypeError(f"project_config must be a ProjectConfiguration, got {type(config).__qualname__}")
        # Accelerate's own (a script that kept `from accelerate.utils import ProjectConfiguration`): copied
        config = ProjectConfiguration(**{f: getattr(config, f) for f in fields},
                                      logging_dir=getattr(config, "logging_dir", None),
                                      save_on_each_node=bool(getattr(config, "save_on_each_node", False)))
    if project_dir is not None:
        if config.project_dir is None:
            config.set_directories(project_dir)
        elif os.path.abspath(os.fspath(config.project_dir)) != os.path.abspath(os.fspath(project_dir)):
            raise ValueError(f"project_dir={os.fspath(project_dir)!r} differs from project_config.project_dir="
                             f"{os.fspath(config.project_dir)!r}; pass the folder once")
    return config


def _resolve_device(map_location, models) -> torch.device | None:
    if map_location is None or map_location == "cpu" or map_location == torch.device("cpu"):
        return None
    if map_location == "on_device":
        device = next((p.device for m in models for p in m.parameters()), None)
        return None if device is None or device.type == "cpu" else device
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"map_location={map_location!r} is not a device: use None, 'cpu', 'on_device' or a torch "
                         "device such as 'cuda:0'") from None
    if device.type == "cpu":
        return None
    if device.type == "meta":
        raise ValueError("map_location='meta' would drop the loaded values; use 'cpu', 'on_device' or a real device")
    backend = getattr(torch, device.type, None)
    available = backend is not None and getattr(backend, "is_available", lambda: False)()
    count = backend.device_count() if available and hasattr(backend, "device_count") else int(available)
    if not available or (device.index is not None and device.index >= count):
        raise ValueError(f"map_location={map_location!r}: no such device here ({count} {device.type} device(s) "
                         f"available); use 'cpu', 'on_device' or an existing device")
    return device


def _to_device(tree_value, device: torch.device | None):
    if device is None:
        return tree_value
    if isinstance(tree_value, torch.Tensor):
        return tree_value.to(device)
    if isinstance(tree_value, dict):
        return {k: _to_device(v, device) for k, v in tree_value.items()}
    if isinstance(tree_value, (list, tuple)):
        return type(tree_value)(_to_device(v, device) for v in tree_value)
    return tree_value


def _local_rank_env() -> list[int] | None:
    """[LOCAL_RANK, LOCAL_WORLD_SIZE] as torchrun sets them, or None."""
    try:
        return [int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])]
    except (KeyError, ValueError):
        return None


def _node_groups(nodes: list) -> list[list[int]]:
    """The ranks of each node (contiguous, as torchrun numbers them), from every rank's [LOCAL_RANK, LOCAL_WORLD_SIZE].

    Without those variables on any rank, all ranks form one node.
    """
    world = len(nodes)
    if all(n is None for n in nodes):
        return [list(range(world))]
    groups: dict[int, list[int]] = {}
    for rank, node in enumerate(nodes):
        if node is None or not 0 <= node[0] < node[1]:
            raise CheckpointSaveError(f"save_on_each_node=True needs LOCAL_RANK and LOCAL_WORLD_SIZE (as torchrun sets "
                                      f"them) on every rank; rank {rank} has {node}")
        groups.setdefault(rank - node[0], []).append(rank)
    for leader, ranks in groups.items():
        if len(ranks) != nodes[leader][1] or any(nodes[r][1] != nodes[leader][1] for r in ranks):
            raise CheckpointSaveError(f"save_on_each_node=True: ranks {ranks} (local rank 0 is rank {leader}) do not "
                                      f"form a node of LOCAL_WORLD_SIZE={nodes[leader][1]}; LOCAL_RANK/LOCAL_WORLD_SIZE "
                                      "are inconsistent")
    return list(groups.values())


def _by_folder(finals: list[str], ranks) -> str:
    folders: dict[str, list[int]] = {}
    for r in ranks:
        folders.setdefault(finals[r], []).append(r)
    return "; ".join(f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {f}" for f, rs in folders.items())


def _check_present(staging: str, records: list[FileRecord]) -> None:
    """Never commit a manifest that lists a file the folder lacks (a rank wrote elsewhere)."""
    missing = []
    for rec in records:
        try:
            if os.stat(os.path.join(staging, rec.path)).st_size != rec.size:
                missing.append(f"{rec.path} (size differs)")
        except FileNotFoundError:
            missing.append(rec.path)
    if missing:
        raise CheckpointSaveError(f"{staging} lacks {len(missing)} file(s) the ranks reported writing, e.g. "
                                  f"{missing[:4]}: they wrote into another folder; refusing to commit")


def _check_holds_rank(path: str, manifest: Manifest, rank: int, world_size: int) -> None:
    if manifest.ranks is not None and manifest.world_size == world_size and rank not in manifest.ranks:
        raise IncompatibleCheckpointError(
            f"{path}: this folder holds ranks {manifest.ranks} only (saved with save_on_each_node=True, one folder "
            f"per node); rank {rank} must load the folder of its own node")


def _raise_failures(errors: list, what: str) -> None:
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if failed:
        raise CheckpointSaveError(f"{what}: " + "; ".join(f"rank {r}: {e}" for r, e in failed))
