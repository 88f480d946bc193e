"""Benchmark: what auto mode's recording costs per step, against probe.step, on the same ~10M-parameter model.

    python bench/auto_overhead.py [--reps 6] [--steps 40] [--batch 32]

Each rep is one process, one thread (as a rank runs), auto mode installed (harness.probe.auto). Steps alternate:
on even steps auto mode records the step (its row is written at the next boundary: timed here as an
explicit ``boundary()`` right after the step), on odd steps its pending step is dropped and
``probe.step(loss, batch, model, optimizer)`` records instead (auto mode switched off for the call).
Both hash every parameter and both Adam moments, the batch and the loss. Auto mode's time is the row
written at the boundary plus the time its hooks spent inside the step (the wrapped
``torch.autograd.backward`` and DataLoader ``__next__``: the batch digest is taken there), timed
around the calls they wrap.

Each rep prints the median recording time of each and their ratio; the reps alternate which of the
two records the even steps (``--parity``). The result is the median of the reps' ratios auto / probe
(target: <= 1.0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def build(batch: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048),
                                torch.nn.ReLU(), torch.nn.Linear(2048, 768))
    data = torch.utils.data.TensorDataset(torch.randn(batch * 4, 2048), torch.randint(0, 768, (batch * 4,)))
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    return model, loader, torch.optim.AdamW(model.parameters(), lr=1e-4)


def batches(loader):
    while True:
        yield from loader


def plain_steps(steps: int, batch: int) -> float:
    """Median step time without auto mode (in this process, before anything is installed)."""
    model, loader, opt = build(batch)
    times = []
    for _, (x, y) in zip(range(steps), batches(loader)):
        t0 = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=6, help="processes, alternating --parity")
    parser.add_argument("--parity", type=int, default=0, help="1: auto mode records the odd steps instead")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if not args.child:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
        ratios = []
        for rep in range(args.reps):
            with tempfile.TemporaryDirectory() as d:
                env["HARNESS_TRACE_DIR"] = d
                out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), "--batch",
                                      str(args.batch), "--parity", str((args.parity + rep) % 2)], env=env,
                                     check=True, capture_output=True, text=True).stdout
            print(f"rep {rep + 1}/{args.reps} (parity {(args.parity + rep) % 2})")
            print("\n".join(line for line in out.splitlines() if not line.startswith("ratio=")))
            ratios += [float(line[6:]) for line in out.splitlines() if line.startswith("ratio=")]
        ratio = statistics.median(ratios)
        print(f"median ratio auto / probe over {len(ratios)} reps: {ratio:.2f}x  "
              f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)  {'PASS' if ratio <= 1.0 else 'MISS'} (target <= 1.0)")
        return
    torch.set_num_threads(1)
    plain = plain_steps(args.steps // 2, args.batch)

    from harness import probe
    from harness.probe import auto as auto_mode
    from harness.probe.recorder import get

    rec = get()
    auto = auto_mode.install()
    hook_s = [0.0]  # time spent in auto mode's backward and DataLoader hooks, minus the calls they wrap

    def timed(method):
        def wrapper(orig, *a, **k):
            inner = [0.0]

            def timed_orig(*aa, **kk):
                t = time.perf_counter()
                try:
                    return orig(*aa, **kk)
                finally:
                    inner[0] += time.perf_counter() - t

            t = time.perf_counter()
            out = method(timed_orig, *a, **k)
            hook_s[0] += time.perf_counter() - t - inner[0]
            return out
        return wrapper

    auto.backward, auto.next_batch = timed(auto.backward), timed(auto.next_batch)
    model, loader, opt = build(args.batch)
    n_params = sum(p.numel() for p in model.parameters())
    step_t, auto_t, probe_t = [], [], []
    it = batches(loader)
    for i in range(1, args.steps + 1):
        hook_s[0] = 0.0
        x, y = next(it)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        t1 = time.perf_counter()
        step_t.append(t1 - t0)
        if (i + args.parity) % 2 == 0:
            auto.boundary()
            auto_t.append(time.perf_counter() - t1 + hook_s[0])  # the row, plus the hooks' work in the step
        else:
            auto.pending.clear()
            auto.losses.clear()
            auto.batches.clear()
            rec.auto = None
            t1 = time.perf_counter()
            probe.step(i, loss=loss, batch=(x, y), model=model, optimizer=opt)
            probe_t.append(time.perf_counter() - t1)
            rec.auto = auto
    a, p, s = (statistics.median(v[1:]) for v in (auto_t, probe_t, step_t))
    print(f"MLP {n_params / 1e6:.1f}M params, batch {args.batch}, AdamW, {args.steps} steps, one thread")
    print(f"  step                          {s * 1e3:8.1f} ms   (auto hooks installed; before: {plain * 1e3:.1f} ms)")
    print(f"  probe.step                    {p * 1e3:8.2f} ms   ({p / s:.1%} of a step)")
    print(f"  auto mode: row + hooks        {a * 1e3:8.2f} ms   ({a / s:.1%} of a step)")
    print(f"  ratio auto / probe            {a / p:8.2f}x")
    print(f"ratio={a / p}")


if __name__ == "__main__":
    main()
