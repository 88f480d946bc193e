"""A launcher by its command-line name (``--launcher pool|subprocess|torchrun``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from harness.launch.spec import Launcher
from harness.settings import LAUNCHERS


def make_launcher(kind: str = "pool", prefix: tuple[str, ...] | list[str] = (), **torchrun_options) -> Launcher:
    """A launcher by its command-line name: pool, subprocess or torchrun (``prefix``: e.g. srun ...)."""
    if kind == "pool":
        from harness.launch.forkserver import ForkServerLauncher

        return ForkServerLauncher()
    if kind == "subprocess":
        from harness.launch.subproc import SubprocessLauncher

        return SubprocessLauncher()
    if kind == "torchrun":
        from harness.launch.torchrun import TorchrunLauncher

        return TorchrunLauncher(prefix=prefix, **torchrun_options)
    raise ValueError(f"unknown launcher {kind!r}; choose one of {', '.join(LAUNCHERS)}")


@contextmanager
def borrowed(launcher: Launcher | None = None, kind: str = "pool", prefix: tuple[str, ...] | list[str] = (),
             **torchrun_options) -> Iterator[Launcher]:
    """``launcher`` as it is (its owner closes it), or, when None, a new one of ``kind`` (``make_launcher``'s
    arguments) that is closed on leaving the block: the one way a trial, a campaign or a rerun gets a launcher."""
    if launcher is not None:
        yield launcher
        return
    own = make_launcher(kind, prefix, **torchrun_options)
    try:
        yield own
    finally:
        own.close()
