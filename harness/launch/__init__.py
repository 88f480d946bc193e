"""Start and reap the rank processes of one training job.

Three launchers share one contract (``Launcher``: ``launch(LaunchSpec) -> LaunchResult``, ``close()``):

- ``ForkServerLauncher`` (default, ``pool``): ranks forked from a warm zygote with torch imported.
- ``SubprocessLauncher`` (``subprocess``): each rank a fresh ``python script.py``.
- ``TorchrunLauncher`` (``torchrun``): torchrun's c10d rendezvous, multi-node, optionally under srun.

Every rank gets the torchrun environment (docs/design.md, section 1) and its own log
``LaunchSpec.log_dir/rank{r}.log``. When a rank exits abnormally the others are killed at once; a
launch past its timeout is killed and marked ``timed_out``; ``LaunchSpec.watch`` is called about
twice a second while the ranks run, and a string it returns stops the launch the same way
(``LaunchResult.stopped``); every process is reaped on every path, Ctrl-C and an exception raised by
``watch`` included (the exception propagates after the cleanup). The pool and subprocess launchers
share one supervision loop (``harness.launch.supervisor``) and host the rendezvous store on
``LaunchSpec.master_addr`` only, loopback by default (``harness.launch.store``); torchrun's stores
listen on every interface (``harness.launch.torchrun``).

``scratch_dir`` (``harness.launch.scratch``) gives a trial's run folder (its checkpoints) a place on
tmpfs, removed however the trial ends, with what a process kill does and does not prove there.
"""

from harness.launch.spec import LaunchError, LaunchResult, LaunchSpec, Launcher, RankExit

from harness.launch.factory import LAUNCHERS, make_launcher
from harness.launch.scratch import Scratch, scratch_dir


def __getattr__(name):
    if name == "ForkServerLauncher":
        from harness.launch.forkserver import ForkServerLauncher

        return ForkServerLauncher
    if name == "SubprocessLauncher":
        from harness.launch.subproc import SubprocessLauncher

        return SubprocessLauncher
    if name == "TorchrunLauncher":
        from harness.launch.torchrun import TorchrunLauncher

        return TorchrunLauncher
    raise AttributeError(name)


__all__ = ["LaunchSpec", "LaunchResult", "RankExit", "Launcher", "LaunchError", "make_launcher", "LAUNCHERS",
           "ForkServerLauncher", "SubprocessLauncher", "TorchrunLauncher", "Scratch", "scratch_dir"]
