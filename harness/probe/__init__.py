"""The in-process probe: what a training script calls to be tested by the harness.

Public API (a no-op outside the harness, so instrumented scripts still run under plain torchrun)::

    probe.run_dir() -> str                   folder for this run's checkpoints
    probe.step(step, loss=None, batch=None, model=None, optimizer=None, **extra)
                                             after each optimizer step (global step, 1-based)
    probe.point(name, **info)                a named fault point (the checkpointer calls these)
    probe.restored(step, model=None, optimizer=None, **extra)
                                             after a resume: the state restored (elastic oracle)
    probe.finish(model=None, optimizer=None, **state)
                                             at the end: the final state, every tensor, every byte
    probe.enabled() -> bool                  True inside the harness
    probe.InjectedFault                      raised by a fault whose signal is "exception"

    api.py       the calls above
    recorder.py  the per-process trace writer and fault trigger (the nemesis)
    digest.py    digests and typed key paths of tensors, nested state, optimizers, RNG states
"""

from harness.probe.api import enabled, finish, point, restored, run_dir, step
from harness.probe.recorder import InjectedFault
from harness.trace_schema import Point  # the point names the harness knows (probe.point(Point.COMMITTED, ...))

__all__ = ["run_dir", "step", "point", "restored", "finish", "enabled", "InjectedFault", "Point"]
