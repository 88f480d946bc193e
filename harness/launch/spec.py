"""What a launch is (LaunchSpec), how it ended (LaunchResult, log tails), and the environment of a rank."""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass, field
from typing import Callable, Protocol

from harness import run_env

# Defaults that a rank gets unless the caller's environment sets them (docs/design.md, section 1).
ENV_DEFAULTS = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

# Variables read when the interpreter or a native library starts, so a forked rank cannot change
# them afterwards: a fork server is started with them and only serves launches that agree.
STARTUP_ENV_PREFIXES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "LD_", "MALLOC_",
                        "TORCH_", "PYTORCH_")


class LaunchError(RuntimeError):
    """The launcher itself failed (not the training script)."""


@dataclass
class LaunchSpec:
    """One launch of ``nproc`` ranks of a script (or ``python -m module``)."""

    nproc: int
    log_dir: str  # rank{r}.log are written here
    script: str | None = None
    module: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # on top of os.environ, for every rank
    cwd: str | None = None
    timeout_s: float = 300.0
    attempt: int = 0  # TORCHELASTIC_RESTART_COUNT
    master_addr: str = "127.0.0.1"  # where a single-node launch's rendezvous store listens (only there)
    # Called in the harness process, about twice a second while the ranks run, with the seconds since
    # the launch began; a string it returns tears the launch down like a timeout and becomes
    # LaunchResult.stopped. An exception it raises tears the launch down, reaps it and propagates.
    watch: Callable[[float], str | None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if (self.script is None) == (self.module is None):
            raise ValueError("a LaunchSpec needs exactly one of script or module")
        if self.nproc < 1:
            raise ValueError(f"nproc must be >= 1, got {self.nproc}")
        self.args = tuple(str(a) for a in self.args)

    def log_path(self, rank: int) -> str:
        return os.path.join(self.log_dir, f"rank{rank}.log")

    def command(self) -> list[str]:
        """The argv after the interpreter: ``script args`` or ``-m module args``."""
        return ([self.script] if self.script is not None else ["-m", self.module]) + list(self.args)


@dataclass
class RankExit:
    rank: int
    pid: int | None
    returncode: int | None  # as subprocess: -N for signal N; None when unknown
    log_path: str
    elapsed_s: float = 0.0  # since the launch began
    torn_down: bool = False  # killed by the launcher (a peer failed, timeout, watch stop, interrupt)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def signal(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return None

    def describe(self) -> str:
        if self.returncode is None:
            how = "ended (exit status unknown)"
        elif self.returncode < 0:
            how = f"was killed by {self.signal}"
        else:
            how = f"exited with code {self.returncode}"
        return f"rank {self.rank} {how}" + (" (torn down by the launcher)" if self.torn_down else "")


@dataclass
class LaunchResult:
    exits: list[RankExit]
    timed_out: bool = False
    wall_s: float = 0.0
    launch_id: str = ""
    stopped: str | None = None  # what LaunchSpec.watch returned when it stopped the launch (not a timeout)

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.stopped is None and all(e.ok for e in self.exits)

    @property
    def first_failure(self) -> RankExit | None:
        """The rank whose failure ended the job: the earliest abnormal exit not caused by the launcher."""
        failed = [e for e in self.exits if not e.ok and not e.torn_down]
        return min(failed, key=lambda e: e.elapsed_s) if failed else None


class Launcher(Protocol):
    def launch(self, spec: LaunchSpec) -> LaunchResult: ...

    def close(self) -> None: ...

    def replay_args(self) -> tuple[str, ...]: ...

    @property
    def remote(self) -> bool: ...


class LauncherBase:
    """What every launcher shares: a no-op `close()` and use as a context manager."""

    def close(self) -> None:
        pass

    def replay_args(self) -> tuple[str, ...]:
        """The ``harness run`` options that choose this launcher again (none for the default pool)."""
        return ()

    @property
    def remote(self) -> bool:
        """Whether ranks may run on other machines (a launch prefix such as srun): then nothing about their
        hardware can be checked here."""
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def base_env() -> dict[str, str]:
    """os.environ with the rank defaults (OMP_NUM_THREADS=1, PYTHONHASHSEED=0) where it has none."""
    env = dict(os.environ)
    for key, value in ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def job_env(spec: LaunchSpec) -> dict[str, str]:
    """The environment shared by all ranks of a launch: ``base_env()``, then ``spec.env``."""
    env = base_env()
    env.update({k: str(v) for k, v in spec.env.items()})
    env["TORCHELASTIC_RESTART_COUNT"] = str(spec.attempt)
    env.setdefault(run_env.ATTEMPT, str(spec.attempt))
    env["TORCHELASTIC_RUN_ID"] = env[run_env.LAUNCH_ID] = uuid.uuid4().hex[:16]
    return env


def rank_env(env: dict[str, str], rank: int, nproc: int, master_addr: str, master_port: int) -> dict[str, str]:
    """A rank's environment, as torchrun sets it, with the rendezvous store hosted by the launcher."""
    return {
        **env,
        "RANK": str(rank), "WORLD_SIZE": str(nproc),
        "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nproc),
        "GROUP_RANK": "0", "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(nproc),
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }


def startup_env(env: dict[str, str]) -> tuple:
    """The part of an environment that must be fixed before the interpreter starts."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(STARTUP_ENV_PREFIXES)))


def log_tail(path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if it is missing); reads at most its last 64 KiB."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
