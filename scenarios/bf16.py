"""The default scenario under bf16 autocast on CPU (`torch.autocast("cpu", dtype=torch.bfloat16)`).

Matmuls run in bfloat16, the parameters and AdamW state stay float32, the loss is computed in
float32 by autocast's cross_entropy policy. On CUDA the same autocast runs on the GPU. Everything
else (data, schedule, accumulation, checkpoints, sizes, epoch boundaries) is the default scenario's.

Run: ``torchrun --nproc-per-node 2 -m harness.scenarios.bf16``
"""

import torch
import torch.nn.functional as F

from harness.scenarios._common import Scenario


class BF16(Scenario):
    """Default scenario under bf16 autocast (CPU or CUDA)."""

    name = "bf16"

    def forward_loss(self, run, batch):
        x, y = batch
        with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16):
            logits = run.model(x)
            return F.cross_entropy(logits, y)


def main(argv=None) -> None:
    BF16().main(argv)


if __name__ == "__main__":
    main()
