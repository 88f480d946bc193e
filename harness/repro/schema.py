"""The bug-report file: a frozen ``Repro`` and its TOML form (schema version 1).

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
    strategy = "..."                            # optional: only when the run had one
    auto = true                                 # optional: the run recorded in auto mode (--auto)
    timeout_s = 300.0                           # default 300
    stall_s = 20.0                              # optional
    baseline_runs = 2                           # optional
    resume_nproc = 1                            # optional: an elastic trial, resumed on this many ranks
    loss_rtol = 0.001                           # optional, with resume_nproc: the elastic loss tolerance

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
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shlex
import sys
from dataclasses import dataclass, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

SCHEMA_VERSION = 1
VERDICTS = ("pass", "fail", "error")
WHERE = ("trace", "final")
LAUNCHERS = ("pool", "subprocess", "torchrun")
DEFAULT_TIMEOUT_S = 300.0


class ReproError(ValueError):
    """A repro file that cannot be used (malformed, a bad field, a script that changed or is missing).

    The message names the file and the field, and says what to do."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Script:
    """What runs: a script path, an inline script (text + file name) or a built-in scenario."""

    sha256: str
    path: str | None = None
    text: str | None = None
    name: str | None = None
    scenario: str | None = None
    args: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "args", tuple(self.args))

    @property
    def kind(self) -> str:
        return "scenario" if self.scenario is not None else "inline" if self.text is not None else "path"

    @property
    def label(self) -> str:
        return self.scenario or self.path or self.name or "?"


@dataclass(frozen=True)
class ExpectedDivergence:
    """The first divergence a report expects (what ``harness.oracle.Divergence`` says, without tensors)."""

    rank: int
    fields: tuple[str, ...]
    where: str = "trace"
    step: int | None = None
    attempt: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))

    @classmethod
    def from_divergence(cls, d) -> ExpectedDivergence | None:
        if d is None:
            return None
        return cls(rank=d.rank, fields=tuple(d.fields), where=d.where, step=d.step, attempt=d.attempt)

    def same_as(self, other: ExpectedDivergence | None) -> bool:
        """Same step, rank, fields and place (the attempt may differ: a rerun may resume elsewhere)."""
        return other is not None and (self.step, self.rank, self.fields, self.where) == (
            other.step, other.rank, other.fields, other.where)

    def describe(self) -> str:
        at = "final state" if self.where == "final" else f"step {self.step}"
        attempt = f", attempt {self.attempt}" if self.attempt is not None else ""
        return f"{at}, rank {self.rank}{attempt}: {', '.join(self.fields)}"

    def to_json(self) -> dict:
        return {"step": self.step, "rank": self.rank, "attempt": self.attempt, "fields": list(self.fields),
                "where": self.where}


@dataclass(frozen=True)
class Expected:
    """What the reported run ended with."""

    verdict: str
    outcome: str
    message: str = ""
    hint: str | None = None
    first_divergence: ExpectedDivergence | None = None
    cause: str | None = None  # the diagnosis's likely cause, where the result had one

    @classmethod
    def from_result(cls, result) -> Expected:
        diagnosis = getattr(result, "diagnosis", None)
        return cls(verdict=result.verdict, outcome=str(result.outcome), message=result.message or "",
                   hint=getattr(result, "hint", None),
                   first_divergence=ExpectedDivergence.from_divergence(result.first_divergence),
                   cause=getattr(diagnosis, "cause", None))

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "outcome": self.outcome, "message": self.message, "hint": self.hint,
                "cause": self.cause,
                "first_divergence": self.first_divergence.to_json() if self.first_divergence else None}


