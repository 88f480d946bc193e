"""Rerun a repro file and say whether it reproduces.

Statuses (exactly one), with ``harness repro``'s exit codes:

| status                  | exit | when |
|-------------------------|------|------|
| reproduces              | 0    | same outcome, and the same first divergence (step, rank, fields, trace/final) or none on both |
| reproduces_differently  | 1    | the run still does not pass, but with another outcome or first divergence (both are named) |
| does_not_reproduce      | 1    | the report expected a non-pass, and the run now passes |
| environment_differs     | 2    | a recorded version or variable differs here (each is named): the rerun still ran and its own
                                   status is reported as ``rerun_status``, but the comparison may not hold |

A report of a passing run that passes again reproduces; one that now fails reproduces differently.
An elastic report (``run.resume_nproc``) reruns as an elastic trial and is compared on the elastic
oracle's outcome (``elastic_pass``, ``not_elastic``, ...) the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .environment import Environment
from .errors import ReproError
from .expected import Expected, ExpectedDivergence
from .schema import Repro
from .script import scenario_file, sha256_file, sha256_text

REPRODUCES = "reproduces"
REPRODUCES_DIFFERENTLY = "reproduces_differently"
DOES_NOT_REPRODUCE = "does_not_reproduce"
ENVIRONMENT_DIFFERS = "environment_differs"
STATUSES = (REPRODUCES, REPRODUCES_DIFFERENTLY, DOES_NOT_REPRODUCE, ENVIRONMENT_DIFFERS)
EXIT_CODES = {REPRODUCES: 0, REPRODUCES_DIFFERENTLY: 1, DOES_NOT_REPRODUCE: 1, ENVIRONMENT_DIFFERS: 2}
TITLES = {REPRODUCES: "reproduces", REPRODUCES_DIFFERENTLY: "reproduces differently",
          DOES_NOT_REPRODUCE: "does not reproduce", ENVIRONMENT_DIFFERS: "environment differs"}


@dataclass(frozen=True)
class ReproOutcome:
    """What a rerun of a repro file gave."""

    status: str  # one of STATUSES
    rerun_status: str  # the comparison alone (never environment_differs)
    message: str
    expected: Expected
    result: object  # harness.oracle.RunResult of the rerun
    environment_differences: tuple[str, ...] = ()
    repro_path: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def title(self) -> str:
        return TITLES[self.status]

    def to_json(self) -> dict:
        return {"status": self.status, "rerun_status": self.rerun_status, "exit_code": self.exit_code,
                "message": self.message, "repro": self.repro_path, "expected": self.expected.to_json(),
                "environment_differences": list(self.environment_differences), "result": self.result.to_json()}


def compare(expected: Expected, result) -> tuple[str, str]:
    """(status, message) of a rerun ``result`` against what the report expected (environment aside)."""
    got = ExpectedDivergence.from_divergence(result.first_divergence)
    outcome = str(result.outcome)
    want = expected.first_divergence
    was = f"{expected.outcome}" + (f" at {want.describe()}" if want else "")
    now = f"{outcome}" + (f" at {got.describe()}" if got else "")
    same_div = (want is None and got is None) or (want is not None and want.same_as(got))
    if outcome == expected.outcome and same_div:
        return REPRODUCES, f"same outcome and first divergence: {now}"
    from harness.oracle import VerdictKind

    if result.verdict == VerdictKind.PASS:
        return DOES_NOT_REPRODUCE, f"the run now passes ({outcome}); the report had {was}"
    return REPRODUCES_DIFFERENTLY, f"now {now}; the report had {was}"


def resolve_script(repro: Repro, *, repro_path: str | None, workdir: str, ignore_hash: bool = False) -> str:
    """The target to run: a path that exists (its hash checked), or the inline text written to ``workdir``."""
    s = repro.script
    where = repro_path or "the repro file"
    if s.kind == "scenario":
        from harness.engine.target import UsageError, resolve_target

        try:
            target = resolve_target(s.scenario)
        except UsageError as e:
            raise ReproError(f"{where}: field script.scenario: {e}") from None
        path, actual = scenario_file(target.module), None
        actual = sha256_file(path)
        _check_hash(s.sha256, actual, path, where, ignore_hash)
        return target.name
    if s.kind == "inline":
        actual = sha256_text(s.text)
        _check_hash(s.sha256, actual, f"{where} [script] text", where, ignore_hash)
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, s.name)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(s.text)
        return path
    tried = [os.path.abspath(s.path)]
    if repro_path and not os.path.isabs(s.path):
        tried.append(os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(repro_path)), s.path)))
    found = next((p for p in tried if os.path.isfile(p)), None)
    if found is None:
        raise ReproError(f"{where}: field script.path: no such script {s.path!r} (looked at "
                         f"{' and '.join(dict.fromkeys(tried))}); run harness repro from the folder the report was "
                         f"made in, or fix the path in the file")
    _check_hash(s.sha256, sha256_file(found), found, where, ignore_hash)
    return found


def _check_hash(recorded: str, actual: str, path: str, where: str, ignore_hash: bool) -> None:
    if recorded != actual and not ignore_hash:
        raise ReproError(f"{where}: field script.sha256: the script changed since the report was written: "
                         f"{path} has sha256 {actual}, the report recorded {recorded}; rerun with --ignore-hash to "
                         f"run it as it is now (e.g. to check a fix), or get the script the report was made with")


def rerun(repro: Repro, *, repro_path: str | None = None, out_dir: str | None = None, ignore_hash: bool = False,
          use_cache: bool = True, launcher=None, progress=None) -> ReproOutcome:
    """Run the report's trial again and compare it with what the report expected.

    The trial is the report's spec (``repro.spec``) on the script as found here. launcher: a
    ``harness.launch.Launcher`` to reuse; by default the engine makes one of the spec's kind and closes
    it. Raises ReproError (a bad or stale file) and ``harness.engine.UsageError`` (a plan the baseline
    refuses) before the trial; everything else is in the outcome.
    """
    from harness.engine import run

    here = Environment.current()
    differences = tuple(repro.environment.differences(here))
    if out_dir is None:
        from harness.engine.target import Target
        from harness.engine.trial import default_out_dir

        out_dir = default_out_dir(Target(name=f"repro-{os.path.basename(repro.script.label)}", script="-"))
    out_dir = os.path.abspath(out_dir)
    # An inline script is written into the output folder, so the files and the replay command stay valid.
    target = resolve_script(repro, repro_path=repro_path, workdir=os.path.join(out_dir, "script"),
                            ignore_hash=ignore_hash)
    result = run(repro.spec.replace(target=target), out_dir=out_dir, use_cache=use_cache, launcher=launcher,
                 progress=progress)
    rerun_status, message = compare(repro.expected, result)
    status = ENVIRONMENT_DIFFERS if differences else rerun_status
    if differences:
        message = (f"the environment differs from the report's ({len(differences)} field(s)), so the comparison may "
                   f"not hold; with this environment the run {TITLES[rerun_status]}: {message}")
    return ReproOutcome(status=status, rerun_status=rerun_status, message=message, expected=repro.expected,
                        result=result, environment_differences=differences, repro_path=repro_path)
