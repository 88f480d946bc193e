"""A job that saves nothing: every restart retrains from scratch. It reports only a named point and its final
state through the probe (no step rows), as a script instrumented half-way would.

Before the fix (GitHub issue #17) the harness said PASS bit_exact on "0 step rows"; it must say that no
resume was tested.
"""

import os

import torch
import torch.distributed as dist

from harness import probe


def main():
    dist.init_process_group(os.environ.get("HARNESS_BACKEND", "gloo"))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    for _ in range(5):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    probe.point("trained")
    probe.finish(model=model, optimizer=opt)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
