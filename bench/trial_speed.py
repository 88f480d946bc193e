"""Benchmark: a kill/resume trial of the default scenario vs the same training under plain torchrun, and
the warm trial the old way vs the new (issue #19).

    python bench/trial_speed.py [--reps 5] [--kill 12] [--nproc 2] [--warm-only]

Measured side by side, interleaved (the order rotating every rep), in one run (medians over --reps):
  torchrun      `torchrun --standalone --nproc-per-node N -m harness.scenarios.default`: one uninterrupted
                training, no harness (the probe is a no-op), a fresh checkpoint folder each time
  harness CLI   `harness run default --kill K`: a whole command, a trial with its kill and restart,
                the baseline cached (warmed once before timing), the fork-server pool started by the command
  warm trials   harness.engine.run(...) with a launcher that is already warm, as `fuzz`, `certify`
                and the pytest plugin run many trials (gives trials per minute), three ways:
     old        ForkServerLauncher(store="per-launch"): a store process forked per launch; run/ on disk
     kept store ForkServerLauncher() (store="kept", the default): the zygote's store host has a fresh
                store ready for each launch; run/ on disk
     new        the kept store, and run/ (the checkpoints) on tmpfs, the engine's default (--scratch tmpfs):
                its fsyncs return at once; the copy of run/ to OUT/run when the trial ends is in its time
  empty launch  (--launches N, default 20 per launcher, interleaved) a launch of N ranks of a script that
                only runs init_process_group("gloo"), a barrier and destroy_process_group, through each
                launcher: the rendezvous's own cost, old (a store process forked per launch) vs kept store
Targets (the issue): harness CLI trial <= 0.7x the torchrun run; warm trial <= 0.25 s (>= 240 per minute).
`uptime`'s load is printed: on a shared machine only the ratios of one run mean something.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _folders import run_folder_on  # bench/, the script's own folder

OLD, KEPT, NEW = "warm trial, old (per-launch store, disk)", "warm trial, kept store, disk", \
    "warm trial, new (kept store, tmpfs)"


EMPTY_LAUNCH = """import torch.distributed as dist

