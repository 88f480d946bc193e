"""The default scenario plus an EMA of the weights, registered with the checkpointer as a custom object.

`EMA` keeps float copies of the model's floating-point state and an update counter; its decay warms
up with the counter (``min(decay, (1 + n) / (10 + n))``, as timm's ModelEmaV2/V3 and many diffusion
codebases do), so a resume must restore both the shadow weights and the counter (prior-art pitfall
11). It is not an nn.Module: it reaches the checkpoint through ``register_for_checkpointing`` and
its state_dict, replicated (rank 0 saves, every rank loads). `probe.step` records its digest as
``extra:ema`` after every optimizer step; `probe.finish` records it byte-exact.

Sizes, epochs, checkpoints: as the default scenario.

Run: ``torchrun --nproc-per-node 2 -m harness.scenarios.ema``
"""

import torch

from harness.scenarios._common import Scenario


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.95) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()
                       if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in _unwrap(model).state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach(), 1.0 - d)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, sd: dict) -> None:
        self.decay, self.updates = float(sd["decay"]), int(sd["updates"])
        for k, v in sd["shadow"].items():
            self.shadow[k].copy_(v)


def _unwrap(model):
    return getattr(model, "module", model)


class WithEMA(Scenario):
    """Default scenario plus an EMA model registered as a custom object."""

    name = "ema"

    def prepare(self, run) -> None:
        super().prepare(run)
        run.extras["ema"] = EMA(run.model)
        run.ckpt.register_for_checkpointing(run.extras["ema"])

    def after_step(self, run) -> None:
        run.extras["ema"].update(run.model)

    def step_extra(self, run) -> dict:
        return {"ema": run.extras["ema"].state_dict()}

    def final_extra(self, run) -> dict:
        return {"ema": run.extras["ema"].state_dict()}


def main(argv=None) -> None:
    WithEMA().main(argv)


if __name__ == "__main__":
    main()
