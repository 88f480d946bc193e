"""Benchmark: sustained `harness fuzz` throughput (trials per minute), beside single warm trials.

    python bench/fuzz_throughput.py [--time 60s] [--reps 3] [--nproc 2] [--target default]

Measured side by side, interleaved, in one run (medians over --reps):
  fuzz          `harness fuzz TARGET --time T --json --db none`: a whole campaign through the command
                line (the baseline cached, warmed once before timing); its JSON's trials_per_minute counts
                every trial (passed, failed, rejected, shrinking) over the campaign's trial time, with
                the oracle's verdict of each
  warm trial    `harness.engine.run(TARGET, plan=12)` in a loop for the same time, with one warm
                ForkServerLauncher: one kill and one resume per trial, the floor of a single-fault plan
Target (issue #8): >= 100 fuzz trials per minute on the default scenario at world size 2.
Public tools only: the `harness` command and `harness.engine.run`.
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


def fuzz_rate(target: str, nproc: int, time_arg: str, seed: int, root: str, env: dict, rep: int) -> dict:
    out = os.path.join(root, f"fuzz{rep}")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "fuzz", target, "--nproc", str(nproc), "--time",
                           time_arg, "--seed", str(seed), "--db", "none", "--out", out, "--json"],
                          env=env, capture_output=True, text=True)
    res = json.loads(proc.stdout)
    if proc.returncode not in (0, 1):
        sys.exit(f"harness fuzz exited {proc.returncode}: {res.get('message')}\n{proc.stderr[-2000:]}")
    return res


def warm_rate(target: str, nproc: int, seconds: float, launcher, root: str, rep: int) -> float:
    from harness.engine import run

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        out = os.path.join(root, f"warm{rep}-{n}")
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
    os.environ["HARNESS_CACHE_DIR"] = env["HARNESS_CACHE_DIR"]
    launcher = ForkServerLauncher()
    try:
        first = run(args.target, nproc=args.nproc, plan="12", launcher=launcher, out_dir=os.path.join(root, "warm"))
        assert first.verdict == "pass", first.message  # also fills the baseline cache
        fuzz, warm, mix = [], [], []
        for rep in range(args.reps):
            res = fuzz_rate(args.target, args.nproc, args.time, args.seed + rep, root, env, rep)
            fuzz.append(res["trials_per_minute"])
            mix.append(res)
            warm.append(warm_rate(args.target, args.nproc, seconds, launcher, root, rep))
            print(f"rep {rep + 1}: fuzz {fuzz[-1]:.0f} trials/min ({res['trials']} trials: {res['passes']} passed, "
                  f"{res['failed_trials']} failed, {sum(res['rejected'].values())} rejected; plan sizes "
                  f"{res['coverage']['plan_sizes']}), warm single-kill trial {warm[-1]:.0f} trials/min", flush=True)
    finally:
        launcher.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.target}, {args.nproc} ranks, {args.time} per measurement, {args.reps} reps (medians):")
    print(f"  harness fuzz                      {statistics.median(fuzz):6.0f} trials/min  (target >= 100)")
    print(f"  warm single-kill trial (plan 12)  {statistics.median(warm):6.0f} trials/min")
    print(f"  ratio fuzz / warm trial           {statistics.median(fuzz) / statistics.median(warm):6.2f}")


if __name__ == "__main__":
    main()
