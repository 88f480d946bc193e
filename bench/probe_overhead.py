"""Benchmark: what recording a trace row costs, relative to a training step, for ~10M-parameter models.

    python bench/probe_overhead.py [--steps 30]

For each workload: a training step (forward, backward, AdamW step) and the `probe.step(...)` call that
follows it with loss, batch, model and optimizer (so it hashes every parameter and both Adam moments,
~120 MB), timed alternately in one process with one thread (as a rank runs: OMP_NUM_THREADS=1).
Overhead = median probe time / median step time. Target (the issue): <= 5% for a 10M-parameter model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch


def mlp(batch: int):
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048),
                                torch.nn.ReLU(), torch.nn.Linear(2048, 768))
    x, y = torch.randn(batch, 2048), torch.randint(0, 768, (batch,))
    return model, (x, y), lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])


class LM(torch.nn.Module):
    def __init__(self, vocab=8192, d=256, layers=7, ctx=128):
        super().__init__()
        self.emb, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(ctx, d)
        layer = torch.nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
        self.body = torch.nn.TransformerEncoder(layer, layers)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, tokens):
        h = self.emb(tokens) + self.pos(torch.arange(tokens.shape[1]))
        mask = torch.nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        return self.head(self.body(h, mask=mask, is_causal=True))


def lm(batch: int):
    tokens = torch.randint(0, 8192, (batch, 129))
    loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[:, :-1]).reshape(-1, 8192), b[:, 1:].reshape(-1))
    return LM(), tokens, loss


def measure(name, build, batch, steps, probe):
    torch.manual_seed(0)
    model, batch_data, loss_fn = build(batch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_params = sum(p.numel() for p in model.parameters())
    step_t, probe_t = [], []
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        loss = loss_fn(model, batch_data)
        loss.backward()
        opt.step()
        opt.zero_grad()
        t1 = time.perf_counter()
        probe.step(i, loss=loss, batch=batch_data, model=model, optimizer=opt)
        t2 = time.perf_counter()
        if i > 3:  # warm-up: allocator, first optimizer state
            step_t.append(t1 - t0)
            probe_t.append(t2 - t1)
    s, p = statistics.median(step_t), statistics.median(probe_t)
    print(f"  {name:<28} {n_params / 1e6:5.1f}M params  step {s * 1e3:7.1f} ms  probe {p * 1e3:5.2f} ms  "
          f"overhead {100 * p / s:4.1f}%  {'PASS' if p / s <= 0.05 else 'MISS'} (target <= 5%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as trace:
        os.environ.update(HARNESS_TRACE_DIR=trace, RANK="0", WORLD_SIZE="1")
        from harness import probe

        assert probe.enabled()
        measure("transformer LM, 8x128 tok", lm, 8, args.steps, probe)
        measure("transformer LM, 2x128 tok", lm, 2, args.steps, probe)
        measure("MLP, batch 128", mlp, 128, args.steps, probe)
        measure("MLP, batch 32", mlp, 32, args.steps, probe)


if __name__ == "__main__":
    main()
