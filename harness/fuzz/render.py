"""Output of a campaign: a rich progress bar on stderr while it runs, then a text report or one JSON object."""

from __future__ import annotations

import json

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from harness.fuzz.campaign import EXIT_STALLED, CampaignResult, Progress as TrialProgress, StopReason


class ProgressBar:
    """``on_trial`` for a Campaign: trials done, trials/s, failures, rejected, ETA (of --trials or --time)."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]fuzz[/]"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[trials]} trials"), TextColumn("{task.fields[rate]:.2f}/s"),
            TextColumn("[red]{task.fields[failures]} failed[/]"), TextColumn("{task.fields[rejected]} rejected"),
            TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False)
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def __call__(self, p: TrialProgress) -> None:
        time_first = p.budget_trials is None or p.elapsed_s / (p.budget_s or 1) > p.trials / p.budget_trials
        if p.budget_s is not None and time_first:
            total, done = p.budget_s, min(p.elapsed_s, p.budget_s)  # the time budget runs out first
        else:
            total, done = p.budget_trials, min(p.trials, p.budget_trials or p.trials)
        fields = dict(trials=p.trials, rate=p.trials / p.elapsed_s if p.elapsed_s > 0 else 0.0,
                      failures=p.failures, rejected=p.rejected,
                      phase="shrinking " + p.plan if p.phase == "shrink" else "")
        if self.task is None:
            self.task = self.progress.add_task("fuzz", total=total, completed=done, **fields)
        else:
            self.progress.update(self.task, total=total, completed=done, **fields)


def _counts(pairs) -> str:
    return ", ".join(f"{k} {v}" for k, v in pairs) or "none"


def render_text(result: CampaignResult, console: Console) -> None:
    """The campaign's report: what ran, the coverage, never-tried classes, the failure and its replay."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("fuzz", f"{result.target}  nproc={result.nproc} backend={result.backend} seed={result.seed}")
    if result.auto:
        table.add_row("mode", "auto (no probe calls: the script's steps, losses and saves seen through torch hooks)")
    if result.space is not None:
        s = result.space
        points = ", ".join(n for n, _ in s.points)
        table.add_row("space", f"steps 1-{s.last_step}, {len(s.points)} point(s)" + (f" ({points})" if points else "")
                               + f", ranks 0-{s.nproc - 1} or all, {', '.join(s.signals)}, up to {s.max_faults} fault(s)")
        table.add_row("boundaries", f"steps {', '.join(map(str, s.boundary_steps))}"
                                    + (f" (complete checkpoints at {', '.join(map(str, s.committed))})" if s.committed
                                       else " (no complete checkpoint: nothing to resume from)"))
    rejected = sum(n for _, n in result.rejected)
    table.add_row("trials", f"{result.trials} in {result.fuzz_s:.1f} s ({result.trials_per_minute:.0f}/min): "
                            f"{result.passes} passed, {result.failed_trials} failed, {rejected} rejected"
                            + (f" ({_counts(result.rejected)})" if rejected else "")
                            + (f", {len(result.stalled)} stalled" if result.stalled else "")
                            + (f"; {result.shrink_trials} of them shrinking" if result.shrink_trials else "")
                            + (f"; {result.unreachable} plan(s) skipped, a later fault could not fire"
                               if result.unreachable else "")
                            + (f"; {result.skipped_early} plan(s) skipped, a kill before the first complete "
                               "checkpoint whose class was tried (no resume to test)" if result.skipped_early else ""))
    cov = result.coverage
    table.add_row("signals", _counts(cov.signals))
    table.add_row("ranks", _counts(cov.ranks) + (f"  ({_counts(cov.rank_numbers)})" if cov.rank_numbers else ""))
    table.add_row("faults/plan", _counts(cov.plan_sizes))
    table.add_row("where", _counts(cov.where))
    table.add_row("boundaries hit", _counts(cov.classes))
    console.print(table)
    if cov.never_tried:
        console.print(Text.assemble(("warning: ", "yellow bold"), "never tried: " + ", ".join(cov.never_tried)
                                    + " (more --trials or --time would reach them)"), soft_wrap=True)
    if result.stalled:
        plans = "; ".join(f"{p} ({o})" for p, o in result.stalled[:5])
        more = f" and {len(result.stalled) - 5} more" if len(result.stalled) > 5 else ""
        console.print(Text.assemble(("stalled: ", "yellow bold"), f"{len(result.stalled)} trial(s), retried "
                                    f"({result.stall_retries} run(s) again), stalled every time: {plans}{more}; "
                                    "the machine was too loaded to judge them: not failures, not passes (rerun on "
                                    "a quieter machine, or with a longer --stall)"), soft_wrap=True)
    if result.before_resume:
        plans = "; ".join(f"{p} ({o})" for p, o in result.before_resume[:5])
        more = f" and {len(result.before_resume) - 5} more" if len(result.before_resume) > 5 else ""
        console.print(Text.assemble(("warning: ", "yellow bold"), "rejected, the job failed before any resume "
                                    f"(a rank crashed in attempt 0): {plans}{more}; "
                                    "replay them with harness run --kill"),
                      soft_wrap=True)
    if result.log_tail:
        console.print(Text("--- log tail ---\n" + result.log_tail.rstrip(), style="dim"))
    for f in result.failures:
        line = Text()
        line.append(" FAIL ", style="red bold reverse")
        how = (f"shrunk from {f.found_plan} in {f.shrink_trials} trial(s)" if f.found_plan != f.plan
               else "not shrunk further")
        if not f.shrunk:
            how += ", shrinking cut short"
        line.append(f" minimal plan {f.plan} ({how}): {f.outcome}: {f.message}")
        console.print(line, soft_wrap=True)
        console.print(f"replay: {f.replay}", soft_wrap=True, highlight=False, markup=False)
        if f.repro:
            console.print(f"repro: {f.repro}", soft_wrap=True, highlight=False, markup=False)
    if result.failures:
        return
    style = {StopReason.INTERRUPTED: "yellow", StopReason.HARNESS_ERROR: "red",
             StopReason.BASELINE_FAILED: "red", StopReason.NONDETERMINISTIC_BASELINE: "red"}.get(result.stop, "green")
    if result.exit_code == 0:
        head, text = " PASS ", f" every trial passed ({result.passes}; stopped: {result.stop})"
    elif result.stop is StopReason.NONDETERMINISTIC_BASELINE:
        head, text = " FAIL ", f" {result.stop}: {result.message}; no trial ran"
    elif result.stop is StopReason.INTERRUPTED:
        head, text = " STOPPED ", f" {result.message}"
    elif result.exit_code == EXIT_STALLED:
        head, text, style = " STALLED ", (f" {len(result.stalled)} trial(s) stalled on every run (load), "
                                          f"{result.passes} passed; not a pass"), "yellow"
    else:
        head, text = " ERROR ", f" {result.message or 'no trial exercised a resume: every plan was rejected'}"
    console.print(Text.assemble((head, style + " bold reverse"), text), soft_wrap=True)
    if result.hint:
        console.print(f"hint: {result.hint}", soft_wrap=True, highlight=False, markup=False)


def render_json(result: CampaignResult) -> str:
    return json.dumps(result.to_json())


__all__ = ["ProgressBar", "render_text", "render_json"]
