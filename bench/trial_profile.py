"""Benchmark: where the time of a warm trial goes (issue #19, item 1).

    python bench/trial_profile.py [--trials 10] [--kill 12] [--nproc 2] [--root DIR] [--also-root /dev/shm]

One process, one warm ForkServerLauncher (as `fuzz`, `certify` and the pytest plugin share one), the
default scenario, plan `--kill` (default 12: SIGKILL rank 0 at step 12, then a resume from step 10).
After one warm-up trial of each variant (which also caches the baselines), --trials rounds, each
running the variants below side by side, interleaved (their order alternating):

  plain      harness.engine.run("default", plan=KILL, launcher=<the shared launcher>): what a warm trial
             costs; its trace rows give a coarse breakdown
  profiled   the same trial of a small wrapper script (written into the bench's folder) that imports the
             default scenario and runs it with timing probes, monkeypatched in the rank only:
             init_process_group, new_group, destroy_process_group, the checkpointer's save_state /
             load_state / prepare / all_gather_json, os.fsync, the checkpoint files' xxh3 hashing,
             probe.step / point / finish, the DDP wrap, forward, backward, AdamW.step, the DataLoader
             iterator's __next__ and the interpreter's exit functions. Each rank appends JSON lines to
             OUT/profile/rank{r}.attempt{a}.jsonl (one os.write each: a SIGKILLed rank keeps its lines).
             The probes are active only in a trial's ranks (HARNESS_ROLE=trial, BENCH_TRIAL_PROFILE=1);
             its baseline runs the default scenario untouched.
  plain, per-launch store   the plain trial through a ForkServerLauncher(store="per-launch"): a store
             process forked for each launch, as before the zygote kept a store host (--no-old: left out)
  profiled@run on tmpfs     the profiled trial with only run/ (the checkpoints) on tmpfs, in a
             harness.launch.scratch folder symlinked as OUT/run (what `--scratch tmpfs` does; --no-scratch)
  --also-root DIR   the profiled trial again with its whole folder (trace, checkpoints) under DIR

In this process (never in the harness's files) the bench wraps the fork server's launch call to note when
each launch of a trial begins and returns; RunResult.timings gives the baseline lookup, the attempts
(trial_s) and the oracle (compare_s). The breakdown of a profiled trial follows the critical path of
each launch, on the wall clock (time.time(), as the trace rows):

  launch     harness calls the zygote -> the last rank runs the target's first line (store, fork, runpy)
  start-up   -> the last rank enters init_process_group (the scenario's imports, arguments; the set-up
             of the bench's probes is shown apart)
  rendezvous -> the last rank leaves init_process_group
  script     -> the last rank enters destroy_process_group (the killed attempt: its fault row's time),
             split by rank 0's own (exclusive) time in each wrapped call: rank 0 writes the checkpoint
             (7 files to rank 1's 2) and is the rank killed; what is not in a wrapped call (set-up, the
             scheduler, waits outside the collectives, ...) is "the rest"
  teardown   destroy_process_group, the interpreter's exit (threads, atexit), then the process exit and
             the reap until the launch returns to the harness (the killed attempt: from the kill)

The profiled variant's wall time and coarse breakdown are printed beside the plain one's, so that what
the probes themselves cost is seen. Nothing is asserted about speed: it prints medians, min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from _folders import run_folder_on  # bench/, the script's own folder

# The target the profiled variant launches. Without BENCH_TRIAL_PROFILE=1 in a trial's rank it is the
# default scenario, unchanged (so its baseline is the default scenario's).
WRAPPER = r'''"""The default scenario with timing probes: written and launched by bench/trial_profile.py."""

import time

ENTRY = time.time()

import os  # noqa: E402

from harness import probe  # noqa: E402  (an instrumented target: the harness records through the probe)
from harness.scenarios.default import main  # noqa: E402


IMPORTED = time.time()

if os.environ.get("BENCH_TRIAL_PROFILE") == "1" and os.environ.get("HARNESS_ROLE") == "trial":
    import atexit
    import json
    import threading

    _folder = os.path.join(os.path.dirname(os.environ["HARNESS_TRACE_DIR"]), "profile")
    os.makedirs(_folder, exist_ok=True)
    _fd = os.open(os.path.join(_folder, f"rank{os.environ.get('RANK', '0')}.attempt"
                                        f"{os.environ.get('HARNESS_ATTEMPT', '0')}.jsonl"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _main_thread = threading.get_ident()
    _excl: dict = {}   # "top-level call/call" -> exclusive seconds, cumulative
    _calls: dict = {}  # the same keys -> number of calls
    _stack: list = []  # [name, seconds of the calls nested in it]
    _EMIT = {"init_process_group", "destroy_process_group", "exitfuncs", "save_state", "load_state", "wrap",
             "probe.step", "probe.finish"}

    def _emit(**row):
        os.write(_fd, (json.dumps(row) + "\n").encode())

    def _timed(name, fn):
        def timed(*args, **kwargs):
            if threading.get_ident() != _main_thread:
                return fn(*args, **kwargs)
            top = _stack[0][0] if _stack else name
            frame = [name, 0.0]
            _stack.append(frame)
            t0, p0 = time.time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - p0
                _stack.pop()
                key = f"{top}/{name}"
                _excl[key] = _excl.get(key, 0.0) + dt - frame[1]
                _calls[key] = _calls.get(key, 0) + 1
                if _stack:
                    _stack[-1][1] += dt
                elif name in _EMIT:
                    _emit(op=name, t0=t0, t1=time.time(), excl=_excl, calls=_calls)
        return timed

    class _Hasher:
        __slots__ = ("h",)

        def __init__(self, *args):
            self.h = _xxhash.xxh3_128(*args)

        def update(self, data):
            _timed("hash", self.h.update)(data)

        def hexdigest(self):
            return self.h.hexdigest()

    class _TimedXXHash:
        xxh3_128 = _Hasher

        def __init__(self):
            self.xxh3_128_hexdigest = _timed("hash", _xxhash.xxh3_128_hexdigest)

        def __getattr__(self, name):
            return getattr(_xxhash, name)

    import torch
    import torch.distributed as dist
    import xxhash as _xxhash
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    import harness.checkpoint.files
    import harness.probe.api
    from harness.checkpoint import Checkpointer
    from harness.checkpoint.comm import Comm
    from harness.scenarios._common import Scenario

    _emit(op="entry", t0=ENTRY, t1=ENTRY)
    _emit(op="imported", t0=IMPORTED, t1=IMPORTED)  # the scenario's imports, which a plain trial has too
    for _name in ("init_process_group", "new_group", "destroy_process_group"):
        setattr(dist, _name, _timed(_name, getattr(dist, _name)))
    os.fsync = _timed("fsync", os.fsync)
    harness.checkpoint.files.xxhash = _TimedXXHash()
    Comm.all_gather_json = _timed("all_gather_json", Comm.all_gather_json)
    Checkpointer.save_state = _timed("save_state", Checkpointer.save_state)
    Checkpointer.load_state = _timed("load_state", Checkpointer.load_state)
    Scenario.wrap = _timed("wrap", Scenario.wrap)
    Scenario.forward_loss = _timed("forward", Scenario.forward_loss)
    Scenario._backward = staticmethod(_timed("backward", Scenario._backward))
    Checkpointer.prepare = _timed("prepare", Checkpointer.prepare)
    torch.optim.AdamW.step = _timed("optimizer.step", torch.optim.AdamW.step)
    _BaseDataLoaderIter.__next__ = _timed("data", _BaseDataLoaderIter.__next__)
    for _name in ("step", "point", "finish"):
        setattr(probe, _name, _timed(f"probe.{_name}", getattr(probe, _name)))
    harness.probe.api._guard_gloo_teardown = _timed("finish.barrier", harness.probe.api._guard_gloo_teardown)
    atexit._run_exitfuncs = _timed("exitfuncs", atexit._run_exitfuncs)
    _emit(op="patched", t0=time.time(), t1=time.time())

main()
'''

# The rows of the table: (label, how the per-trial value is computed, see breakdown()).
PARTS = [
    ("launch: fork until the target's first line", "launch"),
    ("rank start-up: the scenario's imports, arguments", "startup"),
    ("(the bench's own probes: their set-up in the rank)", "probe_setup"),
    ("rendezvous: init_process_group", "rendezvous"),
    ("rendezvous: the checkpointer's gloo group (new_group)", "new_group"),
    ("model: DDP wrap + optimizer", "wrap"),
    ("checkpoint load (the resume; a check on a fresh start)", "load"),
    ("saves: fsync", "save_fsync"),
    ("saves: xxh3 of the files", "save_hash"),
    ("saves: the checkpointer's collectives (all_gather_json: waits)", "save_comm"),
    ("saves: the rest (snapshot, write, manifest, rename, rotate)", "save_rest"),
    ("digests: probe.step", "probe_step"),
    ("probe: points + finish (final-state file)", "probe_other"),
    ("checkpointer: prepare (pins DDP's bucket layout, wraps the loader)", "prepare"),
    ("training: data loading (batches, with the probe's evidence)", "data"),
    ("training: forward", "forward"),
    ("training: backward (with DDP's all-reduce: waits for peers)", "backward"),
    ("training: optimizer step", "opt"),
    ("script: the rest (setup, scheduler, finish barrier, ...)", "steps"),
    ("teardown: destroy_process_group", "destroy"),
    ("teardown: interpreter exit (threads, atexit)", "exit"),
    ("teardown: process exit + reap until the launch returns", "reap"),
    ("killed attempt: from the kill until the launch returns", "kill_reap"),
    ("harness between launches (trace load, monitor)", "between"),
    ("oracle: compare + assess (compare_s)", "oracle"),
    ("baseline lookup, cached (baseline_s)", "baseline"),
    ("harness, the rest (baseline trace, plan, result.json)", "harness_rest"),
]

LAUNCHES: list[dict] = []  # the launches of the trial in flight: attempt, t0 (call), t1 (return), wall clock


def patch_launcher() -> None:
    """Note when each fork-server launch begins and returns (in this process only)."""
    from harness.launch import forkserver

    original = forkserver._Zygote.launch

    def launch(self, spec, env):
        rec = {"attempt": spec.attempt, "t0": time.time()}
        if env.get("HARNESS_ROLE") == "trial":  # not a baseline's run
            LAUNCHES.append(rec)
        try:
            return original(self, spec, env)
        finally:
            rec["t1"] = time.time()

    forkserver._Zygote.launch = launch


def read_jsonl(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def trace_rows(out: str, nproc: int) -> list[dict]:
    return [row for r in range(nproc) for row in read_jsonl(os.path.join(out, "trace", f"rank{r}.jsonl"))]


def coarse(out: str, nproc: int, launches: list[dict]) -> dict:
    """From the trace rows alone: launch -> first probe row (start), -> finish or fault row, -> returned."""
    rows = trace_rows(out, nproc)
    parts = {"to_start": 0.0, "start_to_end": 0.0, "end_to_return": 0.0}
    for launch in launches:
        a = launch["attempt"]
        starts = [row["time"] for row in rows if row["kind"] == "start" and row["attempt"] == a]
        ends = [row["time"] for row in rows if row["kind"] in ("finish", "fault") and row["attempt"] == a]
        if not starts or not ends:
            raise SystemExit(f"{out}: attempt {a} has no start or no finish/fault row in its trace")
        faults = [row["time"] for row in rows if row["kind"] == "fault" and row["attempt"] == a]
        end = min(faults) if faults else max(ends)
        parts["to_start"] += max(starts) - launch["t0"]
        parts["start_to_end"] += end - max(starts)
        parts["end_to_return"] += launch["t1"] - end
    return parts


def breakdown(out: str, nproc: int, launches: list[dict], result, wall: float) -> dict:
    """The parts of one profiled trial, in seconds (PARTS)."""
    rows = trace_rows(out, nproc)
    p = {key: 0.0 for _, key in PARTS}
    for launch in launches:
        a = launch["attempt"]
        ranks = [read_jsonl(os.path.join(out, "profile", f"rank{r}.attempt{a}.jsonl")) for r in range(nproc)]

        def last(op: str, field: str, ranks=ranks) -> float:
            times = [line[field] for lines in ranks for line in lines if line["op"] == op]
            if len(times) < nproc:
                raise SystemExit(f"{out}: attempt {a}: {op} not recorded by every rank")
            return max(times)

        entry, init0, init1 = last("entry", "t0"), last("init_process_group", "t0"), last("init_process_group", "t1")
        imported, patched = last("imported", "t0"), last("patched", "t0")
        p["launch"] += entry - launch["t0"]
        p["startup"] += (imported - entry) + (init0 - patched)
        p["probe_setup"] += patched - imported
        p["rendezvous"] += init1 - init0
        faults = [row["time"] for row in rows if row["kind"] == "fault" and row["attempt"] == a]
        if faults:
            end = min(faults)
            p["kill_reap"] += launch["t1"] - end
        else:
            end = last("destroy_process_group", "t0")
            destroyed, exited = last("destroy_process_group", "t1"), last("exitfuncs", "t1")
            p["destroy"] += destroyed - end
            p["exit"] += exited - destroyed
            p["reap"] += launch["t1"] - exited
        # rank 0's own time in each call (exclusive of the calls nested in it), up to its last line; the
        # init_process_group, destroy_process_group and exit-function calls are outside this window
        excl = ranks[0][-1].get("excl", {}) if ranks[0] else {}
        inside = {key: 0.0 for key in ("new_group", "wrap", "prepare", "load", "save_fsync", "save_hash", "save_comm",
                                       "save_rest", "probe_step", "probe_other", "data", "forward", "backward",
                                       "opt")}
        training = {"data": "data", "forward": "forward", "backward": "backward", "optimizer.step": "opt",
                    "wrap": "wrap", "prepare": "prepare"}
        for key, secs in excl.items():
            top, name = key.split("/")
            if name == "new_group":
                inside["new_group"] += secs
            elif name == "probe.step":
                inside["probe_step"] += secs
            elif name in ("probe.point", "probe.finish"):
                inside["probe_other"] += secs
            elif top in training:
                inside[training[top]] += secs
            elif top == "load_state":
                inside["load"] += secs
            elif top == "save_state":
                inside[{"fsync": "save_fsync", "hash": "save_hash", "all_gather_json": "save_comm"}.get(
                    name, "save_rest")] += secs
        for key, secs in inside.items():
            p[key] += secs
        p["steps"] += (end - init1) - sum(inside.values())
    t = result.timings
    launched = sum(launch["t1"] - launch["t0"] for launch in launches)
    p["between"] = t["trial_s"] - launched
    p["oracle"] = t.get("compare_s", 0.0)
    p["baseline"] = t["baseline_s"]
    p["harness_rest"] = wall - t["baseline_s"] - t["trial_s"] - p["oracle"]
    return p


def counts(out: str) -> dict:
    """Rank 0's calls of one profiled trial, all attempts: fsyncs, saves, hashed writes."""
    total: dict = {}
    folder = os.path.join(out, "profile")
    for name in sorted(os.listdir(folder)):
        if name.startswith("rank0."):
            lines = read_jsonl(os.path.join(folder, name))
            for key, n in (lines[-1].get("calls", {}) if lines else {}).items():
                total[key] = total.get(key, 0) + n
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10, help="rounds, each of one trial per variant (10)")
    ap.add_argument("--kill", default="12", help="the fault plan of every trial (12)")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--root", default=".", help="where the trial folders go (default: here, the repository's disk)")
    ap.add_argument("--also-root", metavar="DIR",
                    help="a third variant, interleaved: the profiled trial with its folder under DIR (e.g. /dev/shm)")
    ap.add_argument("--no-old", action="store_true", help="leave out the per-launch-store variant")
    ap.add_argument("--no-scratch", action="store_true", help="leave out the run/-on-tmpfs variant")
    args = ap.parse_args()
    from harness.engine import run  # before any folder is made: fails without the harness installed
    from harness.launch import ForkServerLauncher

    root = tempfile.mkdtemp(prefix="bench-profile-", dir=args.root)
    also = tempfile.mkdtemp(prefix="bench-profile-", dir=args.also_root) if args.also_root else None
    os.environ["HARNESS_CACHE_DIR"] = os.path.join(root, "cache")
    os.environ["BENCH_TRIAL_PROFILE"] = "1"
    os.environ.pop("HARNESS_TRACE_DIR", None)
    wrapper = os.path.join(root, "target", "profiled_default.py")
    os.makedirs(os.path.dirname(wrapper))
    with open(wrapper, "w") as f:
        f.write(WRAPPER)

    patch_launcher()
    # name -> (target, folder of its trials, launcher, where run/ is); "profiled..." variants get the breakdown
    variants = {"plain": ("default", root, "kept", "disk"), "profiled": (wrapper, root, "kept", "disk")}
    if not args.no_old:
        variants["plain, per-launch store"] = ("default", root, "per-launch", "disk")
    if not args.no_scratch:
        variants["profiled@run on tmpfs"] = (wrapper, root, "kept", "tmpfs")
    if also:
        variants[f"profiled@{args.also_root}"] = (wrapper, also, "kept", "disk")
    walls: dict = {v: [] for v in variants}
    coarse_parts: dict = {v: [] for v in variants}
    parts: dict = {v: [] for v in variants if v.startswith("profiled")}
    calls: dict = {}

    def trial(variant: str, name: str):
        target, folder, store, kind = variants[variant]
        for again in range(3):
            out = os.path.join(folder, name + ("-again" * again))
            LAUNCHES.clear()
            t = time.perf_counter()
            with run_folder_on(kind, out):
                result = run(target, nproc=args.nproc, plan=args.kill, launcher=launchers[store], out_dir=out,
                             baseline_runs=1)
            wall = time.perf_counter() - t
            if result.verdict != "pass":
                raise SystemExit(f"{variant} trial {name}: {result.verdict}: {result.message}\n{result.log_tail or ''}")
            if result.timings.get("baseline_cached") or name.startswith("warm"):
                return out, list(LAUNCHES), result, wall
            # The cache key covers the harness's sources: someone edited one while this ran. Not a warm trial.
            print(f"  ({variant} trial {name}: its baseline was run again, the harness's sources changed; "
                  "trial repeated)", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        raise SystemExit("the baseline keeps changing (the harness's sources are being edited); try again later")

    load_start = os.getloadavg()
    launchers = {}
    try:
        launchers["kept"] = ForkServerLauncher()
        if not args.no_old:
            launchers["per-launch"] = ForkServerLauncher(store="per-launch")
        for variant in variants:  # warm-up: the baselines are cached, the zygote has forked once
            out, _, _, _ = trial(variant, f"warm-{variant.replace('@', '-').replace(' ', '-')}")
            shutil.rmtree(out, ignore_errors=True)
        names = list(variants)
        for i in range(args.trials):
            for variant in (names if i % 2 == 0 else names[::-1]):
                out, launches, result, wall = trial(variant, f"{variant.replace('@', '-').replace(' ', '-')}{i}")
                walls[variant].append(wall)
                coarse_parts[variant].append(coarse(out, args.nproc, launches))
                if variant in parts:
                    parts[variant].append(breakdown(out, args.nproc, launches, result, wall))
                    if variant == "profiled":
                        for key, n in counts(out).items():
                            calls.setdefault(key, []).append(n)
                shutil.rmtree(out, ignore_errors=True)
            print(f"round {i + 1}/{args.trials}: " + ", ".join(f"{v} {walls[v][-1] * 1e3:.0f} ms" for v in names),
                  flush=True)
    finally:
        for launcher in launchers.values():
            launcher.close()
        shutil.rmtree(root, ignore_errors=True)
        if also:
            shutil.rmtree(also, ignore_errors=True)
    load_end = os.getloadavg()
    report(args, variants, walls, coarse_parts, parts, calls, load_start, load_end)


def report(args, variants, walls, coarse_parts, parts, calls, load_start, load_end) -> None:
    med = statistics.median
    ms = lambda x: f"{x * 1e3:6.1f}"  # noqa: E731
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nwarm trials of the default scenario, {args.nproc} ranks, plan {args.kill}, {args.trials} rounds, "
          f"{cores} cores; load average (1/5/15 min) at the start "
          f"{'/'.join(f'{x:.2f}' for x in load_start)}, at the end {'/'.join(f'{x:.2f}' for x in load_end)}")
    main_parts = parts["profiled"]
    others = [v for v in parts if v != "profiled"]
    total = med(walls["profiled"])
    print(f"\nbreakdown of a profiled trial, trial folder under {args.root} (median over {args.trials}; share of "
          f"the median trial, {total * 1e3:.0f} ms; min and max over the trials; ms)" +
          "".join(f"; then the same with {v.split('@')[1]}" for v in others) + ":")
    print(f"  {'part':<66} {'median':>7} {'share':>6} {'min':>7} {'max':>7}" +
          "".join(f" {'median':>7}" for _ in others))
    for label, key in PARTS:
        values = [p[key] for p in main_parts]
        print(f"  {label:<66} {ms(med(values))} {med(values) / total:6.1%} {ms(min(values))} {ms(max(values))}" +
              "".join(f" {ms(med([p[key] for p in parts[v]]))}" for v in others))
    print(f"  {'sum of the medians':<66} {ms(sum(med([p[k] for p in main_parts]) for _, k in PARTS))}" +
          " " * 22 + "".join(f" {ms(sum(med([p[k] for p in parts[v]]) for _, k in PARTS))}" for v in others))
    groups = {"launch + start-up": ("launch", "startup"), "rendezvous (both groups)": ("rendezvous", "new_group"),
              "saves (all parts)": ("save_fsync", "save_hash", "save_comm", "save_rest"),
              "training (data, forward, backward, optimizer)": ("data", "forward", "backward", "opt"),
              "probe (digests, points, finish)": ("probe_step", "probe_other"),
              "teardown (+ the killed attempt's kill and reap)": ("destroy", "exit", "reap", "kill_reap"),
              "harness + oracle": ("between", "oracle", "baseline", "harness_rest")}
    print("\n  grouped (median of the per-trial sums):")
    for label, keys in groups.items():
        values = [sum(p[k] for k in keys) for p in main_parts]
        print(f"  {label:<66} {ms(med(values))} {med(values) / total:6.1%}" + " " * 16 +
              "".join(f" {ms(med([sum(p[k] for k in keys) for p in parts[v]]))}" for v in others))
    interesting = {"save_state/save_state": "save_state", "save_state/fsync": "fsync",
                   "save_state/hash": "xxh3 updates", "save_state/all_gather_json": "all_gather_json",
                   "probe.step/probe.step": "probe.step"}
    print("\n  rank 0's calls per trial (all attempts): " + ", ".join(
        f"{label} {med(calls[key]):g}" for key, label in interesting.items() if key in calls))
    print("\ncoarse breakdown from the trace rows alone (launch -> first probe row -> finish/fault row -> launch "
          "returned, summed over the attempts; medians, ms; ratio: to plain):")
    names = list(variants)
    print(f"  {'':<30}" + "".join(f" {v:>24}" for v in names))
    for key, label in (("to_start", "launch -> first probe row"), ("start_to_end", "first probe row -> end row"),
                       ("end_to_return", "end row -> launch returned")):
        base = med([c[key] for c in coarse_parts["plain"]])
        print(f"  {label:<30}" + "".join(
            f" {ms(m := med([c[key] for c in coarse_parts[v]]))} ({m / base:4.2f}x)".rjust(25) for v in names))
    base = med(walls["plain"])
    print(f"  {'whole trial (wall)':<30}" + "".join(
        f" {ms(m := med(walls[v]))} ({m / base:4.2f}x)".rjust(25) for v in names))
    print(f"  {'whole trial, min - max':<30}" + "".join(
        f" {min(walls[v]) * 1e3:.0f} - {max(walls[v]) * 1e3:.0f}".rjust(25) for v in names))


if __name__ == "__main__":
    main()
