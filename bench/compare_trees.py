"""Benchmark: the harness of another commit against this working tree, on the same trials, in one run.

    python bench/compare_trees.py OLD_REV [--rounds 3] [--trials 4] [--kill 12] [--cli] [--certify]

OLD_REV (e.g. ``HEAD~5`` or a commit) is exported with ``git archive`` into a temporary folder; each round
runs, for each tree in turn (the order alternating every round), one fresh Python process with that tree
first on ``PYTHONPATH`` and its own baseline cache. The process starts a ``ForkServerLauncher``, runs one
trial to make its baseline and warm the pool (not timed), then times ``--trials`` warm trials of the
default scenario (``harness.engine.run(plan=KILL)`` with that launcher, as fuzz and certify run them).
``--cli`` also times, per round and tree, one whole ``harness run default --kill KILL`` command (its
baseline cached by a run before the rounds); ``--certify`` one whole ``harness certify --strategy ddp
--scenarios default`` (the default matrix; its baselines cached before the rounds). Every figure is the
harness process's wall time. Prints medians per tree and the ratio this tree / OLD_REV; ``uptime``'s load before and after.
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

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WARM = """
import json, os, sys, tempfile, time
from harness.engine import run
from harness.launch import make_launcher
kill, n = sys.argv[1], int(sys.argv[2])
root = tempfile.mkdtemp(prefix="harness-bench-trees-")
launcher = make_launcher("pool")
try:
    first = run("default", plan=kill, launcher=launcher, out_dir=os.path.join(root, "warm"))
    assert first.verdict == "pass", first.message
    times = []
    for i in range(n):
        t = time.perf_counter()
        r = run("default", plan=kill, launcher=launcher, out_dir=os.path.join(root, str(i)))
        times.append(time.perf_counter() - t)
        assert r.verdict == "pass", r.message
finally:
    launcher.close()
print(json.dumps(times))
"""

CLI = "import sys; from harness.cli import main; sys.exit(main())"


def export(rev: str, dest: str) -> str:
    tree = os.path.join(dest, "tree")
    os.makedirs(tree)
    archive = subprocess.run(["git", "-C", HERE, "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    return tree


def env_for(tree: str, cache: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, HARNESS_CACHE_DIR=cache)
    env.pop("PYTHONSTARTUP", None)
    return env


def warm_trials(tree: str, cache: str, kill: str, n: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", WARM, kill, str(n)], env=env_for(tree, cache), check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout
    return json.loads(out.strip().splitlines()[-1])


def cli_run(tree: str, cache: str, kill: str, out: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, "run", "default", "--kill", kill, "--out", out],
                   env=env_for(tree, cache), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=tempfile.gettempdir())
    return time.perf_counter() - t


def certify_run(tree: str, cache: str, out: str, extra: tuple[str, ...] = ()) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, "certify", "--strategy", "ddp", "--scenarios", "default",
                    "--out", out, "--no-progress", *extra], env=env_for(tree, cache), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="the commit to compare this working tree with (git rev)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=4, help="warm trials per process")
    ap.add_argument("--kill", default="12")
    ap.add_argument("--cli", action="store_true", help="also time one whole `harness run` per round and tree")
    ap.add_argument("--certify", action="store_true", help="also time one whole `harness certify` per round and tree")
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="harness-bench-trees-") as tmp:
        trees = {"old": export(args.old, tmp), "new": HERE}
        caches = {name: os.path.join(tmp, f"cache-{name}") for name in trees}
        warm: dict[str, list[float]] = {name: [] for name in trees}
        cli: dict[str, list[float]] = {name: [] for name in trees}
        cert: dict[str, list[float]] = {name: [] for name in trees}
        for name, tree in trees.items():  # the baselines, cached before anything is timed
            if args.cli:
                cli_run(tree, caches[name], args.kill, os.path.join(tmp, f"cli-warm-{name}"))
            if args.certify:
                certify_run(tree, caches[name], os.path.join(tmp, f"certify-warm-{name}"), ("--trials", "1"))
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
            for name in order:
                warm[name] += warm_trials(trees[name], caches[name], args.kill, args.trials)
                if args.cli:
                    out = os.path.join(tmp, f"cli-{name}-{rnd}")
                    cli[name].append(cli_run(trees[name], caches[name], args.kill, out))
                    shutil.rmtree(out, ignore_errors=True)
                if args.certify:
                    out = os.path.join(tmp, f"certify-{name}-{rnd}")
                    cert[name].append(certify_run(trees[name], caches[name], out))
                    shutil.rmtree(out, ignore_errors=True)
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(f"old = {args.old}, new = this working tree; {args.rounds} rounds x {args.trials} warm trials per tree")
    rows = [("warm trial (s)", warm)] + ([("harness run, whole command (s)", cli)] if args.cli else []) \
        + ([("harness certify ddp default (s)", cert)] if args.certify else [])
    print(f"{'':34s}{'old':>10s}{'new':>10s}{'new/old':>10s}")
    for label, data in rows:
        old, new = statistics.median(data["old"]), statistics.median(data["new"])
        print(f"{label:34s}{old:10.3f}{new:10.3f}{new / old:9.2f}x")


if __name__ == "__main__":
    main()