@dataclass(frozen=True)
class Environment:
    """Library versions and determinism-relevant variables (the baseline cache key's environment)."""

    python: str
    torch: str
    numpy: str
    harness: str
    variables: dict = field(default_factory=dict)

    @classmethod
    def current(cls) -> Environment:
        """This process's environment, as the baseline cache key sees it (``baseline.key_inputs``)."""
        from harness.engine.baseline import key_inputs
        from harness.engine.target import Target

        inputs = key_inputs(Target(name="-", module="-"), nproc=1, backend="-", script_args=(), runs=1)
        v = inputs["versions"]
        variables = {k: str(val) for k, val in sorted(inputs["env"].items()) if val is not None}
        return cls(python=v["python"], torch=v["torch"], numpy=v["numpy"], harness=v["harness"], variables=variables)

    def differences(self, here: Environment) -> list[str]:
        """One line per field that differs: ``environment.torch: recorded '2.4.0', here '2.13.0'``."""
        out = []
        for name in ("python", "torch", "numpy", "harness"):
            a, b = getattr(self, name), getattr(here, name)
            if a != b:
                out.append(f"environment.{name}: recorded {a!r}, here {b!r}")
        for k in sorted(self.variables.keys() | here.variables.keys()):
            a, b = self.variables.get(k), here.variables.get(k)
            if a != b:
                show = lambda x: "(unset)" if x is None else repr(x)  # noqa: E731
                out.append(f"environment.variables.{k}: recorded {show(a)}, here {show(b)}")
        return out

    def to_json(self) -> dict:
        return {"python": self.python, "torch": self.torch, "numpy": self.numpy, "harness": self.harness,
                "variables": dict(self.variables)}


# ----------------------------------------------------------------------------------------------- Repro


@dataclass(frozen=True)
class Repro:
    """One bug report. Write one from a run with ``Repro.from_result(result).dump(path)``."""

    script: Script
    nproc: int
    backend: str
    seed: int
    plan: str
    environment: Environment
    expected: Expected
    launcher: str = "pool"
    strategy: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    stall_s: float | None = None
    baseline_runs: int | None = None
    auto: bool = False
    resume_nproc: int | None = None  # an elastic trial: the attempts after the first fault on this many ranks
    loss_rtol: float | None = None  # the elastic oracle's loss tolerance (with resume_nproc)
    created: str = ""
    replay: str = ""
    schema: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ from a run

    @classmethod
    def from_result(cls, result, *, inline: bool = False, script_args=None, launcher: str = "pool",
                    strategy: str | None = None, timeout_s: float | None = None, stall_s: float | None = None,
                    baseline_runs: int | None = None, resume_nproc: int | None = None,
                    loss_rtol: float | None = None) -> Repro:
        """The report of ``result`` (a ``harness.oracle.RunResult``), pass or fail.

        The target (``result.target``) must still exist: a script path is read (relative to the
        current folder, as the run took it) and hashed; ``inline=True`` embeds its text. The script
        arguments, ``--timeout``, ``--stall`` and ``--strategy`` are taken from the arguments when
        given, else from ``result.replay``; the strategy also from ``result.strategy`` where the result
        has one. The environment is this process's (the one the run used).

        An elastic trial (``resume_nproc``, ``loss_rtol``): from the arguments when given, else from the
        elastic oracle's ``result.compared["elastic"]`` (the exact tolerance it applied), else from the
        replay command.
        """
        from harness.engine.target import UsageError, resolve_target

        replay = _parse_replay(result.replay or "")
        try:
            target = resolve_target(result.target)
        except UsageError as e:
            raise ReproError(f"cannot write a repro of target {result.target!r}: {e}") from None
        args = tuple(replay["args"] if script_args is None else script_args)
        script = _script_for(target, args, inline=inline)
        strategy = strategy or getattr(result, "strategy", None) or replay.get("strategy")
        if timeout_s is None:
            timeout_s = replay.get("timeout_s", DEFAULT_TIMEOUT_S)
        if stall_s is None:
            stall_s = replay.get("stall_s")
        auto = bool(getattr(result, "auto", False) or replay.get("auto"))
        elastic = (getattr(result, "compared", None) or {}).get("elastic") or {}
        sizes = elastic.get("world_sizes") or []
        if resume_nproc is None:
            resume_nproc = sizes[1] if len(sizes) == 2 else replay.get("resume_nproc")
        if resume_nproc == result.nproc:
            resume_nproc = None  # the same world size: an ordinary trial
        if resume_nproc is None:
            loss_rtol = None
        elif loss_rtol is None:
            loss_rtol = elastic.get("loss_rtol", replay.get("loss_rtol"))
        if launcher not in LAUNCHERS:
            raise ReproError(f"launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}")
        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(script=script, nproc=result.nproc, backend=result.backend,
                   seed=result.seed if result.seed is not None else 0, plan=result.plan or "random",
                   environment=Environment.current(), expected=Expected.from_result(result), launcher=launcher,
                   strategy=strategy or None, timeout_s=float(timeout_s), stall_s=stall_s,
                   baseline_runs=baseline_runs, auto=auto, resume_nproc=resume_nproc,
                   loss_rtol=None if loss_rtol is None else float(loss_rtol), created=created,
                   replay=result.replay or "")

    # ------------------------------------------------------------------ TOML

    def to_toml(self) -> dict:
        """The TOML document as a dict (None values left out: TOML has no null)."""
        s = self.script
        script = {"path": s.path, "text": s.text, "name": s.name, "scenario": s.scenario, "sha256": s.sha256,
                  "args": list(s.args)}
        run = {"nproc": self.nproc, "backend": self.backend, "seed": self.seed, "plan": self.plan,
               "launcher": self.launcher, "strategy": self.strategy, "timeout_s": float(self.timeout_s),
               "stall_s": None if self.stall_s is None else float(self.stall_s), "baseline_runs": self.baseline_runs,
               "auto": True if self.auto else None, "resume_nproc": self.resume_nproc,
               "loss_rtol": None if self.loss_rtol is None else float(self.loss_rtol)}
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
        """Keyword arguments of ``harness.engine.run`` for a rerun (the target and launcher excluded)."""
        kw = dict(nproc=self.nproc, backend=self.backend, seed=self.seed, plan=self.plan,
                  script_args=self.script.args, timeout_s=self.timeout_s, stall_s=self.stall_s,
                  baseline_runs=self.baseline_runs)
        if self.strategy is not None:
            kw["strategy"] = self.strategy
        if self.auto:
            kw["auto"] = True
        if self.resume_nproc is not None:
            kw["resume_nproc"] = self.resume_nproc
            if self.loss_rtol is not None:
                kw["loss_rtol"] = self.loss_rtol
        return kw


