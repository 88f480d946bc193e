"""The bug-report file: a frozen ``Repro`` and its TOML form (schema version 1); its parts live beside it
(``script.py``, ``expected.py``, ``environment.py``; ``reading.py`` the typed table access; ``errors.py``).

A repro file says what ran (the script, by path or inline, with its sha256; its arguments; world size,
backend, strategy, launcher, the concrete fault plan and seed), in which environment (python, torch,
numpy and harness versions; the determinism-relevant variables of the baseline cache key), and what
happened (verdict, outcome, first divergence). ``harness repro FILE`` reruns it and compares.

Schema 1 (every field is checked on load; an unknown field is refused, so a typo never passes silently;
``resume_nproc`` and ``loss_rtol`` were added later, as optional fields, so older files still read)::

    schema = 1                                  # required: the format version
    created = "2025-01-31T12:00:00Z"            # informational
    replay = "harness run train.py --nproc 2 ..."   # informational: the run's replay command

    [script]                                    # exactly one of path / text / scenario
    path = "train.py"                           # a script file (relative: to the current folder, else the
                                                #   repro file's folder)
    text = "..."                                # inline: the script's text, written to NAME to run
    name = "train.py"                           #   (inline only: the file name to write it as)
    scenario = "buggy/rng_from_rank0"           # a built-in scenario (sha256 of its module file)
    sha256 = "<64 hex digits>"                  # required: of the file's bytes (inline: of text, UTF-8)
    args = ["--steps", "12"]                    # the script's arguments (default none)

    [run]
    nproc = 2                                   # required, integer >= 1
    backend = "gloo"                            # required: gloo | nccl (as resolved by the run)
    seed = 0                                    # required
    plan = "7"                                  # required: the concrete fault plan (README grammar)
    launcher = "pool"                           # pool | subprocess | torchrun (default pool)
    launch_prefix = ["srun", "-N", "2"]         # optional, torchrun only: words put before torchrun
    nnodes = 2                                  # optional, torchrun only (default 1)
    rdzv_endpoint = "node0:29400"               # optional, torchrun only
    rdzv_timeout_s = 45.0                       # optional, torchrun only (default 20)
    strategy = "..."                            # optional: only when the run had one
    auto = true                                 # optional: the run recorded in auto mode (--auto)
    timeout_s = 300.0                           # default 300
    stall_s = 20.0                              # optional
    baseline_runs = 2                           # optional
    resume_nproc = 1                            # optional: an elastic trial, resumed on this many ranks
    loss_rtol = 0.001                           # optional, with resume_nproc: the elastic loss tolerance
    accept_rng = ["numpy"]                      # optional: RNG streams whose difference the run accepted
    accept_lost_progress = true                 # optional: the run accepted a resume from an older checkpoint

    [environment]                               # required, compared on rerun
    python = "3.11.9"
    torch = "2.13.0"
    numpy = "2.2.0"
    harness = "0.1.0"
    [environment.variables]                     # PYTHONHASHSEED, OMP_NUM_THREADS, CUBLAS_WORKSPACE_CONFIG,
    PYTHONHASHSEED = "0"                        #   HARNESS_* (not paths); an unset variable is absent
    OMP_NUM_THREADS = "1"

    [expected]                                  # required
    verdict = "fail"                            # pass | fail | error
    outcome = "divergence"                      # an outcome of the README's table
    message = "step 5, rank 0, attempt 1: ..."  # informational
    hint = "..."                                # informational, optional
    cause = "rng_not_restored"                  # informational, optional: the diagnosis's likely cause
    [expected.first_divergence]                 # absent when the run had none
    step = 5                                    # absent for a final-state divergence
    rank = 0
    attempt = 1                                 # optional
    fields = ["rng:python", "rng:numpy"]
    where = "trace"                             # trace | final

The ``[run]`` table is the trial's ``harness.engine.spec.TrialSpec`` (its fields but the target and the
script's arguments, which ``[script]`` holds); every rule of TrialSpec applies to it on load.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

from harness.engine.spec import TrialSpec
from harness.engine.target import UsageError
from harness.oracle import VERDICTS
from harness.settings import DEFAULT_TIMEOUT_S, LAUNCHERS

from .environment import Environment
from .errors import SCHEMA_VERSION, ReproError
from .expected import WHERE, Expected, ExpectedDivergence
from .reading import _Table
from .script import Script, _script_for, check_inline_target, scenario_file, sha256_file, sha256_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

#: The keys of ``[run]`` (TrialSpec fields), in the file's order; RUN_ALWAYS are written even at their default.
RUN_KEYS = ("nproc", "backend", "seed", "plan", "launcher", "launch_prefix", "nnodes", "rdzv_endpoint", "rdzv_timeout_s",
            "strategy", "timeout_s", "stall_s", "baseline_runs", "auto", "resume_nproc", "loss_rtol", "accept_rng",
            "accept_lost_progress")
RUN_ALWAYS = ("nproc", "backend", "seed", "plan", "launcher", "timeout_s")


# ----------------------------------------------------------------------------------------------- Repro


@dataclass(frozen=True)
class Repro:
    """One bug report. Write one from a run with ``Repro.from_result(result).dump(path)``."""

    script: Script
    spec: TrialSpec  # the trial: [run], with the target and the script's arguments of [script]
    environment: Environment
    expected: Expected
    created: str = ""
    replay: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self):
        # the file has no "never auto": the spec a file reads back as (auto True or undecided)
        spec = self.spec.replace(target=self.script.label, script_args=self.script.args,
                                 auto=True if self.spec.auto else None)
        object.__setattr__(self, "spec", spec)

    nproc = property(lambda self: self.spec.nproc)
    backend = property(lambda self: self.spec.backend)
    seed = property(lambda self: self.spec.seed)
    plan = property(lambda self: self.spec.plan)
    launcher = property(lambda self: self.spec.launcher)
    strategy = property(lambda self: self.spec.strategy)
    timeout_s = property(lambda self: self.spec.timeout_s)
    stall_s = property(lambda self: self.spec.stall_s)
    baseline_runs = property(lambda self: self.spec.baseline_runs)
    auto = property(lambda self: bool(self.spec.auto))
    resume_nproc = property(lambda self: self.spec.resume_nproc)  # an elastic trial: attempts after the first fault
    loss_rtol = property(lambda self: self.spec.loss_rtol)  # the elastic oracle's loss tolerance (with resume_nproc)

    # ------------------------------------------------------------------ from a run

    @classmethod
    def from_result(cls, result, *, inline: bool = False, script_args=None, launcher: str | None = None,
                    strategy: str | None = None, timeout_s: float | None = None, stall_s: float | None = None,
                    baseline_runs: int | None = None, resume_nproc: int | None = None,
                    loss_rtol: float | None = None) -> Repro:
        """The report of ``result`` (a ``harness.oracle.RunResult``), pass or fail.

        The trial is the result's spec (``RunResult.spec``: the TrialSpec the engine ran, concrete); the
        keyword arguments given replace its fields. The target (``result.target``) must still exist: a
        script path is read (relative to the current folder, as the run took it) and hashed;
        ``inline=True`` embeds its text. The environment is this process's (the one the run used).

        An elastic trial whose resume_nproc or loss_rtol is not given: the elastic oracle's record
        (``result.compared["elastic"]``, the exact tolerance it applied) where there is one.

        A result without a spec (made by a harness before the spec, or by hand) is read through its replay
        command, by ``TrialSpec.from_argv`` (the one parser of ``harness run``'s arguments); ReproError when
        that fails, naming what to do.
        """
        from harness.engine.target import resolve_target

        spec = _spec_of_result(result)
        try:
            target = resolve_target(result.target)
        except UsageError as e:
            raise ReproError(f"cannot write a repro of target {result.target!r}: {e}") from None
        args = tuple(spec.script_args if script_args is None else script_args)
        script = _script_for(target, args, inline=inline)
        elastic = (getattr(result, "compared", None) or {}).get("elastic") or {}
        sizes = elastic.get("world_sizes") or []
        if resume_nproc is None:
            resume_nproc = sizes[1] if len(sizes) == 2 else spec.resume_nproc
        if resume_nproc is None or resume_nproc == spec.nproc:
            loss_rtol = None  # an ordinary trial
        elif loss_rtol is None:
            loss_rtol = elastic.get("loss_rtol", spec.loss_rtol)
        if launcher is not None and launcher not in LAUNCHERS:
            raise ReproError(f"launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}")
        given = dict(launcher=launcher, strategy=strategy, timeout_s=timeout_s, stall_s=stall_s,
                     baseline_runs=baseline_runs)
        try:
            spec = spec.replace(**{k: v for k, v in given.items() if v is not None}, resume_nproc=resume_nproc,
                                loss_rtol=loss_rtol)
        except UsageError as e:
            raise ReproError(f"cannot write a repro of this run: {e}") from None
        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(script=script, spec=spec, environment=Environment.current(), expected=Expected.from_result(result),
                   created=created, replay=result.replay or "")

    # ------------------------------------------------------------------ TOML

    def to_toml(self) -> dict:
        """The TOML document as a dict (None values left out: TOML has no null)."""
        s = self.script
        script = {"path": s.path, "text": s.text, "name": s.name, "scenario": s.scenario, "sha256": s.sha256,
                  "args": list(s.args)}
        full, changed = self.spec.to_json(), self.spec.to_json(defaults=False)
        run = {k: full[k] for k in RUN_KEYS if k in RUN_ALWAYS or k in changed}
        run["auto"] = True if self.auto else None
        env = self.environment
        environment = {"python": env.python, "torch": env.torch, "numpy": env.numpy, "harness": env.harness,
                       "variables": dict(env.variables)}
        e = self.expected
        expected = {"verdict": e.verdict, "outcome": e.outcome, "message": e.message, "hint": e.hint,
                    "cause": e.cause}
        if e.first_divergence is not None:
            d = e.first_divergence
            expected["first_divergence"] = {"step": d.step, "rank": d.rank, "attempt": d.attempt,
                                            "fields": list(d.fields), "where": d.where}
        doc = {"schema": self.schema, "created": self.created, "replay": self.replay, "script": script, "run": run,
               "environment": environment, "expected": expected}
        return _drop_none(doc)

    def dumps(self) -> str:
        import tomli_w

        doc = self.to_toml()
        text = tomli_w.dumps(doc, multiline_strings=True)
        if tomllib.loads(text) != doc:  # a multi-line string cannot keep \r: escape everything instead
            text = tomli_w.dumps(doc)
        header = (f"# resume-harness bug report (schema {self.schema}). Rerun it with: harness repro THIS_FILE\n"
                  "# Fields: README.md, section 'Bug reports'.\n\n")
        return header + text

    def dump(self, path) -> str:
        """Write the file (atomically: a temporary file renamed into place); return its path."""
        path = os.fspath(path)
        text = self.dumps()
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise ReproError(f"cannot write the repro file {path}: {e.strerror or e}") from None
        return path

    @classmethod
    def load(cls, path) -> Repro:
        """Read and check a repro file; ReproError names the file, the field and what to do."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise ReproError(f"cannot read the repro file {path}: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ReproError(f"{path}: not UTF-8 text (byte {e.start}); a repro file is TOML, written by "
                             f"harness run --save-repro") from None
        return cls.loads(text, source=path)

    @classmethod
    def loads(cls, text: str, source: str = "<repro>") -> Repro:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ReproError(f"{source}: not valid TOML: {e}; fix the file there, or write it again with "
                             f"harness run --save-repro") from None
        return _from_doc(doc, source)

    # ------------------------------------------------------------------ rerun

    def run_kwargs(self) -> dict:
        """Keyword arguments of ``harness.engine.run`` for a rerun (the target and launcher excluded); a rerun
        passes ``self.spec`` itself."""
        s = self.spec
        kw = dict(nproc=s.nproc, backend=s.backend, seed=s.seed, plan=s.plan, script_args=s.script_args,
                  timeout_s=s.timeout_s, stall_s=s.stall_s, baseline_runs=s.baseline_runs)
        changed = s.to_json(defaults=False)
        for name in ("strategy", "auto", "resume_nproc", "loss_rtol", "accept_rng", "accept_lost_progress"):
            if name in changed:
                kw[name] = getattr(s, name)
        return kw


# ----------------------------------------------------------------------------------------------- helpers


def _drop_none(x):
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    return x


def _spec_of_result(result) -> TrialSpec:
    """The TrialSpec a RunResult carries; for one without (an older harness's, or made by hand), the spec of
    its replay command through ``TrialSpec.from_argv``."""
    import shlex

    try:
        spec = TrialSpec.of_result(result)
    except UsageError as e:
        raise ReproError(f"cannot write a repro of this run: its spec is not valid here: {e}") from None
    if spec is not None:
        return spec
    replay = result.replay or ""
    try:
        words = shlex.split(replay)
        if words[:2] != ["harness", "run"]:
            raise ValueError("it does not start with 'harness run'")
        return TrialSpec.from_argv(words[2:])
    except (ValueError, IndexError) as e:  # UsageError included
        raise ReproError(f"cannot write a repro of this run: the result has no spec and its replay command "
                         f"{replay!r} cannot be read ({e}); run it again with this harness, which records the spec "
                         f"in the result") from None


# ----------------------------------------------------------------------------------------------- reading


def _from_doc(doc: dict, source: str) -> Repro:
    top = _Table(doc, "", source)
    schema = top.get("schema", int)
    if schema != SCHEMA_VERSION:
        raise ReproError(f"{source}: field schema is {schema}, but this harness reads repro schema "
                         f"{SCHEMA_VERSION} only; use the resume-harness version that wrote it (see "
                         f"[environment] harness), or write the report again with harness run --save-repro")
    top.only("schema", "created", "replay", "script", "run", "environment", "expected")

    s = top.table("script")
    s.only("path", "text", "name", "scenario", "sha256", "args")
    given = [k for k in ("path", "text", "scenario") if k in s.data]
    if len(given) != 1:
        why = "none" if not given else " and ".join(given)
        raise s.error(None, f"must have exactly one of path, text (inline) or scenario, not {why}")
    hex_check = lambda v: None if len(v) == 64 and all(c in "0123456789abcdef" for c in v) else \
        "must be 64 lowercase hex digits (a sha256)"  # noqa: E731
    nonempty = lambda v: None if v else "must not be empty"  # noqa: E731
    script = Script(
        sha256=s.get("sha256", str, check=hex_check),
        path=s.get("path", str, required=False, check=nonempty),
        text=s.get("text", str, required=False),
        name=s.get("name", str, required="text" in s.data,
                   check=lambda v: None if v and os.path.basename(v) == v and v not in (".", "..")
                   else "must be a plain file name (no folder)"),
        scenario=s.get("scenario", str, required=False, check=nonempty),
        args=s.str_list("args", required=False),
    )
    if script.name is not None and script.text is None:
        raise s.error("name", "is only for an inline script (with text)")

    r = top.table("run")
    r.only(*RUN_KEYS)
    positive = lambda v: None if v > 0 else f"must be > 0, got {v}"  # noqa: E731
    run = dict(
        nproc=r.get("nproc", int, check=lambda v: None if v >= 1 else f"must be >= 1, got {v}"),
        backend=r.get("backend", str, check=lambda v: None if v in ("gloo", "nccl") else
                      f"must be gloo or nccl, got {v!r}"),
        seed=r.get("seed", int),
        plan=r.get("plan", str, check=_plan_check),
        launcher=r.get("launcher", str, required=False, default="pool",
                       check=lambda v: None if v in LAUNCHERS else f"must be one of {', '.join(LAUNCHERS)}, got {v!r}"),
        strategy=r.get("strategy", str, required=False, check=nonempty),
        timeout_s=float(r.get("timeout_s", (int, float), required=False, default=DEFAULT_TIMEOUT_S, check=positive)),
        stall_s=r.get("stall_s", (int, float), required=False, check=positive),
        baseline_runs=r.get("baseline_runs", int, required=False,
                            check=lambda v: None if v >= 1 else f"must be >= 1, got {v}"),
        auto=r.get("auto", bool, required=False, default=False),
        resume_nproc=r.get("resume_nproc", int, required=False,
                           check=lambda v: None if v >= 1 else f"must be >= 1, got {v}"),
        loss_rtol=r.get("loss_rtol", (int, float), required=False,
                        check=lambda v: None if v >= 0 else f"must be >= 0, got {v}"),
        accept_rng=r.str_list("accept_rng", required=False),
        accept_lost_progress=r.get("accept_lost_progress", bool, required=False, default=False),
        launch_prefix=r.str_list("launch_prefix", required=False),
        nnodes=r.get("nnodes", int, required=False, default=1),
        rdzv_endpoint=r.get("rdzv_endpoint", str, required=False),
        rdzv_timeout_s=r.get("rdzv_timeout_s", (int, float), required=False, default=20.0),
    )
    if run["loss_rtol"] is not None:
        if run["resume_nproc"] is None:
            raise r.error("loss_rtol", "is only for an elastic trial (with run.resume_nproc)")
        run["loss_rtol"] = float(run["loss_rtol"])
    if run["resume_nproc"] is not None and run["auto"]:
        raise r.error("resume_nproc", "cannot be combined with run.auto (the elastic oracle needs the probe's "
                      "restored rows)")

    try:  # every rule of a trial's settings (the checks above name the file's types)
        spec = TrialSpec(target=script.label, script_args=script.args, **run)
    except UsageError as err:
        raise ReproError(f"{source}: field run.{err.field or 'plan'}: {err}; fix it in the file, or write the file "
                         f"again with harness run --save-repro") from None

    e = top.table("environment")
    e.only("python", "torch", "numpy", "harness", "variables")
    environment = Environment(python=e.get("python", str), torch=e.get("torch", str), numpy=e.get("numpy", str),
                              harness=e.get("harness", str), variables=e.str_dict("variables"))

    x = top.table("expected")
    x.only("verdict", "outcome", "message", "hint", "cause", "first_divergence")
    from harness.oracle import OUTCOMES

    verdict = x.get("verdict", str, check=lambda v: None if v in VERDICTS else
                    f"must be one of {', '.join(VERDICTS)}, got {v!r}")
    outcome = x.get("outcome", str, check=lambda v: None if v in OUTCOMES else
                    f"must be an outcome of the README's table ({', '.join(OUTCOMES)}), got {v!r}")
    div = None
    d = x.table("first_divergence", required=False)
    if d is not None:
        d.only("step", "rank", "attempt", "fields", "where")
        where = d.get("where", str, required=False, default="trace",
                      check=lambda v: None if v in WHERE else f"must be trace or final, got {v!r}")
        div = ExpectedDivergence(
            rank=d.get("rank", int, check=lambda v: None if v >= 0 else f"must be >= 0, got {v}"),
            fields=d.str_list("fields"), where=where,
            step=d.get("step", int, required=where == "trace"),
            attempt=d.get("attempt", int, required=False))
    expected = Expected(verdict=verdict, outcome=outcome, message=x.get("message", str, required=False, default=""),
                        hint=x.get("hint", str, required=False), first_divergence=div,
                        cause=x.get("cause", str, required=False))

    return Repro(script=script, spec=spec, environment=environment, expected=expected,
                 created=top.get("created", str, required=False, default=""),
                 replay=top.get("replay", str, required=False, default=""), schema=schema)


def _plan_check(value: str):
    from harness.faults import FaultPlan

    try:
        plan = FaultPlan.parse(value)
    except ValueError as e:
        return f"is not a fault plan ({e})"
    if not plan:
        return "is empty: a repro needs the run's fault plan"
    return None


__all__ = ["Repro", "RUN_KEYS", "RUN_ALWAYS", "SCHEMA_VERSION", "ReproError", "Script", "Expected", "ExpectedDivergence",
           "Environment", "WHERE", "check_inline_target", "scenario_file", "sha256_file", "sha256_text"]
