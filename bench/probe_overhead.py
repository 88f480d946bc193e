"""Benchmark: what recording a trace row costs, relative to a training step and to one xxh3 pass, ~10M parameters.

    python bench/probe_overhead.py [--steps 30] [--one-thread]

For each workload: a training step (forward, backward, AdamW step), then, on alternate steps, either the
``probe.step(...)`` call with loss, batch, model and optimizer (it hashes every parameter and both Adam
moments, ~120 MB), or a bare pass of ``xxhash.xxh3_128`` over the bytes of the same tensors (the
parameters and buffers, the optimizer state's tensors, the batch and the loss; the list is gathered
untimed, then each tensor is hashed by one call over its zero-copy numpy view, ``t.detach().numpy()``).
One process, torch on one thread (as a rank runs: OMP_NUM_THREADS=1).

- overhead = median probe time / median step time (target of the probe issue: <= 5%);
- vs xxh3 = the median, over pairs of adjacent steps, of probe time / bare-pass time (a pair shares the
  machine's load of the moment; target of issue 11: <= 1.2x on CPU).

By default the probe hashes the optimizer state on a second thread when the process has a core to
spare (as a rank does when there are more cores than local ranks); ``--one-thread`` turns that off,
so the probe does all its work on the thread that the bare pass uses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import xxhash


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


def recorded_tensors(loss, batch, model, opt) -> list:
    """The tensors probe.step hashes (all contiguous, on the CPU)."""
    tensors = [*model.parameters(), *model.buffers(), loss]
    tensors += [v for s in opt.state_dict()["state"].values() for v in s.values() if torch.is_tensor(v)]
    return tensors + (list(batch) if isinstance(batch, (list, tuple)) else [batch])


def bare_pass(tensors) -> None:
    for t in tensors:
        xxhash.xxh3_128(t.detach().numpy()).digest()


def measure(name, build, batch, steps, probe):
    torch.manual_seed(0)
    model, batch_data, loss_fn = build(batch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_params = sum(p.numel() for p in model.parameters())
    step_t, probe_t, bare_t = [], {}, {}
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        loss = loss_fn(model, batch_data)
        loss.backward()
        opt.step()
        opt.zero_grad()
        t1 = time.perf_counter()
        if i % 2:
            probe.step(i, loss=loss, batch=batch_data, model=model, optimizer=opt)
            times = probe_t
            key = i
        else:
            tensors = recorded_tensors(loss, batch_data, model, opt)  # gathered outside the timed pass
            t1 = time.perf_counter()
            bare_pass(tensors)
            times = bare_t
            key = i - 1  # paired with the probe step before it
        t2 = time.perf_counter()
        if i > 3:  # warm-up: allocator, first optimizer state
            step_t.append(t1 - t0)
            times[key] = t2 - t1
    s, p, b = statistics.median(step_t), statistics.median(probe_t.values()), statistics.median(bare_t.values())
    ratio = statistics.median(probe_t[k] / bare_t[k] for k in probe_t if k in bare_t)
    mb = sum(t.nbytes for t in recorded_tensors(loss, batch_data, model, opt)) / 1e6
    print(f"  {name:<28} {n_params / 1e6:5.1f}M params  step {s * 1e3:7.1f} ms  probe {p * 1e3:5.2f} ms  "
          f"overhead {100 * p / s:4.1f}% {'PASS' if p / s <= 0.05 else 'MISS'} (<= 5%)  xxh3 pass of {mb:.0f} MB "
          f"{b * 1e3:5.2f} ms  vs xxh3 {ratio:4.2f}x {'PASS' if ratio <= 1.2 else 'MISS'} (<= 1.2x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--one-thread", action="store_true", help="no second hashing thread for the optimizer state")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as trace:
        os.environ.update(HARNESS_TRACE_DIR=trace, RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        from harness import probe
        from harness.probe.recorder import get

        assert probe.enabled()
        if args.one_thread:
            get().spare_core = False
        print(f"second hashing thread: {'yes' if get().spare_core else 'no'}")
        measure("transformer LM, 8x128 tok", lm, 8, args.steps, probe)
        measure("transformer LM, 2x128 tok", lm, 2, args.steps, probe)
        measure("MLP, batch 128", mlp, 128, args.steps, probe)
        measure("MLP, batch 32", mlp, 32, args.steps, probe)


if __name__ == "__main__":
    main()
