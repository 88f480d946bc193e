"""Running a campaign: every selected cell's trials, through one warm launcher and the baseline cache.

For each (scenario, world size) the baseline is computed once (or read from the cache that
``harness run`` shares) and profiled (``harness.certify.schedule.Profile``); each cell's plans are
drawn from that profile, and each trial is ``harness.engine.run`` with the same warm
``ForkServerLauncher``, so its baseline comes from the cache and its ranks fork in milliseconds.
Trial folders: ``OUT/trials/<cell>/<k>/`` (a passing trial's checkpoints are deleted, its trace and
result.json kept). Progress goes to stderr (rich).

What is no resume bug, and what certifies nothing (``conclude`` sets the summary's ``outcome`` and
``message`` on top of ``report_json``'s verdict rules):

- a baseline whose two uninterrupted runs differ (a script's; a built-in scenario runs once): the
  campaign checks every baseline before its first trial and stops at the first that is not
  reproducible, running no trial; the cells of that scenario and world size fail with one record of
  outcome ``nondeterministic_baseline`` each (plan "", its message, hint and first difference), the
  other cells are ``not_run``; outcome ``nondeterministic_baseline``, exit 1;
- a trial that stalled (``harness.engine.monitor.is_stall``: load alone can cause it) is run again, up
  to ``stall_retries`` times (its record's ``retries``); one that stalls every time is an error of
  outcome ``stall``, never a failure; with no other error nor failure the outcome is ``stall``, exit 4;
- no trial run at all (every cell n/a: the baseline never reaches the fault's point, has no step to
  kill, world size 1) is no PASS: outcome ``nothing_certified``, verdict error, exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import sys
import time
from contextlib import ExitStack

from harness.certify import report_json
from harness.certify.curves import baseline_curve, trial_curves
from harness.certify.errors import CertifyError
from harness.certify.matrix import CampaignSpec, Cell
from harness.certify.schedule import NotApplicable, Profile, plans_for
from harness.certify.shard import select
from harness.engine.monitor import is_stall

#: Files a certificate folder holds (an older certificate is never overwritten without --force).
REPORT_FILES = (report_json.FILE, "certificate.md", "certificate.html")
TRIAL_TIMEOUT_S = 180.0
#: How many times a trial that stalled is run again before it counts as stalled.
DEFAULT_STALL_RETRIES = 1
#: The summary's outcome beyond the verdict (``conclude``) and its exit code where it has its own.
OUTCOME_EXIT_CODES = {"nondeterministic_baseline": 1, "nothing_certified": 2, "stall": 4}


def cell_slug(cell: Cell) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", cell.id.replace("|", "__"))


def prepare_out(out_dir: str, *, force: bool) -> str:
    """The output folder, refusing one that holds a certificate unless ``force`` (which then removes it)."""
    out = os.path.abspath(out_dir)
    old = [f for f in REPORT_FILES if os.path.exists(os.path.join(out, f))]
    if old and not force:
        raise CertifyError(f"{out_dir} already holds a certificate ({', '.join(old)}); choose another --out, "
                           "or pass --force to replace it")
    if old:
        for f in REPORT_FILES:
            if os.path.exists(os.path.join(out, f)):
                os.remove(os.path.join(out, f))
        shutil.rmtree(os.path.join(out, "trials"), ignore_errors=True)
    elif os.path.isdir(os.path.join(out, "trials")) and os.listdir(os.path.join(out, "trials")):
        if not force:
            raise CertifyError(f"{out_dir} holds the trials of an unfinished campaign (trials/); choose another --out, "
                               "or pass --force to replace them")
        shutil.rmtree(os.path.join(out, "trials"), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    return out


class _Progress:
    """A rich progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool, say=None, console=None):
        self.enabled, self.total, self.done, self.say = enabled, total, 0, say
        self.counts = {"pass": 0, "fail": 0, "error": 0}
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = console or Console(stderr=True)
            self._bar = Progress(TextColumn("certify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=console, transient=False)
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def note(self, text: str) -> None:
        if self._bar is None:
            return
        if self.say is not None:  # the caller's printer, on the bar's console
            self.say(text)
        else:
            self._bar.console.print(f"harness certify: {text}", markup=False, highlight=False)

    def trial(self, cell: Cell, verdict: str) -> None:
        self.done += 1
        self.counts[verdict] += 1
        if self._bar is not None:
            c = self.counts
            self._bar.update(self._task, advance=1,
                             description=f"{cell.id}  pass {c['pass']} fail {c['fail']} error {c['error']}")

    def skip(self, n: int) -> None:
        """Trials a cell does not run (n/a)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def trial_spec(spec: CampaignSpec, scenario, ws: int):
    """The TrialSpec of every trial of ``scenario`` at world size ``ws`` (each trial replaces its plan): the
    campaign's backend, strategy and seed; the strategy reaches the ranks through it (the attempt's
    HARNESS_STRATEGY), never through this process's environment."""
    from harness.engine.spec import TrialSpec

    return TrialSpec(target=scenario.target, nproc=ws, backend=spec.backend, seed=spec.seed, strategy=spec.strategy,
                     script_args=tuple(scenario.args), timeout_s=TRIAL_TIMEOUT_S,
                     auto=True if scenario.auto else None)


def _baseline(spec: CampaignSpec, scenario, ws: int, launcher, runs_dir: str, say=None):
    from harness.engine.baseline import AUTO_MODE_LINE, baseline_with_mode
    from harness.engine.target import resolve_target
    from harness.oracle import load_trace

    tgt = resolve_target(scenario.target)
    # harness run's rule and the same cache key as harness.engine.run's own lookup, so every trial finds this
    # baseline; a script with no probe calls is certified in auto mode (said once, plainly)
    b, auto = baseline_with_mode(tgt, trial_spec(spec, scenario, ws), runs=1 if tgt.builtin else 2,
                                 launcher=launcher, use_cache=True, runs_dir=runs_dir,
                                 progress=lambda line: say(f"{scenario.label}: {line}") if say and line == AUTO_MODE_LINE
                                 else None)
    if b.error is not None:
        return None, None, f"the baseline failed: {b.error}", None
    trace = load_trace(b.trace_dir)
    nondeterministic = None
    if b.repro is not None and b.repro.first is not None:  # two uninterrupted runs differ
        from harness.oracle import assess

        nondeterministic = assess(None, None, baseline_repro=b.repro)
    return Profile.from_trace(trace, ws, auto=auto), trace, None, nondeterministic


def _trial_record(cell: Cell, k: int, result, *, wall_s: float, curves) -> dict:
    j = result.to_json()
    return {"cell": cell.id, "index": k, "plan": result.plan, "verdict": result.verdict, "outcome": str(result.outcome),
            "message": result.message, "hint": result.hint, "diagnosis": j.get("diagnosis"),
            "first_divergence": j.get("first_divergence"), "replay": result.replay, "wall_s": round(wall_s, 3),
            "out_dir": result.out_dir, "curves": curves}


def _error_record(cell: Cell, k: int, plan: str, message: str, outcome: str = "error") -> dict:
    return {"cell": cell.id, "index": k, "plan": plan, "verdict": "error", "outcome": outcome, "message": message,
            "hint": None, "diagnosis": None, "first_divergence": None, "replay": None, "wall_s": 0.0, "out_dir": None,
            "curves": None}


def _baseline_record(cell: Cell, verdict) -> dict:
    """The record of a cell whose baseline is not reproducible: the baseline's verdict, no trial (plan "")."""
    return {"cell": cell.id, "index": 1, "plan": "", "verdict": verdict.verdict, "outcome": str(verdict.outcome),
            "message": f"no trial ran: {verdict.message}", "hint": verdict.hint,
            "diagnosis": verdict.diagnosis.to_json() if verdict.diagnosis else None,
            "first_divergence": verdict.first_divergence.to_json() if verdict.first_divergence else None,
            "replay": None, "wall_s": 0.0, "out_dir": None, "curves": None}


class CellRunner:
    """Runs cells of one campaign: one warm launcher, one baseline (and profile) per (scenario, world size).

    ``run_cell(cell)`` returns the cell's record and its trial records. Used by ``run_campaign`` and by
    the pytest items of ``harness.certify.pytest_cells``. Close it (or use it as a context manager).
    """

    def __init__(self, spec: CampaignSpec, out: str, *, launcher=None, on_trial=None, on_note=None,
                 stall_retries: int = DEFAULT_STALL_RETRIES, scratch: str = "tmpfs"):
        from harness.engine import run
        from harness.launch.factory import borrowed

        self.spec, self.out = spec, out
        self.stall_retries = stall_retries
        self.scratch = scratch  # where each trial's run folder lives (TrialSpec.scratch)
        self._run = run
        self._stack = ExitStack()
        self.launcher = self._stack.enter_context(borrowed(launcher))
        self.on_trial = on_trial or (lambda cell, verdict: None)
        self.on_note = on_note or (lambda text: None)
        self.baselines: dict = {}  # "label|ws" -> {last_step, committed, curve}
        self._profiles: dict = {}
        self._examples: set = set()
        self._said: set = set()

    def _say_once(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.on_note(text)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def profile(self, label: str, ws: int):
        """(profile, baseline trace, error, the verdict of a nondeterministic baseline or None) of a group."""
        key = (label, ws)
        if key not in self._profiles:
            self.on_note(f"baseline of {label} at world size {ws}")
            profile, trace, error, nondeterministic = _baseline(
                self.spec, self.spec.scenario(label), ws, self.launcher,
                os.path.join(self.out, "baselines", f"{label}-{ws}"), say=self._say_once)
            if profile is not None:
                self.baselines[f"{label}|{ws}"] = {"last_step": profile.last_step,
                                                   "committed": list(profile.committed),
                                                   "curve": baseline_curve(trace)}
            if nondeterministic is not None:
                self.on_note(f"baseline of {label} at world size {ws}: {nondeterministic.outcome}: "
                             f"{nondeterministic.message}")
            self._profiles[key] = (profile, trace, error, nondeterministic)
        return self._profiles[key]

    def nondeterministic(self, cells) -> tuple[str, int, object] | None:
        """Check the baselines of ``cells`` in their order: (label, world size, verdict) of the first that two
        uninterrupted runs disagree on, or None (every baseline computed on the way is kept for the cells)."""
        for label, ws in dict.fromkeys((c.scenario, c.world_size) for c in cells):
            verdict = self.profile(label, ws)[3]
            if verdict is not None:
                return label, ws, verdict
        return None

    def run_cell(self, cell: Cell) -> tuple[dict, list[dict]]:
        from harness.engine.target import UsageError
        from harness.oracle import VerdictKind, load_trace

        spec = self.spec
        scenario = spec.scenario(cell.scenario)
        profile, base_trace, error, nondeterministic = self.profile(cell.scenario, cell.world_size)
        if error is not None:
            return (report_json.cell_record(cell, status="error", reason=error),
                    [_error_record(cell, 1, "", error, outcome="baseline_failed")])
        if nondeterministic is not None:  # every trial would fail the same way: none runs
            return (report_json.cell_record(cell, status="fail", reason=nondeterministic.message),
                    [_baseline_record(cell, nondeterministic)])
        try:
            plans = plans_for(cell, profile, seed=spec.seed, trials=spec.trials)
        except NotApplicable as e:
            return report_json.cell_record(cell, status="n/a", reason=str(e)), []
        # the mode the baseline was recorded in (no detection per trial)
        base = trial_spec(spec, scenario, cell.world_size).replace(auto=profile.auto, scratch=self.scratch)
        records = []
        group = (cell.scenario, cell.world_size)
        for k, plan in enumerate(plans, 1):
            tdir = os.path.join(self.out, "trials", cell_slug(cell), str(k))
            t1 = time.monotonic()
            retries = 0
            try:
                while True:
                    result = self._run(dataclasses.replace(base, plan=plan), out_dir=tdir, launcher=self.launcher,
                                       keep_run=False)
                    if not is_stall(result.verdict, result.outcome) or retries >= self.stall_retries:
                        break
                    retries += 1  # load, not the resume: run it again
                    self.on_note(f"{cell.id} trial {k} (plan {plan.format()}): {result.outcome}; running it again "
                                 f"({retries}/{self.stall_retries})")
                    shutil.rmtree(tdir, ignore_errors=True)
            except UsageError as e:
                records.append(_error_record(cell, k, plan.format(), f"the plan was refused: {e}"))
                self.on_trial(cell, "error")
                continue
            curves = None
            if result.verdict != VerdictKind.PASS or group not in self._examples:
                try:
                    d = result.first_divergence
                    curves = trial_curves(base_trace, load_trace(os.path.join(tdir, "trace")),
                                          rank=d.rank if d is not None else 0,
                                          divergence_step=d.step if d is not None else None)
                except Exception:  # noqa: BLE001 - a trial without a readable trace has no plot
                    curves = None
                if result.verdict == VerdictKind.PASS and curves is not None:
                    self._examples.add(group)
            records.append({**_trial_record(cell, k, result, wall_s=time.monotonic() - t1, curves=curves),
                            "retries": retries})
            if result.verdict == VerdictKind.PASS:
                shutil.rmtree(os.path.join(tdir, "run"), ignore_errors=True)
            self.on_trial(cell, result.verdict)
        return report_json.cell_record(cell), records


def assemble(spec: CampaignSpec, cell_recs: list[dict], trials: list[dict], baselines: dict, *, wall_s: float,
             shard: tuple[int, int] | None, n_cells: int, command: str | None, passes_strategy: bool = True) -> dict:
    """The certificate of the cells that ran (harness.certify.report_json). ``passes_strategy``: kept for its
    callers; every trial takes the strategy from its TrialSpec (``strategy_passed_as``: run(strategy=...))."""
    from harness.fingerprint import fingerprint

    cert = {
        "schema": report_json.SCHEMA, "version": report_json.VERSION,
        "campaign": {"id": spec.campaign_id, "spec": spec.to_json(),
                     "shard": {"index": shard[0], "count": shard[1]} if shard else None,
                     "shards": [{"index": shard[0] if shard else 1, "count": shard[1] if shard else 1,
                                 "cells": n_cells}],
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "command": command or "harness certify",
                     "strategy_passed_as": "run(strategy=...)"},
        "environment": fingerprint(), "summary": {"wall_s": round(wall_s, 3)},
        "cells": cell_recs, "trials": trials, "baselines": baselines,
    }
    return conclude(report_json.finish_certificate(cert, spec.to_json()))


def conclude(cert: dict) -> dict:
    """The summary's ``outcome`` and ``message`` (and ``stalled``, ``stall_retries``) on top of the verdict that
    ``report_json.finish_certificate`` counted; the verdict and exit code change where the outcome says so
    (see the module docstring). Call it again after anything that recounts the summary (a merge)."""
    from harness.oracle import VerdictKind

    s, trials = cert["summary"], cert["trials"]
    stalled = [t for t in trials if is_stall(t["verdict"], t["outcome"])]
    s["stalled"] = len(stalled)
    s["stall_retries"] = sum(t.get("retries") or 0 for t in trials)
    nondet = [t for t in trials if t["outcome"] == "nondeterministic_baseline"]
    # report_json's rule, from the counts (so that concluding twice changes nothing)
    s["verdict"] = "fail" if s["failed"] else "error" if (s["errors"] or s["cells_not_run"]) else "pass"
    outcome = {"pass": "certified", "fail": "failed"}.get(s["verdict"], "error")
    message = None
    if nondet:
        groups = list(dict.fromkeys(t["cell"].rsplit("|", 2)[0] + f" at world size {t['cell'].rsplit('|', 1)[1]}"
                                    for t in nondet))
        outcome, s["verdict"] = "nondeterministic_baseline", "fail"
        message = (f"nothing was certified: the baseline of {', '.join(groups)} is not reproducible, so no trial "
                   f"ran ({nondet[0]['message'].removeprefix('no trial ran: ')})")
        if nondet[0].get("hint"):
            message += f"; hint: {nondet[0]['hint']}"
    elif s["verdict"] == VerdictKind.PASS and s["passed"] == 0:
        na = [c for c in cert["cells"] if c["status"] == "n/a"]
        reasons = "; ".join(dict.fromkeys(f"{c['fault_class']} at world size {c['world_size']}: {c['reason']}"
                                          for c in na[:3]))
        outcome, s["verdict"] = "nothing_certified", "error"
        message = (f"nothing was certified: no trial ran ({len(na)} of {s['cells']} cell(s) n/a"
                   + (f": {reasons}" + (", ..." if len(na) > 3 else "") if na else "") + ")")
    elif s["verdict"] == VerdictKind.ERROR and stalled and s["errors"] == len(stalled) and not s["cells_not_run"]:
        outcome = "stall"
        message = (f"stalled: {len(stalled)} trial(s), retried ({s['stall_retries']} run(s) again), stalled every "
                   f"time: the machine was too loaded to judge them (not failures); rerun on a quieter machine")
    elif stalled:
        message = f"stalled: {len(stalled)} trial(s), retried ({s['stall_retries']} run(s) again)"
    s["outcome"], s["message"] = outcome, message
    s["exit_code"] = OUTCOME_EXIT_CODES.get(outcome, {"pass": 0, "fail": 1}.get(s["verdict"], 2))
    return cert


def run_campaign(spec: CampaignSpec, out_dir: str, *, shard: tuple[int, int] | None = None, force: bool = False,
                 progress: bool = True, command: str | None = None, launcher=None,
                 stall_retries: int = DEFAULT_STALL_RETRIES, say=None, console=None, scratch: str = "tmpfs") -> dict:
    """Run the cells of ``spec`` (those of ``shard``) under ``out_dir``; return the certificate (not yet written).

    Every baseline is checked before the first trial: at the first that is not reproducible the campaign
    stops, running no trial (see the module docstring)."""
    t0 = time.monotonic()
    out = prepare_out(out_dir, force=force)
    cells = select(spec.cells(), shard)
    bar = _Progress(len(cells) * spec.trials, progress, say=say, console=console)
    cell_recs, trials = [], []
    try:
        with CellRunner(spec, out, launcher=launcher, on_trial=bar.trial, on_note=bar.note,
                        stall_retries=stall_retries, scratch=scratch) as runner:
            stop = runner.nondeterministic(cells)
            for cell in cells:
                if stop is not None and (cell.scenario, cell.world_size) != stop[:2]:
                    cell_recs.append(report_json.cell_record(
                        cell, status="not_run", reason=f"not run: the campaign stopped at the nondeterministic "
                                                       f"baseline of {stop[0]} at world size {stop[1]}"))
                    bar.skip(spec.trials)
                    continue
                rec, recs = runner.run_cell(cell)
                cell_recs.append(rec)
                trials += recs
                if rec["status"] == "n/a" or stop is not None:
                    bar.skip(spec.trials)
    finally:
        bar.close()
    return assemble(spec, cell_recs, trials, runner.baselines, wall_s=time.monotonic() - t0, shard=shard,
                    n_cells=len(cells), command=command)


def write_reports(cert: dict, out_dir: str) -> dict[str, str]:
    """certificate.json, certificate.md and certificate.html under ``out_dir``."""
    from harness.certify import report_html, report_md

    paths = {"json": report_json.write(cert, out_dir)}
    paths["md"] = os.path.join(out_dir, "certificate.md")
    with open(paths["md"], "w") as f:
        f.write(report_md.render(cert))
    paths["html"] = os.path.join(out_dir, "certificate.html")
    with open(paths["html"], "w") as f:
        f.write(report_html.render(cert))
    return paths


def command_line(argv) -> str:
    return shlex.join(["harness", "certify", *argv]) if argv is not None else shlex.join(["harness", *sys.argv[1:]])


__all__ = ["run_campaign", "write_reports", "CellRunner", "assemble", "conclude", "prepare_out", "cell_slug", "trial_spec",
           "REPORT_FILES", "TRIAL_TIMEOUT_S", "DEFAULT_STALL_RETRIES"]
