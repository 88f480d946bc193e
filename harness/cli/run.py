"""``harness run [TARGET] [options] [-- SCRIPT_ARGS...]``: one trial (baseline, kill(s), resume, comparison).

The options that describe the trial are the TrialSpec's own (``harness.engine.spec.add_trial_arguments``,
read back by ``TrialSpec.from_namespace``): the same table makes the replay command, so what this command
parses and what a replay prints cannot drift apart. The rest (``--out``, ``--json``, ``--no-cache``,
``--save-repro``, ``--inline``) say where the files go and how the result is shown.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap

from .common import EXIT_ERROR, CommandError, add_out, add_shared, guarded, progress_printer


def add_parser(sub) -> None:
    from harness.engine.spec import add_trial_arguments
    from harness.faults import KILL_EXAMPLES, KILL_GRAMMAR
    from harness.report.outcomes import outcome_table

    run = sub.add_parser("run", help="run a trial: baseline, kill(s) and resume, bit-exact comparison",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="fault plans (--kill):\n" + textwrap.indent(KILL_GRAMMAR, "    ")
                         + "\n  examples:\n" + textwrap.indent(KILL_EXAMPLES, "    ")
                         + "\n\noutcomes and exit codes:\n" + textwrap.indent(outcome_table(), "    "))
    add_trial_arguments(run)
    add_out(run, "output folder (default harness-out/<target>-<time>-<id>)")
    add_shared(run, "--json", "--no-cache")
    run.add_argument("--save-repro", default=None, metavar="FILE",
                     help="write a bug report of this run (pass or fail) to FILE (TOML); rerun it with harness repro "
                          "FILE")
    run.add_argument("--inline", action="store_true", help="with --save-repro: embed the script's text in the report")
    add_shared(run, "script_args")
    run.set_defaults(handler=command)


def _errors() -> tuple:
    from harness.engine import UsageError
    from harness.repro import ReproError

    return UsageError, ReproError


@guarded(shape="trial", errors=_errors)
def command(args, script_args: list[str]) -> int:
    from harness.engine import TrialSpec, run

    if args.script_args:
        print(f"harness: error: unexpected argument(s) {' '.join(args.script_args)}; "
              "put script arguments after --", file=sys.stderr)
        return EXIT_ERROR
    spec = TrialSpec.from_namespace(args, script_args)  # UsageError (exit 2) names the flag
    if args.inline and not args.save_repro:
        raise CommandError("--inline needs --save-repro FILE")
    if args.save_repro:
        from harness.repro import check_inline_target

        check_inline_target(spec.target, args.inline)  # ReproError: exit 2
    progress = None if args.json else progress_printer()
    result = run(spec, out_dir=args.out, use_cache=not args.no_cache, progress=progress)  # the spec's launcher
    if args.json:
        from harness.report import render_json

        sys.stdout.write(render_json(result) + "\n")
    else:
        from harness.report import make_console, render_text

        render_text(result, make_console())
    if args.save_repro:
        return _save_repro(args, result)
    return result.exit_code


def _save_repro(args, result) -> int:
    """Write the run's bug report; the run's exit code, or 2 when the file could not be written (said on
    stderr: under --json the run's JSON is already on stdout)."""
    from harness.repro import Repro, ReproError

    try:
        path = Repro.from_result(result, inline=args.inline).dump(args.save_repro)  # the result's own spec
    except ReproError as e:
        print(f"harness: error: --save-repro: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"harness: wrote bug report {path}; rerun it with: harness repro {shlex.quote(path)}", file=sys.stderr)
    return result.exit_code


__all__ = ["add_parser", "command"]
