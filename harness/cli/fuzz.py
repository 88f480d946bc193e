"""``harness fuzz [TARGET] [--trials N | --time 5m] ...``: search fault plans with Hypothesis, shrink a failure."""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap

from .common import EXIT_ERROR, CommandError, add_out, add_shared, guarded, progress_printer

_DURATION_RE = r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?"


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1.5h', '1h30m', '2m30s' -> seconds (> 0); ValueError otherwise."""
    import re

    m = re.fullmatch(_DURATION_RE, text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"--time {text!r}: expected a duration such as 90, 90s, 5m, 1h30m")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    seconds = 3600 * h + 60 * mi + se
    if seconds <= 0:
        raise ValueError(f"--time {text!r}: must be more than 0 seconds")
    return seconds


_DESCRIPTION = (
    "Search fault plans (1..K faults over the baseline's steps and points, one rank or all, SIGKILL, "
    "SIGTERM or an exception) with Hypothesis, favouring the steps around complete checkpoints, epoch "
    "ends and accumulation boundaries. A failing plan is shrunk to a minimal one, with its replay "
    "command and a bug report (OUT/repro.toml).",
    "A script is taken as harness run takes it: one with no probe calls is tested as it is, in auto "
    "mode (the progress line says 'no probe calls: testing in auto mode'; --auto forces it). Its own "
    "save calls are then fault points: torch.save:N, safetensors.save_file:N, dcp.save:N, "
    "deepspeed.save_checkpoint:N (before the N-th call; the 2nd save call of one step is a kill "
    "between two files of one checkpoint) and checkpoint.committed:N (after it returned). A kill "
    "before the first complete checkpoint can only restart from scratch ('no resume tested'): such "
    "plans run once per class.",
    "exit codes: 0 every trial passed (plans that tested no resume aside); 1 a failing plan (the "
    "minimal one is reported); 3 the minimal failing plan is rng_only (training bit-exact, an RNG "
    "stream off: as harness run); 2 a harness or usage error, a failed baseline, or no trial "
    "exercised a resume; 4 trials stalled (machine load) and nothing else went wrong; 130 "
    "interrupted.")


def add_parser(sub) -> None:
    fuzz = sub.add_parser(
        "fuzz", help="search fault plans with Hypothesis; shrink a failing one to a minimal plan",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(textwrap.fill(p, 100) for p in _DESCRIPTION))
    fuzz.add_argument("target", nargs="?", default=None,
                      help="built-in scenario name or path to a script, unmodified or with probe calls (default: the "
                           "'default' scenario)")
    budget = fuzz.add_mutually_exclusive_group()
    budget.add_argument("--trials", type=int, default=None, metavar="N",
                        help="trials of the search (default 100; shrinking a failure adds some)")
    budget.add_argument("--time", default=None, metavar="DURATION", help="search for this long, e.g. 90s, 5m, 1h")
    fuzz.add_argument("--seed", type=int, default=0, help="seeds Hypothesis's search (default 0)")
    fuzz.add_argument("--max-faults", type=int, default=3, metavar="K", help="faults per plan, at most (default 3)")
    add_shared(fuzz, "--nproc")
    fuzz.add_argument("--db", default=".hypothesis/harness-fuzz", metavar="DIR",
                      help="Hypothesis example database: failing plans are replayed first next time "
                           "(default .hypothesis/harness-fuzz; 'none' for no database)")
    add_shared(fuzz, "--backend")
    add_out(fuzz, "output folder: fuzz.json, the minimal failure's trial and its bug report "
                  "(default harness-out/fuzz-<target>-<time>-<id>)")
    add_shared(fuzz, "--json", "--timeout")
    fuzz.add_argument("--stall", type=float, default=None, metavar="S",
                      help="stop an attempt when no rank records anything for S seconds (default: from the baseline)")
    add_shared(fuzz, "--auto", "--scratch")
    fuzz.add_argument("--save-repro", default=None, metavar="FILE",
                      help="also write the minimal failing plan's bug report to FILE (TOML; rerun it with harness "
                           "repro FILE); it is always written to OUT/repro.toml")
    add_shared(fuzz, "script_args")
    fuzz.set_defaults(handler=command)


def _errors() -> tuple:
    from harness.engine import UsageError

    return (UsageError,)


@guarded(shape="trial", errors=_errors)
def command(args, script_args: list[str]) -> int:
    import os

    from harness.engine import resolve_target
    from harness.engine.trial import default_out_dir
    from harness.report import make_console

    try:
        from harness.fuzz import Campaign, CampaignConfig
        from harness.fuzz.render import ProgressBar, render_json, render_text
    except ImportError as e:  # hypothesis is not installed
        raise CommandError(f"harness fuzz needs hypothesis ({e}); pip install hypothesis") from None
    if args.trials is not None and args.trials < 1:
        raise CommandError(f"--trials must be >= 1, got {args.trials}")
    try:
        time_s = parse_duration(args.time) if args.time is not None else None
    except ValueError as e:
        raise CommandError(str(e)) from None
    target = args.target or "default"
    tgt = resolve_target(target)
    default = default_out_dir(tgt)
    out = args.out or os.path.join(os.path.dirname(default), "fuzz-" + os.path.basename(default))
    config = CampaignConfig(target=target, nproc=args.nproc, seed=args.seed, trials=args.trials, time_s=time_s,
                            max_faults=args.max_faults, backend=args.backend, timeout_s=args.timeout,
                            stall_s=args.stall, script_args=tuple(script_args), out_dir=out,
                            db=None if args.db.lower() == "none" else args.db, auto=True if args.auto else None,
                            scratch=args.scratch)
    if args.json:
        result = Campaign(config).run()
    else:
        err = make_console(stderr=True)
        with ProgressBar(err) as bar:  # Ctrl-C before the trials: exit 130 (the campaign handles it from there)
            result = Campaign(config, on_trial=bar, say=progress_printer(err)).run()
    if args.json:
        sys.stdout.write(render_json(result) + "\n")
    else:
        render_text(result, make_console())
    if args.save_repro and result.failures and result.failures[0].repro:
        import shutil

        try:
            shutil.copyfile(result.failures[0].repro, args.save_repro)
        except OSError as e:
            print(f"harness: error: --save-repro: {e}", file=sys.stderr)
            return EXIT_ERROR
        print(f"harness: wrote bug report {args.save_repro}; rerun it with: harness repro "
              f"{shlex.quote(args.save_repro)}", file=sys.stderr)
    elif args.save_repro:
        print(f"harness: no failing plan: no bug report written to {args.save_repro}", file=sys.stderr)
    return result.exit_code


__all__ = ["add_parser", "command", "parse_duration"]
