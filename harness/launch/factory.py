"""A launcher by its command-line name (``--launcher pool|subprocess|torchrun``)."""

from __future__ import annotations

from harness.launch.spec import Launcher

LAUNCHERS = ("pool", "subprocess", "torchrun")


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
