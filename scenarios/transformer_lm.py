"""A tiny causal transformer language model with dropout, trained with the default loop.

Data: a token corpus drawn once from a random Markov chain (private generator, the same in every
process); sample i is a window of `seq_len + 1` tokens starting near i * stride, with a random
jitter of the start drawn from numpy's global RNG and random token corruption drawn from torch's
global RNG (both per access, in the rank with num_workers=0). Model: token + learned position
embeddings, `layers` pre-norm `nn.TransformerEncoderLayer`s with a causal mask and dropout, a
linear head. AdamW, warmup+decay LambdaLR, gradient accumulation, DDP, checkpoints: as default.

Default sizes at world size 2: 80 samples, micro-batch 4 per rank, so 10 micro-batches per rank per
epoch; accum 2, so 5 optimizer steps per epoch (no short windows); 20 steps = 4 epochs.

    epoch e ends at step 5e+5:   5, 10, 15, 20
    checkpoints (every 4):       4, 8, 12, 16, 20  (none at an epoch end except 20; 8 and 12 mid-epoch)

Measured on the 2-core dev box: see scenarios/__init__.py.

Run: ``torchrun --nproc-per-node 2 -m harness.scenarios.transformer_lm``
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from harness.scenarios._common import Scenario


class MarkovTokens(Dataset):
    def __init__(self, n: int, seq_len: int, vocab: int, seed: int, jitter: int = 4, corrupt: float = 0.05) -> None:
        g = torch.Generator().manual_seed(seed)
        stride = seq_len // 2
        length = n * stride + seq_len + 1 + jitter
        trans = torch.softmax(3.0 * torch.randn(vocab, vocab, generator=g), dim=1)
        tokens = torch.empty(length, dtype=torch.long)
        tokens[0] = 0
        for i in range(1, length):
            tokens[i] = torch.multinomial(trans[tokens[i - 1]], 1, generator=g)
        self.tokens, self.n, self.stride, self.seq_len = tokens, n, stride, seq_len
        self.vocab, self.jitter, self.corrupt = vocab, jitter, corrupt

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        start = i * self.stride + int(np.random.randint(0, self.jitter + 1))  # numpy RNG
        seq = self.tokens[start:start + self.seq_len + 1].clone()
        x, y = seq[:-1], seq[1:]
        mask = torch.rand(self.seq_len) < self.corrupt  # torch RNG
        x = torch.where(mask, torch.randint(0, self.vocab, (self.seq_len,)), x)
        return x, y


class TinyLM(nn.Module):
    def __init__(self, vocab: int, seq_len: int, d_model: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d_model))
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)

    def forward(self, x):
        n = x.shape[1]
        h = self.drop(self.tok(x) + self.pos[:n])
        h = self.blocks(h, mask=self.causal[:n, :n], is_causal=True)
        return self.head(self.norm(h))


class TransformerLM(Scenario):
    """Tiny causal transformer LM with dropout; numpy-jittered windows, torch token corruption."""

    name = "transformer_lm"
    defaults = dict(Scenario.defaults, steps=20, ckpt_every=4, accum=2, batch_size=4, samples=80, dim=32,
                    hidden=64, classes=32, lr=3e-3, warmup=4)

    def add_arguments(self, p) -> None:
        p.add_argument("--seq-len", type=int, default=16, help="tokens per sample (%(default)s)")
        p.add_argument("--heads", type=int, default=2, help="attention heads (%(default)s)")
        p.add_argument("--layers", type=int, default=2, help="transformer layers (%(default)s)")

    def build_dataset(self, args):
        return MarkovTokens(args.samples, args.seq_len, args.classes, seed=args.seed)

    def build_model(self, args):
        return TinyLM(args.classes, args.seq_len, args.dim, args.heads, args.layers, args.dropout)

    def forward_loss(self, run, batch):
        x, y = batch
        logits = run.model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def main(argv=None) -> None:
    TransformerLM().main(argv)


if __name__ == "__main__":
    main()
