"""What each buggy scenario must produce: a plan that exposes its mistake and the first divergence."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    plan: str  # a fault plan that exposes the mistake
    step: int  # first divergent step
    rank: int  # its rank (the oracle orders by attempt, step, rank)
    fields: tuple[str, ...]  # exactly the differing fields of that row
    why: str
    cause: str = ""  # the diagnosis the oracle must give (harness.oracle.diagnosis)


_AFTER_10 = "kill at step 12 resumes from the checkpoint at step 10 (epoch 3, after 2 of its 10 batches)"

EXPECTED: dict[str, Expected] = {
    "buggy/rng_from_rank0": Expected(
        "12", 11, 1, ("batch", "rng:numpy", "rng:torch", "loss", "params", "optimizer"),
        f"{_AFTER_10}; rank 1 now draws rank 0's RNG stream (batch noise, dropout); rank 0's own inputs are "
        "right, it sees the mistake only through DDP's averaged gradient (params, optimizer at step 11); "
        "python's random is restored wrongly too, but nothing draws from it (unused, not compared)",
        cause="rng_from_other_rank"),
    "buggy/numpy_rng_not_saved": Expected(
        "12", 11, 0, ("batch", "rng:numpy", "loss", "params", "optimizer"),
        f"{_AFTER_10}; numpy restarts from its startup seed: the numpy augmentation noise differs, torch's does not",
        cause="rng_not_restored"),
    "buggy/scheduler_not_saved": Expected(
        "12", 11, 0, ("params", "optimizer", "extra:lr"),
        f"{_AFTER_10}; the rebuilt scheduler is one step ahead: the update of step 11 uses step 12's rate",
        cause="lr_schedule"),
    "buggy/optimizer_not_saved": Expected(
        "12", 11, 0, ("params", "optimizer"),
        f"{_AFTER_10}; AdamW restarts with empty moments: the same loss and data, a different update",
        cause="optimizer_state"),
    "buggy/sampler_epoch_not_set": Expected(
        "12", 11, 0, ("batch", "rng:torch", "loss", "params", "optimizer", "extra:epoch"),
        f"{_AFTER_10}; the loop restarts at epoch 0, so epoch 0's permutation is replayed, and the fresh epoch's "
        "iterator draws its base seed from the global torch RNG as a plain DataLoader's does",
        cause="data_order"),
    "buggy/loader_global_rng": Expected(
        "12", 11, 0, ("batch", "rng:torch", "loss", "params", "optimizer"),
        f"{_AFTER_10}; rebuilding the iterator mid-epoch draws one extra base seed from the global torch RNG",
        cause="torch_rng"),
    "buggy/ema_not_registered": Expected(
        "12", 11, 0, ("extra:ema",),
        f"{_AFTER_10}; the EMA restarts from the restored weights with its counter at 0; training is unaffected",
        cause="unregistered_object"),
    "buggy/grad_accum_position_lost": Expected(
        "17", 16, 0, ("batch", "rng:numpy", "rng:torch", "loss", "params", "optimizer", "extra:window"),
        "kill at step 17 resumes from the checkpoint at step 15, saved at micro-batch 50 (50 % 4 == 2); the counter "
        "restarts at 0, so step 16 accumulates 4 micro-batches instead of 2",
        cause="accumulation_position"),
}

__all__ = ["EXPECTED", "Expected"]
