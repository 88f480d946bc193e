"""The uninterrupted reference run: run it (once, or twice to check it is reproducible) and cache it.

Cache: ``$HARNESS_CACHE_DIR/<key>/`` (default ``~/.cache/resume-harness/baselines/<key>/``), holding
``baseline{i}/trace`` (and the logs) of each uninterrupted run, ``meta.json`` and ``artefacts.json``.
The files the baselines wrote in their run folders (checkpoints, exported artefacts) are deleted once
indexed: ``artefacts.json`` holds the first run's artefact index (``harness.oracle.artefacts``:
digests and stats per tensor, no values) and, with two runs, what differs between them (``unstable``,
not judged). The key is the sha256 of everything that defines the run: the target's
source files, its arguments, nproc, backend, the number of runs, the relevant environment
(PYTHONHASHSEED, OMP_NUM_THREADS, CUBLAS_WORKSPACE_CONFIG, HARNESS_* except paths), and the python,
torch, numpy and harness versions plus the harness's own sources.

Concurrency (pytest -n auto): a per-key ``flock`` on ``.<key>.lock`` makes one process compute a
missing baseline while the others wait for it; the entry is built in a temporary folder and renamed
into place, so a reader never sees half an entry; the lock file is removed once the entry exists.

Clearing the cache: delete the folder (``rm -rf ~/.cache/resume-harness/baselines``, or
``$HARNESS_CACHE_DIR``), or pass ``--no-cache`` to run the baseline again without reading or
writing it. Entries never go stale silently: any change to the key's inputs makes a new key.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness import run_env
from harness.engine.jobs import RunFolder, attempt_spec, failure_message
from harness.engine.monitor import AttemptMonitor
from harness.engine.spec import TrialSpec
from harness.engine.target import Target
from harness.fingerprint import versions
from harness.launch import Launcher
from harness.launch.spec import base_env, log_tail
from harness.trace_schema import AUTO_SAVE_POINTS, Point

KEY_ENV = ("PYTHONHASHSEED", "OMP_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
# HARNESS_* variables that name places or are set per run by the harness: not part of the key.
NOT_KEY_ENV = run_env.PER_LAUNCH
CACHE_FORMAT = 2  # 2: artefacts.json (the run folder's artefact index)
ARTEFACTS_FILE = "artefacts.json"


def cache_root() -> str:
    return os.environ.get(run_env.CACHE_DIR) or os.path.join(
        os.path.expanduser("~"), ".cache", "resume-harness", "baselines")


def _harness_sources() -> list[tuple[str, str]]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [(os.path.relpath(os.path.join(folder, n), root), os.path.join(folder, n))
                  for n in sorted(names) if n.endswith(".py")]
    return files


def key_inputs(target: Target, *, nproc: int, backend: str, script_args, runs: int, auto: bool = False,
               strategy: str | None = None) -> dict:
    """Everything the cache key covers, as a JSON object (stored in meta.json for inspection)."""
    env = base_env()
    return {
        "format": CACHE_FORMAT,
        "target": target.module or os.path.basename(target.script),
        "args": list(script_args),
        "nproc": nproc,
        "backend": backend,
        "runs": runs,
        "auto": bool(auto),
        **({"strategy": strategy} if strategy is not None else {}),
        "env": {k: env.get(k) for k in KEY_ENV}
               | {k: v for k, v in sorted(os.environ.items())
                  if k.startswith("HARNESS_") and k not in NOT_KEY_ENV and not k.endswith(("_DIR", "_PATH"))},
        "versions": versions(),
    }


def baseline_key(target: Target, *, nproc: int, backend: str, script_args, runs: int, auto: bool = False,
                 strategy: str | None = None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(key_inputs(target, nproc=nproc, backend=backend, script_args=script_args, runs=runs,
                                   auto=auto, strategy=strategy),
                        sort_keys=True).encode())
    _hash_files(h, "target", target.source_files())  # read each time: users edit their script between runs
    h.update(_harness_digest())
    return h.hexdigest()[:32]


def _hash_files(h, group: str, files) -> None:
    for name, path in files:
        with open(path, "rb") as f:
            data = f.read()
        h.update(f"\0{group}:{name}:{len(data)}\0".encode())
        h.update(data)


@functools.cache
def _harness_digest() -> bytes:
    """The harness's own sources, hashed once per process (fuzz and certify ask once per trial)."""
    h = hashlib.sha256()
    _hash_files(h, "harness", _harness_sources())
    return h.digest()


