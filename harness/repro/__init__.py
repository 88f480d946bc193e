"""Bug reports as files: a run, its environment and its result in one TOML file; ``harness repro`` reruns it.

Write one from any ``harness.oracle.RunResult`` (pass or fail), in the process that ran it (the
target's path is read relative to the current folder, as the run took it)::

    from harness.engine import run
    from harness.repro import Repro

    result = run("train.py", nproc=2, plan="7", script_args=["--steps", "12"])
    Repro.from_result(result).dump("bug.toml")                  # script by path (with its sha256)
    Repro.from_result(result, inline=True).dump("bug.toml")     # script text embedded

The trial is the result's spec (``RunResult.spec``, a ``harness.engine.TrialSpec``: script arguments,
limits, launcher, plan, ...); keyword arguments (``script_args=``, ``timeout_s=``, ``stall_s=``,
``launcher=``, ...) replace its fields. ``Repro.from_result`` raises ``ReproError`` when the target no
longer exists.

Read and rerun::

    repro = Repro.load("bug.toml")            # ReproError names the file, the field and what to do
    outcome = rerun(repro, repro_path="bug.toml")
    outcome.status, outcome.exit_code         # "reproduces" 0 | "reproduces_differently" 1 |
                                              # "does_not_reproduce" 1 | "environment_differs" 2

    schema.py       Repro (frozen; its [run] is a harness.engine.TrialSpec), TOML load/dump, validation (the
                    schema is its docstring)
    script.py       Script: what runs (a path, inline text or a scenario) and its sha256
    expected.py     Expected, ExpectedDivergence: what the reported run ended with
    environment.py  Environment: versions and variables, compared on rerun
    reading.py      typed access to the file's tables (errors name the file and the field)
    errors.py       ReproError, SCHEMA_VERSION
    rerun.py        rerun(), compare(), ReproOutcome, statuses and exit codes
"""

from .rerun import (DOES_NOT_REPRODUCE, ENVIRONMENT_DIFFERS, EXIT_CODES, REPRODUCES, REPRODUCES_DIFFERENTLY,
                    STATUSES, ReproOutcome, compare, rerun, resolve_script)
from .schema import (SCHEMA_VERSION, Environment, Expected, ExpectedDivergence, Repro, ReproError, Script,
                     check_inline_target)

__all__ = [
    "Repro", "ReproError", "Script", "Expected", "ExpectedDivergence", "Environment", "SCHEMA_VERSION",
    "check_inline_target", "rerun", "compare", "resolve_script", "ReproOutcome", "STATUSES", "EXIT_CODES",
    "REPRODUCES", "REPRODUCES_DIFFERENTLY", "DOES_NOT_REPRODUCE", "ENVIRONMENT_DIFFERS",
]
