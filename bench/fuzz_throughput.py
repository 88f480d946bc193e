"""Benchmark: sustained `harness fuzz` throughput (trials per minute), beside single warm trials, the old way
and the new (issue #19).

    python bench/fuzz_throughput.py [--time 60s] [--reps 3] [--nproc 2] [--target default]

Measured side by side, interleaved (the order rotating every rep), in one run (medians over --reps):
  fuzz (old)    `harness fuzz TARGET --time T --json --db none` with HARNESS_POOL_STORE=per-launch: the
                pool forks a store process per launch, as before the zygote kept a store host
  fuzz (new)    the same command with the defaults (the kept store host). Its JSON's trials_per_minute
                counts every trial (passed, failed, rejected, shrinking) over the campaign's trial time;
                the plans rejected without a trial (early kills of a class already tried, unreachable
                later faults) cost no trial and are printed
  warm (old)    `harness.engine.run(TARGET, plan=12)` in a loop for the same time, with one warm
                ForkServerLauncher(store="per-launch"), run/ on disk: one kill and one resume per trial
  warm (new)    the same with ForkServerLauncher() (kept store) and run/ on tmpfs (harness.launch.scratch,
                symlinked as OUT/run: what the engine's `--scratch tmpfs` is to do; the command line's fuzz
                runs its checkpoints on disk until the engine has that option)
Targets (issue #19): >= 200 fuzz trials per minute on the default scenario at world size 2, and fuzz >= 0.95x
the warm-trial rate. `uptime`'s load is printed: on a shared machine only the ratios of one run mean something.
Public tools only: the `harness` command, `harness.engine.run`, `harness.launch`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _folders import run_folder_on  # bench/, the script's own folder


def fuzz_rate(target: str, nproc: int, time_arg: str, seed: int, root: str, env: dict, rep: int, tag: str) -> dict:
    out = os.path.join(root, f"fuzz-{tag}{rep}")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "fuzz", target, "--nproc", str(nproc), "--time",
                           time_arg, "--seed", str(seed), "--db", "none", "--out", out, "--json"],
                          env=env, capture_output=True, text=True)
    try:
        res = json.loads(proc.stdout)
    except ValueError:
        sys.exit(f"harness fuzz exited {proc.returncode} without JSON:\n{proc.stderr[-2000:]}")
    if proc.returncode not in (0, 1) and not (proc.returncode == 2 and res.get("stop") == "time"):
        # exit 2 at the time limit: every trial so far was rejected (a short campaign on a loaded machine
        # can spend its time on early kills, one per class); its rate still counts
        sys.exit(f"harness fuzz exited {proc.returncode} ({res.get('stop')}): {res.get('message')}\n"
                 f"{proc.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return res


def warm_rate(target: str, nproc: int, seconds: float, launcher, kind: str, root: str, rep: int) -> float:
    from harness.engine import run

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        out = os.path.join(root, f"warm{rep}-{kind}-{n}")
        with run_folder_on(kind, out):
            result = run(target, nproc=nproc, plan="12", launcher=launcher, out_dir=out)
        assert result.verdict == "pass", result.message
        shutil.rmtree(out, ignore_errors=True)
        n += 1
    return 60.0 * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", default="60s", help="length of each fuzz campaign and each warm-trial loop")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--target", default="default")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first campaign (then +1 per rep)")
    args = ap.parse_args()
    from harness.cli import parse_duration
    from harness.engine import run
    from harness.launch import ForkServerLauncher

    seconds = parse_duration(args.time)
    root = tempfile.mkdtemp(prefix="bench-fuzz-", dir=".")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_CACHE_DIR": os.path.join(root, "cache")}
    env.pop("HARNESS_POOL_STORE", None)
    os.environ["HARNESS_CACHE_DIR"] = env["HARNESS_CACHE_DIR"]
    load_start = os.getloadavg()
    launchers = {"old": ForkServerLauncher(store="per-launch"), "new": ForkServerLauncher(store="kept")}
    names = ["fuzz (old)", "fuzz (new)", "warm (old)", "warm (new)"]
    rates: dict[str, list[float]] = {n: [] for n in names}
    mixes: dict[str, list[dict]] = {"fuzz (old)": [], "fuzz (new)": []}
    try:
        first = run(args.target, nproc=args.nproc, plan="12", launcher=launchers["new"],
                    out_dir=os.path.join(root, "warm"))
        assert first.verdict == "pass", first.message  # also fills the baseline cache
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                if name.startswith("fuzz"):
                    old = name == "fuzz (old)"
                    res = fuzz_rate(args.target, args.nproc, args.time, args.seed + rep, root,
                                    {**env, "HARNESS_POOL_STORE": "per-launch"} if old else env, rep,
                                    "old" if old else "new")
                    rates[name].append(res["trials_per_minute"])
                    mixes[name].append(res)
                else:
                    old = name == "warm (old)"
                    rates[name].append(warm_rate(args.target, args.nproc, seconds, launchers["old" if old else "new"],
                                                 "disk" if old else "tmpfs", root, rep))
            line = []
            for name in names:
                line.append(f"{name} {rates[name][-1]:.0f}/min")
                if name in mixes:
                    res = mixes[name][-1]
                    line[-1] += (f" ({res['trials']} trials: {res['passes']} passed, {res['failed_trials']} failed, "
                                 f"{sum(res['rejected'].values())} rejected after a trial, "
                                 f"{res.get('skipped_early', 0)} early and {res.get('unreachable', 0)} unreachable "
                                 f"skipped without one)")
            print(f"rep {rep + 1}: " + "; ".join(line), flush=True)
    finally:
        for launcher in launchers.values():
            launcher.close()
        shutil.rmtree(root, ignore_errors=True)
    load_end = os.getloadavg()
    med = {n: statistics.median(v) for n, v in rates.items()}
    print(f"\n{args.target}, {args.nproc} ranks, {args.time} per measurement, {args.reps} reps (medians); "
          f"{os.cpu_count()} cores; load average {'/'.join(f'{x:.2f}' for x in load_start)} at the start, "
          f"{'/'.join(f'{x:.2f}' for x in load_end)} at the end:")
    for name in names:
        print(f"  {name:<12} {med[name]:6.0f} trials/min   (min {min(rates[name]):.0f}, max {max(rates[name]):.0f})")
    print(f"  fuzz new / old            {med['fuzz (new)'] / med['fuzz (old)']:6.2f}x")
    print(f"  warm new / old            {med['warm (new)'] / med['warm (old)']:6.2f}x")
    ratio = med["fuzz (new)"] / med["warm (new)"]
    print(f"  fuzz (new) / warm (new)   {ratio:6.2f}    target >= 0.95   {'PASS' if ratio >= 0.95 else 'MISS'}")
    print(f"  fuzz (new)                {med['fuzz (new)']:6.0f}/min target >= 200    "
          f"{'PASS' if med['fuzz (new)'] >= 200 else 'MISS'}")


if __name__ == "__main__":
    main()
