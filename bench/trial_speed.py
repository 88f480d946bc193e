"""Benchmark: a kill/resume trial of the default scenario vs the same training under plain torchrun.

    python bench/trial_speed.py [--reps 5] [--kill 12] [--nproc 2]

Measured side by side, interleaved, in one run (medians over --reps):
  torchrun      `torchrun --standalone --nproc-per-node N -m harness.scenarios.default`: one uninterrupted
                training, no harness (the probe is a no-op), a fresh checkpoint folder each time
  harness CLI   `harness run default --kill K`: a whole command, a trial with its kill and restart,
                the baseline cached (warmed once before timing), the fork-server pool started by the command
  warm trial    harness.engine.run(...) with a launcher that is already warm, as `fuzz`, `certify`
                and the pytest plugin run many trials: gives trials per minute
Targets (the issue): harness CLI trial <= 1.0x the torchrun run; >= 20 trials per minute.
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


def wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kill", default="12")
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-trial-", dir=".")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_CACHE_DIR": os.path.join(root, "cache")}
    env.pop("HARNESS_TRACE_DIR", None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
                "-m", "harness.scenarios.default"]
    cli = [sys.executable, "-m", "harness.cli", "run", "default", "--nproc", str(args.nproc), "--kill", args.kill,
           "--json"]

    from harness.engine import run
    from harness.launch import ForkServerLauncher

    launcher = ForkServerLauncher()
    os.environ["HARNESS_CACHE_DIR"] = env["HARNESS_CACHE_DIR"]
    first = run("default", nproc=args.nproc, plan=args.kill, launcher=launcher, out_dir=os.path.join(root, "warm"))
    assert first.verdict == "pass", first.message  # also fills the baseline cache
    times: dict[str, list[float]] = {"torchrun (uninterrupted)": [], "harness CLI trial": [], "warm trial": []}
    try:
        for i in range(args.reps):
            times["torchrun (uninterrupted)"].append(
                wall(torchrun, {**env, "HARNESS_RUN_DIR": os.path.join(root, f"tr{i}")}))
            times["harness CLI trial"].append(wall(cli + ["--out", os.path.join(root, f"cli{i}")], env))
            t = time.perf_counter()
            result = run("default", nproc=args.nproc, plan=args.kill, launcher=launcher,
                         out_dir=os.path.join(root, f"warm{i}"))
            times["warm trial"].append(time.perf_counter() - t)
            assert result.verdict == "pass", result.message
    finally:
        launcher.close()
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:<26} median {med[k]:6.2f} s   min {min(v):6.2f}   max {max(v):6.2f}")
    ratio = med["harness CLI trial"] / med["torchrun (uninterrupted)"]
    per_min = 60 / med["warm trial"]
    print(f"  CLI trial / torchrun run   {ratio:6.2f}x   target <= 1.0   {'PASS' if ratio <= 1.0 else 'MISS'}")
    print(f"  warm trials per minute     {per_min:6.1f}    target >= 20    {'PASS' if per_min >= 20 else 'MISS'}")


if __name__ == "__main__":
    main()
