"""The built-in scenarios by name, each with the one line ``harness scenarios`` prints."""

from __future__ import annotations

BUILTIN: dict[str, str] = {
    "default": "small MLP with dropout, torch+numpy augmentation, AdamW, warmup LR, grad accumulation, DDP",
    "transformer_lm": "tiny causal transformer LM with dropout, numpy-jittered windows, torch token corruption",
    "workers": "default with a num_workers=2 DataLoader: per-worker torch+numpy random augmentation",
    "bf16": "default under bf16 autocast (CPU or CUDA)",
    "ema": "default plus an EMA of the weights registered as a custom checkpoint object",
    "fp16": "default under fp16 autocast with a dynamic GradScaler (scale grows and backs off), python-RNG cutout",
    "elastic": "default MLP with an elastic data order (ElasticSampler), no per-rank randomness: --resume-nproc",
    "buggy/rng_from_rank0": "BUGGY: rank 0's RNG states restored on every rank after a resume (Megatron-LM PR #6858)",
    "buggy/numpy_rng_not_saved": "BUGGY: numpy's RNG not saved: re-seeded as at startup after a resume",
    "buggy/scheduler_not_saved": "BUGGY: LR scheduler not saved, rebuilt with last_epoch=step: one step ahead "
                                 "(Lightning#1772)",
    "buggy/optimizer_not_saved": "BUGGY: optimizer state not saved: AdamW restarts with empty moments",
    "buggy/sampler_epoch_not_set": "BUGGY: epoch loop restarts at 0 on resume: the sampler replays epoch 0 "
                                   "(Accelerate #2016/#3996)",
    "buggy/loader_global_rng": "BUGGY: hand-rolled skip-batches loader whose iterator draws from the global torch RNG",
    "buggy/ema_not_registered": "BUGGY: EMA weights not registered for checkpointing (ema scenario minus one line)",
    "buggy/grad_accum_position_lost": "BUGGY: micro-batch counter not saved: accumulation windows shift after a resume",
}

__all__ = ["BUILTIN"]
