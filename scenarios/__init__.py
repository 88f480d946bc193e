"""Built-in scenarios: training scripts the harness kills and resumes (``harness run <name>``).

The repository's top-level folder ``scenarios/`` installs as the package ``harness.scenarios``
(pyproject.toml ``package-dir``): nothing named ``scenarios`` lands in site-packages, and scenarios
import each other as ``harness.scenarios.<name>``.

Every scenario is a module runnable by torchrun (``torchrun --nproc-per-node 2 -m harness.scenarios.default``)
and by the harness (runpy as ``__main__``). All use the reference checkpointer (harness.checkpoint);
the shared loop and its hook points are in ``scenarios/_common.py``. ``BUILTIN`` maps each name
to a one-line description (``harness scenarios`` lists it); ``harness.scenarios.buggy.EXPECTED`` holds
the first divergence each buggy variant must produce.

Training time, excluding interpreter/torch/process-group startup (``--report-time``: the max over
the 2 ranks; gloo, OMP_NUM_THREADS=1, checkpoints on ext4 with fsync, the 2-core dev box with other
jobs running, 4 runs each):

    default          24 steps, 8 epochs, 4 checkpoints       0.19 - 0.28 s  (checkpoint saves ~0.06 s of it)
    transformer_lm   20 steps, 4 epochs, 5 checkpoints       0.33 - 0.39 s
    workers          as default, 2 persistent workers/rank   0.49 - 0.58 s  (worker forks included)
    bf16             as default                              0.22 - 0.25 s
    ema              as default                              0.19 - 0.22 s
    fp16             as default                              0.96 - 1.04 s  (default: 1.08 - 1.45 s side by side,
                                                                             3 runs each, under a load of ~4)

A kill/resume trial of the default scenario through ``harness.engine.run`` with a warm fork server
and a cached baseline took 0.37 - 0.80 s (median ~0.45 s, ~125 trials/minute); the same training
launched once by plain ``torchrun`` takes ~6.8 s wall, nearly all of it interpreter, torch and
process-group startup. Note that ``torch.use_deterministic_algorithms(True)``, which every scenario
calls, imports torch._inductor: ~2.3 s in a fresh interpreter, free in the harness's fork server
(it preloads torch._dynamo).
"""

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