@dataclass
class Baseline:
    root: str
    trace_dirs: list[str] = field(default_factory=list)
    last_step: int = 0
    cached: bool = False
    seconds: float = 0.0
    error: str | None = None  # why the baseline failed
    log_tail: str | None = None
    repro: object = None  # Comparison of run 0 vs run 1, when two runs were made
    no_probe: bool = False  # the script recorded no step and no finish through harness.probe: use auto mode
    # The artefact index of the first run's folder (harness.oracle.artefacts.index_artefacts), None when
    # there is none (artefacts_note says why: artefacts are then not judged)
    artefacts: dict | None = None
    artefacts_unstable: frozenset = frozenset()  # unstable_between the two runs: "<path>" or "<path>::<key>"
    artefacts_note: str | None = None
    _trace: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def trace_dir(self) -> str:
        return self.trace_dirs[0]

    def trace(self):
        """The first run's Trace, read once (a cached entry is shared by the trials of one process)."""
        if self._trace is None:
            from harness.oracle import load_trace

            self._trace = load_trace(self.trace_dir)
        return self._trace


_PROBE_IMPORT = re.compile(r"^\s*(from\s+harness(\.\w+)*\s+import\s[^\n]*\bprobe\b|import\s+harness\.probe"
                           r"|from\s+harness\.probe\s+import|from\s+harness\.checkpoint)", re.M)


def imports_probe(target: Target) -> bool:
    """Whether a target may record through harness.probe: a built-in scenario, or a script that imports the
    probe or the reference checkpointer. Any other script goes to auto mode without a first plain run."""
    if target.builtin:
        return True
    try:
        with open(target.script, encoding="utf-8", errors="replace") as f:
            return bool(_PROBE_IMPORT.search(f.read()))
    except OSError:
        return True


@contextmanager
def _locked(path: str):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# Complete cache entries read by this process: an entry never changes once renamed into place, so
# fuzz and certify read its files and its trace once, not once per trial.
_LOADED: dict[str, Baseline] = {}


def _load(root: str) -> Baseline | None:
    """A complete cache entry, or None."""
    known = _LOADED.get(root)
    if known is not None and os.path.isfile(os.path.join(root, "meta.json")):  # not deleted since
        return known
    baseline = _read_entry(root)
    if baseline is not None:
        _LOADED[root] = baseline
    return baseline


