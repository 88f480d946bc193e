"""One trial's settings: the frozen ``TrialSpec``, its one argv form and its one table form.

A TrialSpec says what a trial is (target, world size, backend, strategy, launcher, fault plan, seed, limits,
what the oracle accepts, the script's arguments), not where its files go nor how the calling process
shows progress (``out_dir``, ``use_cache``, ``progress`` and a launcher object stay arguments of
``harness.engine.run``). Every part of the harness that repeats a trial derives its spec from another:
``dataclasses.replace(spec, plan=..., seed=..., strategy=...)`` (fuzz, certify, a repro rerun).

One table, ``FLAGS`` (field -> ``harness run`` flag, in the replay's order), makes

- ``add_trial_arguments(parser)``: the ``harness run`` options that describe a trial (the CLI's own
  options, ``--out``, ``--json``, ``--no-cache``, ``--save-repro``, stay the CLI's), and
  ``TrialSpec.from_namespace(ns, script_args)`` of what it parsed;
- ``to_argv()`` / ``from_argv(argv)``: the argument list of ``harness run`` (after ``harness run``);
  ``replay()`` is ``shlex.join(["harness", "run", *to_argv()])``, the replay command of the trial, which
  is made from the spec and never parsed back;
- ``to_json()`` / ``from_json(d)`` (a plain dict, what ``RunResult.spec`` and ``result.json`` hold) and
  ``to_toml()`` / ``from_toml(text)`` (a flat TOML table of the same fields).

Validation lives in ``__post_init__`` (so ``replace`` checks again): ``UsageError(message, field=NAME)``,
the message naming the flag as ``harness run`` spells it. What needs the machine or the files (does the
target exist, is there a GPU for nccl) is checked by ``harness.engine.run``.

``auto``: True (``--auto``), None (the command line's default: decide from the baseline), False (the
Python API's "never"). False has no flag: its argv form is that of None (``--auto`` absent), which the
command line resolves to the probe mode again for a script that records through the probe; it is the one
field whose argv round trip is not exact (``from_argv(to_argv(s)) == replace(s, auto=None)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from dataclasses import dataclass, field

from harness.engine.target import UsageError
from harness.faults import FaultPlan
from harness.launch.scratch import KINDS as SCRATCH_KINDS
from harness.settings import ACCEPTABLE_RNG, BACKENDS, DEFAULT_TIMEOUT_S, LAUNCHERS, STRATEGIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

#: ``--rdzv-timeout`` (harness.launch.torchrun.DEFAULT_RDZV_TIMEOUT_S, as a float)
DEFAULT_RDZV_TIMEOUT_S = 20.0
#: The fields that choose and configure the launcher (the launcher's ``replay_args()`` sets them).
LAUNCHER_FIELDS = ("launcher", "launch_prefix", "nnodes", "rdzv_endpoint", "rdzv_timeout_s")


@dataclass(frozen=True)
class TrialSpec:
    """What one trial is. Fields in the replay command's order; see the module docstring."""

    target: str = "default"  # a built-in scenario name or a script path
    nproc: int = 2
    backend: str = "auto"  # as given; harness.engine.run resolves auto (the result's spec holds gloo or nccl)
    seed: int = 0  # draws random faults
    launcher: str = "pool"
    launch_prefix: tuple[str, ...] = ()  # words put before torchrun (e.g. srun ...), torchrun only
    nnodes: int = 1  # torchrun only
    rdzv_endpoint: str | None = None  # torchrun only
    rdzv_timeout_s: float = DEFAULT_RDZV_TIMEOUT_S  # torchrun only
    resume_nproc: int | None = None  # an elastic trial: attempts after the first fault on this many ranks
    loss_rtol: float | None = None  # with resume_nproc: the elastic oracle's loss tolerance
    strategy: str | None = None  # $HARNESS_STRATEGY of the ranks; None: the scenario's default
    auto: bool | None = None  # auto mode: True, False (never), None (decide from the baseline)
    plan: str = "random"  # the fault plan's short form (FaultPlan.format())
    timeout_s: float = DEFAULT_TIMEOUT_S
    stall_s: float | None = None  # None: derived from the baseline's step times
    accept_rng: tuple[str, ...] = ()
    accept_lost_progress: bool = False
    baseline_runs: int | None = None  # None: 1 for a built-in scenario, 2 for a script
    scratch: str = "tmpfs"  # where the run folder lives (harness.launch.scratch): tmpfs, or disk
    script_args: tuple[str, ...] = field(default=())

    def __post_init__(self):
        _validate(self)

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def fault_plan(self) -> FaultPlan:
        return FaultPlan.parse(self.plan)

    def launcher_options(self) -> dict:
        """``harness.launch.make_launcher``'s arguments for this spec's launcher (``kind`` included)."""
        if self.launcher != "torchrun":
            return {"kind": self.launcher}
        return {"kind": "torchrun", "prefix": self.launch_prefix, "nnodes": self.nnodes,
                "rdzv_endpoint": self.rdzv_endpoint, "rdzv_timeout_s": self.rdzv_timeout_s}

    def with_launcher_args(self, args) -> TrialSpec:
        """This spec with the launcher a ``Launcher.replay_args()`` names (pool when ``args`` is empty)."""
        ns = _parser().parse_args([*args])
        return dataclasses.replace(self, **{k: v for k, v in _fields_of(ns).items() if k in LAUNCHER_FIELDS})

    def replace(self, **changes) -> TrialSpec:
        """``dataclasses.replace`` that names an unknown field as ``harness.engine.run`` would."""
        names = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in names:
                raise TypeError(f"unknown trial setting {name!r}; TrialSpec has {', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes) if changes else self

    # -- argv ------------------------------------------------------------------------------------------
    def to_argv(self) -> list[str]:
        """The arguments of ``harness run`` (after ``harness run``) that repeat this trial."""
        argv: list[str] = [self.target]
        for f in FLAGS:
            argv += f.emit(self)
        if self.script_args:
            argv += ["--", *self.script_args]
        return argv

    def replay(self) -> str:
        """The ``harness run`` command line of this trial (its replay command)."""
        return shlex.join(["harness", "run", *self.to_argv()])

    @classmethod
    def from_argv(cls, argv) -> TrialSpec:
        """The spec of ``harness run`` arguments (``to_argv``'s form; script arguments after ``--``).
        A bad argument raises UsageError."""
        argv = list(argv)
        own, script_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
        return cls.from_namespace(_parser().parse_args(own), script_args)

    @classmethod
    def from_namespace(cls, ns, script_args=()) -> TrialSpec:
        """The spec of what a parser with ``add_trial_arguments`` parsed (``script_args``: after ``--``)."""
        return cls(**_fields_of(ns), script_args=tuple(script_args))

    # -- tables ----------------------------------------------------------------------------------------
    def to_json(self, *, defaults: bool = True) -> dict:
        """Every field as plain JSON (tuples as lists); ``defaults=False``: only the fields that differ from
        the default (and the target)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not defaults and f.name != "target" and value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict, *, where: str = "") -> TrialSpec:
        """The spec of a ``to_json`` (or ``to_toml``) table; an unknown or mistyped field raises UsageError
        naming it (``where``: a prefix such as ``"run."`` for the message)."""
        if not isinstance(data, dict):
            raise UsageError(f"a trial spec is a table of fields, got {type(data).__name__}")
        kinds = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for name, value in data.items():
            if name not in kinds:
                raise UsageError(f"{where}{name} is not a trial setting (known: {', '.join(kinds)})", field=name)
            if isinstance(value, list):
                value = tuple(value)
            kw[name] = value
        return cls(**kw)

    def to_toml(self) -> str:
        """A flat TOML table of the fields that differ from the defaults (and the target); TOML has no null."""
        import tomli_w

        return tomli_w.dumps({k: v for k, v in self.to_json(defaults=False).items() if v is not None})

    @classmethod
    def from_toml(cls, text: str) -> TrialSpec:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"not a TOML table of trial settings: {e}") from None
        return cls.from_json(data)

    @classmethod
    def of_result(cls, result) -> TrialSpec | None:
        """The spec a ``harness.oracle.RunResult`` (or its ``to_json``/``result.json``) carries; None when it
        has none (a result made by hand, or by a harness before the spec)."""
        data = result.get("spec") if isinstance(result, dict) else getattr(result, "spec", None)
        return cls.from_json(data) if data else None


# ------------------------------------------------------------------------------------------- validation


def _number(value, name: str, flag: str, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise UsageError(f"{flag} must be {'a number' if kind is float else 'an integer'}, got {value!r}", field=name)
    return float(value) if kind is float else value


def _validate(s: TrialSpec) -> None:
    """Check and normalise every field in place (the dataclass is frozen: object.__setattr__)."""
    put = lambda name, value: object.__setattr__(s, name, value)  # noqa: E731
    if not isinstance(s.target, str) or not s.target:
        raise UsageError(f"the target must be a scenario name or a script path, got {s.target!r}", field="target")
    if isinstance(s.nproc, bool) or not isinstance(s.nproc, int) or s.nproc < 1:
        raise UsageError(f"--nproc must be an integer >= 1, got {s.nproc!r}", field="nproc")
    if s.backend not in BACKENDS:
        raise UsageError(f"unknown backend {s.backend!r}; choose one of {', '.join(BACKENDS)}", field="backend")
    put("seed", _number(s.seed, "seed", "--seed", int))
    if s.launcher not in LAUNCHERS:
        raise UsageError(f"unknown launcher {s.launcher!r}; choose one of {', '.join(LAUNCHERS)}", field="launcher")
    if isinstance(s.launch_prefix, str):
        put("launch_prefix", tuple(shlex.split(s.launch_prefix)))
    put("launch_prefix", tuple(s.launch_prefix))
    if not all(isinstance(w, str) for w in s.launch_prefix):
        raise UsageError(f"--launch-prefix takes words (strings), got {s.launch_prefix!r}", field="launch_prefix")
    put("rdzv_timeout_s", _number(s.rdzv_timeout_s, "rdzv_timeout_s", "--rdzv-timeout"))
    if s.launcher != "torchrun":  # torchrun's options mean nothing to another launcher (harness run ignores them)
        for name in LAUNCHER_FIELDS[1:]:
            put(name, _DEFAULTS[name])
    if isinstance(s.nnodes, bool) or not isinstance(s.nnodes, int) or s.nnodes < 1:
        raise UsageError(f"--nnodes must be an integer >= 1, got {s.nnodes!r}", field="nnodes")
    if s.nnodes > 1 and s.rdzv_endpoint is None:
        raise UsageError("several nodes need a rendezvous endpoint HOST:PORT (--rdzv-endpoint)", field="rdzv_endpoint")
    if s.rdzv_endpoint is not None:
        from harness.launch.torchrun import parse_endpoint

        try:
            parse_endpoint(s.rdzv_endpoint)
        except (ValueError, TypeError, AttributeError) as e:
            raise UsageError(f"--rdzv-endpoint: {e}", field="rdzv_endpoint") from None
    if not s.rdzv_timeout_s > 0:
        raise UsageError(f"--rdzv-timeout must be > 0 seconds, got {s.rdzv_timeout_s:g}", field="rdzv_timeout_s")
    if s.nproc % s.nnodes:
        raise UsageError(f"--nproc {s.nproc} is not a multiple of --nnodes {s.nnodes}", field="nnodes")
    if s.resume_nproc is not None and (isinstance(s.resume_nproc, bool) or not isinstance(s.resume_nproc, int)
                                       or s.resume_nproc < 1):
        raise UsageError(f"--resume-nproc must be an integer >= 1, got {s.resume_nproc!r}", field="resume_nproc")
    if s.resume_nproc == s.nproc:
        put("resume_nproc", None)  # the same world size: an ordinary, bit-exact trial
    if s.loss_rtol is not None:
        put("loss_rtol", _number(s.loss_rtol, "loss_rtol", "--loss-rtol"))
        if s.resume_nproc is None or not s.loss_rtol >= 0:
            raise UsageError(f"--loss-rtol {s.loss_rtol:g} needs --resume-nproc (another world size) and a value "
                             f">= 0", field="loss_rtol")
    if s.strategy is not None and s.strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {s.strategy!r}", field="strategy")
    if s.auto not in (None, True, False):
        raise UsageError(f"auto must be True, False or None, got {s.auto!r}", field="auto")
    if s.resume_nproc is not None and s.auto:
        raise UsageError("--resume-nproc cannot be combined with --auto: the elastic oracle needs the probe's "
                         "restored-state and per-sample records", field="resume_nproc")
    put("plan", _plan_text(s.plan))
    check_plan_ranks(FaultPlan.parse(s.plan), s.nproc, s.resume_nproc)
    put("timeout_s", _number(s.timeout_s, "timeout_s", "--timeout"))
    if not s.timeout_s > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {s.timeout_s:g}", field="timeout_s")
    if s.stall_s is not None:
        put("stall_s", _number(s.stall_s, "stall_s", "--stall"))
        if not s.stall_s > 0:
            raise UsageError(f"--stall must be > 0 seconds, got {s.stall_s:g}", field="stall_s")
    put("accept_rng", (s.accept_rng,) if isinstance(s.accept_rng, str) else tuple(s.accept_rng or ()))
    bad = [a for a in s.accept_rng if not isinstance(a, str) or a.removeprefix("rng:") not in ACCEPTABLE_RNG]
    if bad:
        raise UsageError(f"--accept-rng takes {', '.join(ACCEPTABLE_RNG)}; got {', '.join(map(repr, bad))}",
                         field="accept_rng")
    if not isinstance(s.accept_lost_progress, bool):
        raise UsageError(f"accept_lost_progress must be True or False, got {s.accept_lost_progress!r}",
                         field="accept_lost_progress")
    if s.baseline_runs is not None and (isinstance(s.baseline_runs, bool) or not isinstance(s.baseline_runs, int)
                                        or s.baseline_runs < 1):
        raise UsageError(f"--baseline-runs must be an integer >= 1, got {s.baseline_runs!r}", field="baseline_runs")
    if s.scratch not in SCRATCH_KINDS:
        raise UsageError(f"--scratch must be one of {', '.join(SCRATCH_KINDS)}, got {s.scratch!r}", field="scratch")
    if isinstance(s.script_args, str):
        raise UsageError(f"script_args is a list of arguments, not the string {s.script_args!r}", field="script_args")
    put("script_args", tuple(s.script_args or ()))
    if not all(isinstance(a, str) for a in s.script_args):
        raise UsageError(f"script arguments must be strings, got {s.script_args!r}", field="script_args")


def _plan_text(plan) -> str:
    """The canonical short form of a plan given as a FaultPlan, a string or a list (None: random)."""
    if plan is None:
        return "random"
    try:
        fp = FaultPlan.coerce(plan)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e), field="plan") from None
    if not fp:
        raise UsageError("the fault plan is empty, so no resume would be tested; give --kill STEP or --kill random",
                         field="plan")
    return fp.format()


def check_plan_ranks(plan: FaultPlan, nproc: int, resume_nproc: int | None = None) -> None:
    """A fault on a rank that does not exist never fires: refuse it before anything runs. With
    ``resume_nproc``, faults after the first are armed in attempts of that many ranks."""
    for i, fault in enumerate(plan):
        n, flag = (resume_nproc, "--resume-nproc") if resume_nproc is not None and i > 0 else (nproc, "--nproc")
        if fault.rank != "all" and fault.rank >= n:
            raise UsageError(f"fault {i + 1} ({fault.format()}) is on rank {fault.rank}, but the job has "
                             f"{flag} {n} (ranks 0..{n - 1})", field="plan")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialSpec)}


# ------------------------------------------------------------------------------------------- the table


def _num(x: float) -> str:
    """A number as the replay prints it: ``%g`` (``300``, ``0.001``), or every digit where ``%g`` would round."""
    text = f"{x:g}"
    return text if float(text) == x else repr(float(x))


@dataclass(frozen=True)
class Flag:
    """One field's ``harness run`` flag: how argparse reads it and how ``to_argv`` writes it."""

    field: str
    flag: str
    help: str
    kind: str = "value"  # value | const (a store-const switch) | list (repeatable)
    type: object = str
    choices: tuple | None = None
    metavar: str | None = None
    always: bool = False  # written even at its default
    const: object = True
    cli_default: object = None  # argparse's default where it is not the field's (with has_cli_default)
    has_cli_default: bool = False

    def emit(self, spec: TrialSpec) -> list[str]:
        value = getattr(spec, self.field)
        if self.field == "loss_rtol" and spec.resume_nproc is None:
            return []
        if self.field == "plan":
            return [x for fault in spec.fault_plan for x in (self.flag, fault.format())]
        if self.kind == "list":
            return [x for v in value for x in (self.flag, v)]
        if self.kind == "const":
            return [self.flag] if value is True else []
        if not self.always and value == _DEFAULTS[self.field]:
            return []
        if self.field == "launch_prefix":
            return [self.flag, shlex.join(value)]
        return [self.flag, _num(value) if self.type is float else str(value)]

    def add_to(self, parser) -> None:
        kw: dict = {"help": self.help, "dest": self.field}
        default = self.cli_default if self.has_cli_default else _DEFAULTS[self.field]
        if self.kind == "const":
            parser.add_argument(self.flag, action="store_const", const=self.const, default=default, **kw)
            return
        if self.kind == "list":
            parser.add_argument(self.flag, action="append", default=[], choices=self.choices, metavar=self.metavar,
                                **kw)
            return
        parser.add_argument(self.flag, type=self.type, default=default, choices=self.choices, metavar=self.metavar,
                            **kw)


#: Field -> flag, in the order ``to_argv`` writes them (the replay command's order since before the spec).
FLAGS: tuple[Flag, ...] = (
    Flag("nproc", "--nproc", "number of ranks (default 2)", type=int, always=True),
    Flag("backend", "--backend", "process group backend: auto = nccl with CUDA, else gloo", choices=BACKENDS,
         always=True),
    Flag("seed", "--seed", "seed for random faults (default 0)", type=int, always=True),
    Flag("launcher", "--launcher", "pool: fork from a warm process (default); subprocess: fresh python per rank; "
                                   "torchrun: torchrun's rendezvous (multi-node)", choices=LAUNCHERS),
    Flag("launch_prefix", "--launch-prefix", "command put before torchrun, e.g. 'srun --nodes 2 --ntasks-per-node 1' "
                                             "(--launcher torchrun)", metavar="CMD", cli_default="", has_cli_default=True),
    Flag("nnodes", "--nnodes", "nodes for --launcher torchrun (default 1)", type=int),
    Flag("rdzv_endpoint", "--rdzv-endpoint", "torchrun c10d rendezvous endpoint, needed with --nnodes > 1 "
                                             "(docs/multinode.md)", metavar="HOST:PORT"),
    Flag("rdzv_timeout_s", "--rdzv-timeout", "seconds a torchrun agent waits to reach the rendezvous endpoint and for "
                                             "all nodes to join (default 20)", type=float, metavar="S"),
    Flag("resume_nproc", "--resume-nproc", "resume on N ranks instead (an elastic resume, judged by the elastic "
                                           "oracle: exact state at the resume point and sample order, loss within "
                                           "--loss-rtol; never bit-exact)", type=int, metavar="N"),
    Flag("loss_rtol", "--loss-rtol", "with --resume-nproc: relative tolerance of the global loss after the resume "
                                     "(default 1e-3)", type=float, metavar="R"),
    Flag("strategy", "--strategy", "how the built-in scenarios wrap the model ($HARNESS_STRATEGY): ddp (default), "
                                   "fsdp (FSDP2 on a CPU mesh under gloo), deepspeed-zero0..3", choices=STRATEGIES),
    Flag("auto", "--auto", "record with auto mode (torch hooks, no probe calls needed); the default for a script "
                           "that records nothing through harness.probe", kind="const"),
    Flag("plan", "--kill", "fault(s) to inject, e.g. 12, 12@1, checkpoint.write:2@all:SIGTERM, random; repeatable "
                           "(default: random)", kind="list", metavar="PLAN"),
    Flag("timeout_s", "--timeout", "timeout of each launch in seconds (default 300)", type=float, metavar="S"),
    Flag("stall_s", "--stall", "stop an attempt when no rank records anything for S seconds (default: derived from "
                               "the baseline's step times)", type=float, metavar="S"),
    Flag("accept_rng", "--accept-rng", "accept knowingly that this RNG stream (python, numpy, torch, cuda, all) "
                                       "differs after the resume while training stays bit-exact: outcome rng_accepted "
                                       "(exit 0) instead of rng_only (exit 3); repeatable", kind="list",
         choices=ACCEPTABLE_RNG, metavar="STREAM"),
    Flag("accept_lost_progress", "--accept-lost-progress", "accept a resume from an older checkpoint than the newest "
                                                           "committed before the kill (a script that keeps one older "
                                                           "checkpoint on purpose) instead of lost_progress",
         kind="const", cli_default=False, has_cli_default=True),
    Flag("baseline_runs", "--baseline-runs", "uninterrupted runs compared to check reproducibility (default 2 for "
                                             "scripts, 1 for scenarios)", type=int, metavar="N"),
    Flag("scratch", "--scratch", "where the trial's run folder (its checkpoints) lives: tmpfs (default; a process "
                                 "kill loses no page cache, so fsync proves nothing there) or disk (the real "
                                 "filesystem, OUT/run)", choices=SCRATCH_KINDS),
)
#: Field -> its flag (what a CLI names in a UsageError's message; ``target`` and ``script_args`` are positional).
FLAG_OF = {f.field: f.flag for f in FLAGS} | {"target": "TARGET", "script_args": "-- SCRIPT_ARGS"}


def add_trial_arguments(parser, *, target: bool = True) -> None:
    """Add the ``harness run`` options that describe a trial to ``parser`` (``target``: the positional
    TARGET too). ``TrialSpec.from_namespace(parser.parse_args(...), script_args)`` reads them back."""
    if target:
        parser.add_argument("target", nargs="?", default=None,
                            help="built-in scenario name or path to a script (default: the 'default' scenario)")
    for f in FLAGS:
        f.add_to(parser)
        if f.field == "launcher":
            parser.add_argument("--no-pool", dest="launcher", action="store_const", const="subprocess",
                                help="same as --launcher subprocess")


def _fields_of(ns) -> dict:
    """The TrialSpec fields of a namespace parsed with ``add_trial_arguments`` (CLI forms to field values)."""
    out = {}
    for f in FLAGS:
        if hasattr(ns, f.field):
            out[f.field] = getattr(ns, f.field)
    if getattr(ns, "target", None) is not None:
        out["target"] = ns.target
    if "plan" in out:
        out["plan"] = list(out["plan"]) or None  # no --kill: a seeded random kill (a PASS needs a resume)
    if "accept_rng" in out:
        out["accept_rng"] = tuple(out["accept_rng"])
    if "launch_prefix" in out:
        try:
            out["launch_prefix"] = tuple(shlex.split(out["launch_prefix"] or ""))
        except ValueError as e:
            raise UsageError(f"--launch-prefix {out['launch_prefix']!r}: {e}", field="launch_prefix") from None
    if out.get("auto") is False:
        out["auto"] = None
    return out


class _RaisingParser(argparse.ArgumentParser):
    """argparse whose errors are UsageError (``from_argv`` is called by code, not only by a terminal)."""

    def error(self, message):
        raise UsageError(f"harness run: {message}")


_PARSER = None


def _parser() -> argparse.ArgumentParser:
    global _PARSER
    if _PARSER is None:
        parser = _RaisingParser(prog="harness run", add_help=False)
        add_trial_arguments(parser)
        _PARSER = parser
    return _PARSER


__all__ = ["TrialSpec", "FLAGS", "FLAG_OF", "Flag", "LAUNCHER_FIELDS", "add_trial_arguments", "check_plan_ranks",
           "DEFAULT_RDZV_TIMEOUT_S"]
