"""Benchmark: the probe's cost on a GPU, where it digests tensors on the device (harness/probe/device_digest.py).

    python bench/gpu_digest_overhead.py [--steps 30] [--json FILE]      # on a CUDA machine
    python bench/gpu_digest_overhead.py --dry-run                        # tiny model on the CPU: checks the code

A decoder-only transformer LM of >= 100M parameters (GPT-2-small-like: vocab 50304, d 768, 12 layers,
plus untied embeddings), AdamW, bf16 autocast, batch 8 x 512 tokens on one GPU. Steps alternate: a
plain training step, or the same step followed by ``probe.step(...)`` with loss, batch, model and
optimizer (every parameter and both Adam moments, digested on the device: 16 bytes per tensor come
back to the host). Each timed region ends with ``torch.cuda.synchronize()``.

- overhead = (median probe-step time - median plain-step time) / median plain-step time; target <= 2%
  (issue 11).
- for scale: the time to copy the same tensors to the host and hash them with xxh3, as the probe did
  before on-device digests (measured on a few steps only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

TARGET = 0.02


class LM(torch.nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, ctx: int):
        super().__init__()
        self.emb, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(ctx, d)
        layer = torch.nn.TransformerEncoderLayer(d, d // 64, 4 * d, dropout=0.1, batch_first=True, norm_first=True)
        self.body = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        mask = torch.nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=tokens.device)
        return self.head(self.body(self.emb(tokens) + self.pos(pos), mask=mask, is_causal=True))


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_copy_hash_s(model, opt, device) -> float:
    """Seconds to copy parameters and optimizer state to the host and xxh3 them (what on-device digests avoid)."""
    import xxhash

    tensors = [*model.parameters()] + [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    sync(device)
    t0 = time.perf_counter()
    for t in tensors:
        xxhash.xxh3_128(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()).digest()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="training steps, half of them with the probe (default 30)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU, 4 steps: checks the code only")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON to FILE")
    args = ap.parse_args(argv)
    if args.dry_run:
        device, dims, args.steps, args.batch, args.ctx = torch.device("cpu"), (512, 64, 2), 6, 2, 16
    elif not torch.cuda.is_available():
        print("gpu_digest_overhead: no CUDA device visible; run it on a GPU machine, or with --dry-run",
              file=sys.stderr)
        return 2
    else:
        device, dims = torch.device("cuda", 0), (50304, 768, 12)
    torch.manual_seed(0)
    vocab, d, layers = dims
    model = LM(vocab, d, layers, args.ctx).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    tokens = torch.randint(0, vocab, (args.batch, args.ctx + 1), device=device)
    n_params = sum(p.numel() for p in model.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    with tempfile.TemporaryDirectory() as trace:
        os.environ.update(HARNESS_TRACE_DIR=trace, RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        from harness import probe

        assert probe.enabled()
        plain, probed, probe_only = [], [], []
        for i in range(1, args.steps + 1):
            sync(device)
            t0 = time.perf_counter()
            with autocast:
                logits = model(tokens[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), tokens[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            t1 = time.perf_counter()
            if i % 2:
                probe.step(i, loss=loss.detach(), batch=tokens, model=model, optimizer=opt)
                sync(device)
            t2 = time.perf_counter()
            if i > 4:  # warm-up: allocator, kernels, first optimizer state
                (probed if i % 2 else plain).append(t2 - t0)
                if i % 2:
                    probe_only.append(t2 - t1)
        host_s = statistics.median(host_copy_hash_s(model, opt, device) for _ in range(3))

    step_s, with_probe_s = statistics.median(plain), statistics.median(probed)
    overhead = (with_probe_s - step_s) / step_s
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
              "params_m": round(n_params / 1e6, 1), "batch": args.batch, "ctx": args.ctx, "steps": args.steps,
              "step_ms": round(step_s * 1e3, 3), "step_with_probe_ms": round(with_probe_s * 1e3, 3),
              "probe_call_ms": round(statistics.median(probe_only) * 1e3, 3), "overhead": round(overhead, 5),
              "target": TARGET, "meets_target": overhead <= TARGET,
              "host_copy_and_xxh3_ms": round(host_s * 1e3, 3), "dry_run": args.dry_run}
    print(f"{result['device']}: {result['params_m']}M params, batch {args.batch}x{args.ctx}: step "
          f"{result['step_ms']:.1f} ms, with probe.step {result['step_with_probe_ms']:.1f} ms (probe call "
          f"{result['probe_call_ms']:.2f} ms): overhead {100 * overhead:.2f}% "
          f"{'PASS' if result['meets_target'] else 'MISS'} (<= {100 * TARGET:.0f}%); copying the same tensors "
          f"to the host and hashing them: {result['host_copy_and_xxh3_ms']:.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