dist.init_process_group("gloo")
dist.barrier()
dist.destroy_process_group()
"""


def wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kill", default="12")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--warm-only", action="store_true", help="only the three warm trials (no torchrun, no CLI)")
    ap.add_argument("--launches", type=int, default=20, help="empty launches per launcher (0: none)")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-trial-", dir=".")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_CACHE_DIR": os.path.join(root, "cache")}
    env.pop("HARNESS_TRACE_DIR", None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
                "-m", "harness.scenarios.default"]
    cli = [sys.executable, "-m", "harness.cli", "run", "default", "--nproc", str(args.nproc), "--kill", args.kill,
           "--json"]

    from harness.engine import run
    from harness.launch import ForkServerLauncher, LaunchSpec

    load_start = os.getloadavg()
    launchers = {"per-launch": ForkServerLauncher(store="per-launch"), "kept": ForkServerLauncher()}
    warm = {OLD: ("per-launch", "disk"), KEPT: ("kept", "disk"), NEW: ("kept", "tmpfs")}
    os.environ["HARNESS_CACHE_DIR"] = env["HARNESS_CACHE_DIR"]
    copies: list[float] = []

    def warm_trial(name: str, out: str) -> float:
        store, kind = warm[name]
        t = time.perf_counter()
        with run_folder_on(kind, out):
            result = run("default", nproc=args.nproc, plan=args.kill, launcher=launchers[store], out_dir=out)
        dt = time.perf_counter() - t
        assert result.verdict == "pass", result.message
        shutil.rmtree(out, ignore_errors=True)
        return dt

    empty = os.path.join(root, "empty_launch.py")
    with open(empty, "w") as f:
        f.write(EMPTY_LAUNCH)
    launch_times: dict[str, list[float]] = {"per-launch": [], "kept": []}
    for i in range(args.launches + 1):  # the first of each is a warm-up
        for store in (("per-launch", "kept") if i % 2 else ("kept", "per-launch")):
            t = time.perf_counter()
            res = launchers[store].launch(LaunchSpec(nproc=args.nproc, log_dir=os.path.join(root, "empty"),
                                                     script=empty, timeout_s=60))
            if i:
                launch_times[store].append(time.perf_counter() - t)
            assert res.ok, [e.describe() for e in res.exits]
    for name in warm:  # also fills the baseline cache, and each zygote has forked once
        warm_trial(name, os.path.join(root, "warmup"))
    copies.clear()
    times: dict[str, list[float]] = {} if args.warm_only else {"torchrun (uninterrupted)": [],
                                                                "harness CLI trial": []}
    times.update({name: [] for name in warm})
    names = list(times)
    try:
        for i in range(args.reps):
            for name in names[i % len(names):] + names[:i % len(names)]:
                if name == "torchrun (uninterrupted)":
                    times[name].append(wall(torchrun, {**env, "HARNESS_RUN_DIR": os.path.join(root, f"tr{i}")}))
                elif name == "harness CLI trial":
                    times[name].append(wall(cli + ["--out", os.path.join(root, f"cli{i}")], env))
                else:
                    times[name].append(warm_trial(name, os.path.join(root, f"w{i}")))
            print(f"rep {i + 1}/{args.reps}: " + ", ".join(f"{n.split(' (')[0]} {times[n][-1]:.2f} s" for n in names),
                  flush=True)
    finally:
        for launcher in launchers.values():
            launcher.close()
        shutil.rmtree(root, ignore_errors=True)
    load_end = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{args.reps} reps, interleaved; {os.cpu_count()} cores; load average (1/5/15 min) "
          f"{'/'.join(f'{x:.2f}' for x in load_start)} at the start, {'/'.join(f'{x:.2f}' for x in load_end)} "
          "at the end (medians; min, max):")
    for k, v in times.items():
        print(f"  {k:<40} median {med[k]:6.3f} s   min {min(v):6.3f}   max {max(v):6.3f}   "
              f"{60 / med[k]:6.1f} per minute")
    if launch_times["kept"]:
        lm = {k: statistics.median(v) for k, v in launch_times.items()}
        print(f"  {'empty launch, old (per-launch store)':<40} median {lm['per-launch'] * 1e3:6.1f} ms (over "
              f"{args.launches}; min {min(launch_times['per-launch']) * 1e3:.1f})")
        print(f"  {'empty launch, kept store':<40} median {lm['kept'] * 1e3:6.1f} ms (min "
              f"{min(launch_times['kept']) * 1e3:.1f}); kept / old {lm['kept'] / lm['per-launch']:.2f}x, "
              f"{(lm['per-launch'] - lm['kept']) * 1e3:.1f} ms less per launch")
    print(f"  {'kept store / old':<40} {med[KEPT] / med[OLD]:6.2f}x")
    print(f"  {'tmpfs / disk (both with the kept store)':<40} {med[NEW] / med[KEPT]:6.2f}x")
    print(f"  {'new / old':<40} {med[NEW] / med[OLD]:6.2f}x")
    if copies:
        print(f"  {'copy of a failed trial run/ to disk':<40} median {statistics.median(copies) * 1e3:6.1f} ms "
              f"(max {max(copies) * 1e3:.1f}): paid only by a failed trial that keeps its checkpoints")
    verdict = "PASS" if med[NEW] <= 0.25 else "MISS"
    print(f"  {'warm trial (new)':<40} {med[NEW]:6.3f} s    target <= 0.25 s   {verdict}")
    if not args.warm_only:
        ratio = med["harness CLI trial"] / med["torchrun (uninterrupted)"]
        verdict = "PASS" if ratio <= 0.7 else "MISS"
        print(f"  {'CLI trial / torchrun run':<40} {ratio:6.2f}x   target <= 0.7   {verdict}")


if __name__ == "__main__":
    main()