def _read_entry(root: str) -> Baseline | None:
    try:
        with open(os.path.join(root, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    dirs = [RunFolder(os.path.join(root, f"baseline{i}")).trace_dir for i in range(meta["runs"])]
    if not all(os.path.isdir(d) for d in dirs):
        return None
    baseline = Baseline(root=root, trace_dirs=dirs, last_step=meta["last_step"], cached=True)
    _load_artefacts(baseline)
    if len(dirs) > 1 and not meta["reproducible"]:
        from harness.oracle import compare_runs

        baseline.repro = compare_runs(dirs[0], dirs[1])
    return baseline


def _run_baselines(root: str, target: Target, spec: TrialSpec, *, runs: int, auto: bool, launcher: Launcher,
                   progress) -> Baseline:
    """Run the uninterrupted baseline of ``spec`` ``runs`` times under ``root`` and check they agree."""
    from harness.oracle import compare_runs, load_trace

    t0 = time.monotonic()
    baseline = Baseline(root=root)
    traces = []
    indexes: list[tuple[dict | None, str | None]] = []  # (index, why there is none) of each run
    for i in range(runs):
        folder = RunFolder(os.path.join(root, f"baseline{i}"))
        progress(f"baseline run {i + 1}/{runs} ...")
        monitor = AttemptMonitor(folder.trace_dir, spec.nproc, 0, stall_s=spec.timeout_s,
                                 say=lambda line, i=i: progress(f"baseline run {i + 1}/{runs}: {line}"))
        result = launcher.launch(attempt_spec(target, folder, spec, role="baseline", attempt=0, fault=None,
                                              watch=monitor.watch, auto=auto))
        indexes.append(_index_run(folder.run_dir))  # what it left there, before it goes
        shutil.rmtree(folder.run_dir, ignore_errors=True)  # its checkpoints are not needed
        why = failure_message(result, spec.timeout_s)
        trace = load_trace(folder.trace_dir)
        auto_errors = [e.info.get("message") for e in trace.events("auto.error") if isinstance(e.info, dict)]
        no_steps = not any(trace.steps(r) or trace.finished(r) for r in trace.ranks)
        if auto_errors:
            why = f"auto mode: {auto_errors[0]}"
        elif why is None and auto and no_steps:
            why = ("auto mode saw no training step: the script never called step() on a torch.optim.Optimizer "
                   "(auto mode counts steps with torch's optimizer step hooks); call harness.probe.step yourself")
        elif why is None and no_steps:
            baseline.no_probe = True  # the caller may retry in auto mode
        if why is None:
            missing = [r for r in range(spec.nproc) if not trace.finished(r)]
            if no_steps:
                why = ("recorded no trace: does the script call harness.probe (probe.step after each optimizer "
                       "step, probe.finish at the end)?")
            elif missing:
                why = f"rank {missing[0]} exited 0 without calling probe.finish()"
        if why is not None:
            progress(f"baseline run {i + 1}/{runs}: failed")
            failed = result.first_failure or result.exits[0]
            baseline.error = f"run {i + 1}: {why}"
            baseline.log_tail = log_tail(failed.log_path)
            baseline.trace_dirs.append(folder.trace_dir)
            return baseline
        baseline.trace_dirs.append(folder.trace_dir)
        traces.append(trace)
        baseline.last_step = trace.last_step()
        progress(f"baseline run {i + 1}/{runs}: {baseline.last_step} steps in {result.wall_s:.1f} s")
    if runs > 1:
        baseline.repro = compare_runs(traces[0], traces[1])
    _store_artefacts(baseline, root, indexes)
    baseline.seconds = time.monotonic() - t0
    return baseline


def get_baseline(target: Target, spec: TrialSpec, *, runs: int, auto: bool, launcher: Launcher, use_cache: bool,
                 runs_dir: str, progress) -> Baseline:
    """The cached baseline of ``spec`` (its world size, backend, strategy, script arguments and timeout), or a
    new one (cached when it succeeded and ``use_cache``).

    Without the cache the baselines are run under ``runs_dir``. auto: record in auto mode (part of the
    key). A script that records nothing through the probe gets ``no_probe`` (remembered in the cache
    as ``<key>.noprobe``, so the next run goes to auto mode at once).
    """
    kwargs = dict(nproc=spec.nproc, backend=spec.backend, script_args=spec.script_args, runs=runs, auto=auto,
                  strategy=spec.strategy)
    if not use_cache:
        return _run_baselines(runs_dir, target, spec, runs=runs, auto=auto, launcher=launcher, progress=progress)
    key = baseline_key(target, **kwargs)
    root = cache_root()
    final = os.path.join(root, key)
    if not kwargs.get("auto") and os.path.exists(final + ".noprobe"):  # known: it calls no probe
        return Baseline(root=final, cached=True, no_probe=True, error="recorded no trace through harness.probe")
    cached = _load(final)
    if cached is not None:
        return cached
    os.makedirs(root, exist_ok=True)
    lock = os.path.join(root, f".{key}.lock")
    with _locked(lock):
        cached = _load(final)  # another process may have made it while we waited
        if cached is not None:
            _unlink(lock)
            return cached
        try:
            built = _build(final, key, target, spec, runs_dir=runs_dir, launcher=launcher, progress=progress,
                           kwargs=kwargs)
            if built.no_probe:
                open(final + ".noprobe", "w").close()
            return built
        finally:
            # The entry exists (or failed and was moved to runs_dir): the lock has done its job. A process
            # still waiting on the unlinked file finds the entry when it gets the lock.
            _unlink(lock)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _build(final: str, key: str, target: Target, spec: TrialSpec, *, runs_dir, launcher, progress,
           kwargs) -> Baseline:
    root = os.path.dirname(final)
    tmp = os.path.join(root, f".tmp-{key}-{uuid.uuid4().hex[:8]}")
    try:
        baseline = _run_baselines(tmp, target, spec, runs=kwargs["runs"], auto=kwargs["auto"], launcher=launcher,
                                  progress=progress)
    except BaseException:  # interrupted or broken: leave no half entry behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if baseline.error is not None:
        # Keep the failed run's files where the user can read them: move them to runs_dir.
        shutil.rmtree(runs_dir, ignore_errors=True)
        shutil.move(tmp, runs_dir)
        baseline.trace_dirs = [d.replace(tmp, runs_dir, 1) for d in baseline.trace_dirs]
        baseline.error = baseline.error.replace(tmp, runs_dir)  # its log path: where the log is now
        baseline.root = runs_dir
        return baseline
    meta = {"key": key, "inputs": key_inputs(target, **kwargs), "runs": kwargs["runs"], "last_step": baseline.last_step,
            "reproducible": baseline.repro is None or baseline.repro.first is None,
            "seconds": baseline.seconds, "created": time.time()}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    try:
        os.rename(tmp, final)
    except OSError:  # made by a process that did not take the lock (an older harness): use it
        shutil.rmtree(tmp, ignore_errors=True)
        return _load(final) or baseline
    baseline.root = final
    baseline.trace_dirs = [d.replace(tmp, final, 1) for d in baseline.trace_dirs]
    return baseline


def _index_run(run_dir: str) -> tuple[dict | None, str | None]:
    """The artefact index of a baseline run's folder, or (None, why) when it cannot be made."""
    from harness.oracle.artefacts import ArtefactError, index_artefacts

    try:
        return index_artefacts(run_dir), None
    except (ArtefactError, OSError) as e:
        return None, f"the baseline's run folder could not be indexed: {e}"


def _store_artefacts(baseline: Baseline, root: str, indexes: list) -> None:
    """Keep the first run's artefact index (and, with two runs, what differs between them) in ``root``."""
    from harness.oracle.artefacts import unstable_between

    (index, why), others = indexes[0], indexes[1:]
    if index is None:
        baseline.artefacts_note = why
        return
    unstable: set = set()
    for other, other_why in others:
        if other is None:  # the second run cannot say what is stable: judge nothing rather than guess
            baseline.artefacts_note = other_why
            return
        unstable |= unstable_between(index, other)
    with open(os.path.join(root, ARTEFACTS_FILE), "w") as f:
        json.dump({"runs": len(indexes), "index": index, "unstable": sorted(unstable)}, f)
    baseline.artefacts, baseline.artefacts_unstable = index, frozenset(unstable)


def _load_artefacts(baseline: Baseline) -> None:
    """``artefacts.json`` of a cache entry into ``baseline`` (an entry without one: artefacts not judged)."""
    path = os.path.join(baseline.root, ARTEFACTS_FILE)
    try:
        with open(path) as f:
            data = json.load(f)
        index, unstable = data["index"], data["unstable"]
    except FileNotFoundError:
        baseline.artefacts_note = (f"the cached baseline has no artefact index ({path}): its artefacts are not "
                                   "judged; run with --no-cache to make one")
        return
    except (OSError, ValueError, KeyError, TypeError) as e:
        baseline.artefacts_note = f"{path}: unreadable artefact index ({e}); its artefacts are not judged"
        return
    baseline.artefacts, baseline.artefacts_unstable = index, frozenset(unstable)


# -- the mode and the profile every command reads from a baseline ------------------------------------

#: The progress line of a script tested without probe calls (harness run, fuzz, certify say the same).
AUTO_MODE_LINE = "no probe calls: testing in auto mode (as harness run --auto)"
#: The save calls auto mode records as fault points, each before the call (harness.probe.auto); a
#: ``checkpoint.committed`` event with ``info.via`` follows each one that returned.
#: Events no fault can fire at: recorded by auto mode itself, or only after a resume.
_NOT_POINTS = (Point.LOADED,)
_NOT_POINT_PREFIXES = ("auto.",)


def baseline_with_mode(target: Target, spec: TrialSpec, *, runs: int, launcher: Launcher, use_cache: bool,
                       runs_dir: str, progress) -> tuple[Baseline, bool]:
    """The baseline of ``spec`` (on ``target``, resolved) and whether it is recorded in auto mode, by
    ``harness run``'s rule; ``harness run``, ``harness fuzz`` and ``harness certify`` all take it from here.

    spec.auto=True: auto mode (``--auto``); False: the probe only; None: a script that does not import the
    probe goes to auto mode at once (``imports_probe``, so no probe-mode run writes into the user's folder),
    one that imports it but records nothing through it after its first baseline run. Fuzz and certify
    then pass the mode to every trial, so all of them judge the script as ``harness run`` would.
    """
    auto = spec.auto

    def of(mode: bool, say=None) -> Baseline:
        return get_baseline(target, spec, runs=runs, auto=mode, launcher=launcher, use_cache=use_cache,
                            runs_dir=runs_dir, progress=say or progress)

    if auto is None and not imports_probe(target):
        progress(AUTO_MODE_LINE)  # said plainly: it is no error that the script has no probe calls
        return of(True), True
    if auto is not None:
        return of(bool(auto)), bool(auto)
    held: list[str] = []  # "baseline run 1/2: failed" of a probe-mode run may only mean: no probe calls

    def hold(line: str) -> None:
        (held.append if line.startswith("baseline run") and line.endswith(": failed") else progress)(line)

    baseline = of(False, hold)
    if baseline.no_probe:
        progress(AUTO_MODE_LINE)
        return of(True), True
    for line in held:  # a real failure: shown as it happened
        progress(line)
    return baseline, False


def _harness_own_file(event) -> bool:
    """The final-state file the harness writes itself (``trace/final/rank{r}.safetensors``) is no save of the
    script's, though auto mode sees its ``save_file`` call: no fault is planned there."""
    path = event.info.get("path") if isinstance(event.info, dict) else None
    if not isinstance(path, str):
        return False
    parts = os.path.normpath(path).split(os.sep)
    return len(parts) >= 3 and parts[-3] == "trace" and parts[-2] == "final"


@dataclass(frozen=True)
class BaselineProfile:
    """What an uninterrupted run did, as the fault planners read it (``harness fuzz``'s space, ``harness
    certify``'s schedule): the same checkpoints and points, by the oracle's rules.

    ``complete``: the steps whose checkpoint is complete (``Trace.complete_checkpoints(0)``: an auto-mode
    save of step s only once every rank trained past s). ``points``: point -> rank -> the step of each
    occurrence in attempt 0 (the ``probe.point`` names, the reference checkpointer's, and in auto mode
    ``torch.save``, ``safetensors.save_file``, ``dcp.save``, ``deepspeed.save_checkpoint`` before each call
    and ``checkpoint.committed`` after it), without events no fault fires at. ``early``: point -> rank ->
    how many of its first occurrences come before the first complete checkpoint is complete on that rank
    (a kill there has nothing to resume from). ``save_order``: save-call point -> rank -> the position of
    each occurrence among the save calls of its step (2 and more: a kill between two files of one
    checkpoint)."""

    auto: bool
    last_step: int
    complete: tuple[int, ...] = ()
    points: dict = field(default_factory=dict)
    early: dict = field(default_factory=dict)
    save_order: dict = field(default_factory=dict)

    @property
    def first_complete(self) -> int | None:
        return min(self.complete, default=None)

    def counts(self) -> dict[str, int]:
        """Point -> the most occurrences one rank reached (what a fault's occurrence may be)."""
        return {name: max(map(len, ranks.values())) for name, ranks in self.points.items()}

    def early_occurrences(self, point: str, rank) -> int:
        """How many first occurrences of ``point`` on ``rank`` (``"all"``: on any rank) come before the first
        complete checkpoint."""
        per = self.early.get(point, {})
        if rank == "all" or rank not in per:
            return max(per.values(), default=0)
        return per[rank]

    def before_first_checkpoint(self, fault) -> bool:
        """Whether a fault as the first of a plan fires before any checkpoint is complete, as far as the
        baseline tells: a kill at step s fires before the save of step s, so s <= the first complete step."""
        first = self.first_complete
        if fault.step is not None:
            return first is None or fault.step <= first
        if fault.point is None:
            return False
        return fault.occurrence <= self.early_occurrences(fault.point, fault.rank)

    @classmethod
    def from_trace(cls, trace, *, auto: bool = False) -> "BaselineProfile":
        from harness.trace_schema import EventRow, FinishRow, StepRow

        # the oracle's rule, without the steps only the harness's own final-state write "saved"
        saved = {e.event_step for e in trace.events(Point.COMMITTED) if e.attempt == 0 and not _harness_own_file(e)}
        complete = tuple(sorted(s for s in trace.complete_checkpoints(0) if isinstance(s, int) and s in saved))
        first = min(complete, default=None)
        points: dict = {}
        early: dict = {}
        save_order: dict = {}
        for rank in trace.ranks:
            rows = [row for row in trace.rows(rank) if row.attempt == 0]
            done = first is None  # no checkpoint ever complete: every occurrence is early
            per_step: dict = {}
            for row in rows:
                if first is not None and not done and (
                        (isinstance(row, StepRow) and row.step > first) or isinstance(row, FinishRow)):
                    done = True  # this rank trained past the first complete checkpoint
                if not isinstance(row, EventRow) or row.name in _NOT_POINTS or \
                        row.name.startswith(_NOT_POINT_PREFIXES) or _harness_own_file(row):
                    continue
                via = row.info.get("via") if isinstance(row.info, dict) else None
                if (first is not None and not done and row.name == Point.COMMITTED and via is None
                        and row.event_step == first):
                    done = True  # the reference checkpointer's own atomic commit: complete once it returned
                points.setdefault(row.name, {}).setdefault(rank, []).append(row.event_step)
                if not done:
                    early.setdefault(row.name, {}).setdefault(rank, 0)
                    early[row.name][rank] += 1
                if row.name in AUTO_SAVE_POINTS:
                    per_step[row.step] = per_step.get(row.step, 0) + 1
                    save_order.setdefault(row.name, {}).setdefault(rank, []).append(per_step[row.step])
        for name, ranks in points.items():
            for rank in ranks:
                early.setdefault(name, {}).setdefault(rank, 0)
        freeze = lambda d: {n: {r: tuple(v) for r, v in ranks.items()} for n, ranks in d.items()}  # noqa: E731
        return cls(auto=auto, last_step=trace.last_step(), complete=complete, points=freeze(points), early=early,
                   save_order=freeze(save_order))
