"""The engine: baseline (cached), then a trial under a fault plan, then the oracle's verdict.

    from harness.engine import run
    result = run("tests/scripts/ddp_mlp.py", nproc=2, plan="12", seed=0)   # -> harness.oracle.RunResult

    spec.py      TrialSpec: what one trial is, its argv (the replay command) and its table forms
    target.py    what TARGET names: a built-in scenario or a script (Target, UsageError)
    baseline.py  the uninterrupted reference run, cached
    jobs.py      one run's folder and the launch of one attempt
    auto_mode.py what an auto-mode trial takes from its baseline (the digest index, what is not recorded)
    monitor.py   progress and stall detection while an attempt runs
    trial.py     run(): baseline, attempts under the plan, verdict
"""

from harness.engine.baseline import cache_root
from harness.engine.spec import TrialSpec, add_trial_arguments
from harness.engine.target import Target, UsageError, list_scenarios, resolve_target
from harness.engine.trial import BACKENDS, DEFAULT_TIMEOUT_S, replay_command, resolve_backend, run

__all__ = ["run", "TrialSpec", "add_trial_arguments", "resolve_target", "list_scenarios", "resolve_backend", "replay_command", "UsageError",
           "Target", "cache_root", "BACKENDS", "DEFAULT_TIMEOUT_S"]