# ----------------------------------------------------------------------------------------------- helpers


def _drop_none(x):
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    return x


def _parse_replay(replay: str) -> dict:
    """Script args, --timeout, --stall, --strategy, --resume-nproc and --loss-rtol from a ``harness run`` replay
    command."""
    try:
        parts = shlex.split(replay)
    except ValueError:
        return {"args": []}
    out: dict = {"args": []}
    if "--" in parts:
        i = parts.index("--")
        parts, out["args"] = parts[:i], parts[i + 1:]
    if "--auto" in parts:
        out["auto"] = True
    for flag, key, conv in (("--timeout", "timeout_s", float), ("--stall", "stall_s", float),
                            ("--strategy", "strategy", str), ("--resume-nproc", "resume_nproc", int),
                            ("--loss-rtol", "loss_rtol", float)):
        for i, p in enumerate(parts[:-1]):
            if p == flag:
                try:
                    out[key] = conv(parts[i + 1])
                except ValueError:
                    pass
        for p in parts:
            if p.startswith(flag + "="):
                try:
                    out[key] = conv(p.split("=", 1)[1])
                except ValueError:
                    pass
    return out


def _display_path(path: str) -> str:
    """Relative to the current folder when the script is under it (a report travels with a checkout)."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def _script_for(target, args: tuple[str, ...], *, inline: bool) -> Script:
    if target.builtin:
        if inline:
            raise ReproError(f"--inline embeds a script file, but the target {target.name!r} is a built-in scenario; "
                             f"it is recorded by name (drop --inline)")
        return Script(sha256=sha256_file(scenario_file(target.module)), scenario=target.name, args=args)
    if inline:
        with open(target.script, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ReproError(f"--inline: {target.script} is not UTF-8 text; record it by path (drop --inline)") \
                from None
        return Script(sha256=hashlib.sha256(data).hexdigest(), text=text, name=os.path.basename(target.script),
                      args=args)
    return Script(sha256=sha256_file(target.script), path=_display_path(target.script), args=args)


def scenario_file(module: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ReproError(f"built-in scenario module {module} is not installed")
    return spec.origin


def check_inline_target(target_name: str, inline: bool) -> None:
    """Refuse, before a run, a --save-repro that could not be written (--inline of a scenario)."""
    if not inline:
        return
    from harness.engine.target import UsageError, resolve_target

    try:
        target = resolve_target(target_name)
    except UsageError:
        return  # the run reports it
    if target.builtin:
        raise ReproError(f"--inline embeds a script file, but the target {target.name!r} is a built-in scenario; "
                         f"it is recorded by name (drop --inline)")


# ----------------------------------------------------------------------------------------------- reading


_MISSING = object()


class _Table:
    """Typed access to one table of the document; every error names the file and the field."""

    def __init__(self, data, name: str, source: str):
        self.name, self.source = name, source
        if not isinstance(data, dict):
            raise self.error(None, f"must be a table ([{name}]), got {_type(data)}")
        self.data = data

    def field(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key, why: str) -> ReproError:
        where = f"field {self.field(key)}" if key else f"[{self.name}]"
        return ReproError(f"{self.source}: {where} {why}; fix it in the file, or write the file again with "
                          f"harness run --save-repro")

    def get(self, key, kind, *, required=True, default=None, check=None, what=None):
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise self.error(key, "is missing")
            return default
        ok = isinstance(value, kind) and not (kind in (int, (int, float)) and isinstance(value, bool))
        if not ok:
            raise self.error(key, f"must be {what or _kind_name(kind)}, got {_type(value)} {value!r}")
        if check is not None:
            why = check(value)
            if why:
                raise self.error(key, why)
        return value

    def str_list(self, key, *, required=True) -> tuple[str, ...]:
        value = self.get(key, list, required=required, default=[], what="a list of strings")
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise self.error(key, f"must be a list of strings; item {i} is {_type(v)} {v!r}")
        return tuple(value)

    def str_dict(self, key) -> dict:
        value = self.get(key, dict, required=False, default={}, what="a table of strings")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ReproError(f"{self.source}: field {self.field(key)}.{k} must be a string, got {_type(v)} "
                                 f"{v!r}; fix it in the file")
        return dict(value)

    def table(self, key, *, required=True):
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise self.error(key, "is missing (a table)")
            return None
        return _Table(value, self.field(key), self.source)

    def only(self, *known):
        unknown = sorted(set(self.data) - set(known))
        if unknown:
            raise self.error(unknown[0], f"is unknown in schema {SCHEMA_VERSION} (known here: {', '.join(known)})")


def _type(v) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a float", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _kind_name(kind) -> str:
    if kind == (int, float):
        return "a number"
    return _type(kind()) if isinstance(kind, type) else str(kind)


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
    r.only("nproc", "backend", "seed", "plan", "launcher", "strategy", "timeout_s", "stall_s", "baseline_runs",
           "auto", "resume_nproc", "loss_rtol")
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
    )
    if run["loss_rtol"] is not None:
        if run["resume_nproc"] is None:
            raise r.error("loss_rtol", "is only for an elastic trial (with run.resume_nproc)")
        run["loss_rtol"] = float(run["loss_rtol"])
    if run["resume_nproc"] is not None and run["auto"]:
        raise r.error("resume_nproc", "cannot be combined with run.auto (the elastic oracle needs the probe's "
                      "restored rows)")

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

    return Repro(script=script, environment=environment, expected=expected,
                 created=top.get("created", str, required=False, default=""),
                 replay=top.get("replay", str, required=False, default=""), schema=schema, **run)


def _plan_check(value: str):
    from harness.faults import FaultPlan

    try:
        plan = FaultPlan.parse(value)
    except ValueError as e:
        return f"is not a fault plan ({e})"
    if not plan:
        return "is empty: a repro needs the run's fault plan"
    return None
