"""Command line: ``harness run``, ``harness fuzz``, ``harness repro``, ``harness certify``, ``harness inspect``,
``harness diff``, ``harness scenarios``, ``harness convert``, ``harness --version``.

    harness run [TARGET] [--nproc N] [--kill PLAN]... [--seed S] [--backend auto|gloo|nccl] [--out DIR]
                [--json] [--no-cache] [--auto] [--baseline-runs N] [--timeout S] [--stall S] [--launcher pool|subprocess|torchrun]
                [--launch-prefix "srun ..."] [--nnodes N] [--rdzv-endpoint HOST:PORT] [--rdzv-timeout S]
                [--resume-nproc M [--loss-rtol R]] [--save-repro FILE [--inline]] [-- SCRIPT_ARGS...]
    harness fuzz [TARGET] [--trials N | --time 5m] [--seed S] [--max-faults K] [--nproc N] [--db DIR] [--json] ...
    harness repro FILE [--json] [--out DIR] [--ignore-hash] [--no-cache]
    harness inspect CKPT [--json]            harness diff CKPT_A CKPT_B [--json]

TARGET is a built-in scenario name or a path to a script (default: the ``default`` scenario); without
``--kill``, a step is drawn from ``--seed`` (``--kill random``) and the plan drawn is printed. Exit codes: 0 bit-exact, 1 divergence or nondeterministic
baseline, 2 harness or usage error. ``--json`` prints one JSON object on stdout and nothing else;
progress goes to stderr in human mode only.
"""

from __future__ import annotations

import argparse
import textwrap
import shlex
import sys

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exit code 2 (never a traceback)."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"harness: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from harness import __version__
    from harness.engine import BACKENDS
    from harness.faults import KILL_EXAMPLES, KILL_GRAMMAR
    from harness.launch import LAUNCHERS

    parser = _Parser(prog="harness", description="Kill distributed PyTorch training, resume it, check it is bit-exact.")
    parser.add_argument("--version", action="version", version=f"resume-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    from harness.report.outcomes import outcome_table

    run = sub.add_parser("run", help="run a trial: baseline, kill(s) and resume, bit-exact comparison",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="fault plans (--kill):\n" + textwrap.indent(KILL_GRAMMAR, "    ")
                         + "\n  examples:\n" + textwrap.indent(KILL_EXAMPLES, "    ")
                         + "\n\noutcomes and exit codes:\n" + textwrap.indent(outcome_table(), "    "))
    run.add_argument("target", nargs="?", default=None,
                     help="built-in scenario name or path to a script (default: the 'default' scenario)")
    run.add_argument("--nproc", type=int, default=2, help="number of ranks (default 2)")
    run.add_argument("--resume-nproc", type=int, default=None, metavar="N",
                     help="resume on N ranks instead (an elastic resume, judged by the elastic oracle: exact state "
                          "at the resume point and sample order, loss within --loss-rtol; never bit-exact)")
    run.add_argument("--loss-rtol", type=float, default=None, metavar="R",
                     help="with --resume-nproc: relative tolerance of the global loss after the resume (default 1e-3)")
    run.add_argument("--kill", action="append", default=[], metavar="PLAN",
                     help="fault(s) to inject, e.g. 12, 12@1, checkpoint.write:2@all:SIGTERM, random; repeatable "
                          "(default: random)")
    run.add_argument("--seed", type=int, default=0, help="seed for random faults (default 0)")
    run.add_argument("--backend", choices=BACKENDS, default="auto",
                     help="process group backend: auto = nccl with CUDA, else gloo")
    from harness.engine.trial import STRATEGIES

    run.add_argument("--strategy", choices=STRATEGIES, default=None,
                     help="how the built-in scenarios wrap the model ($HARNESS_STRATEGY): ddp (default), fsdp "
                          "(FSDP2 on a CPU mesh under gloo), deepspeed-zero0..3")
    run.add_argument("--accept-rng", action="append", default=[], metavar="STREAM",
                     choices=("python", "numpy", "torch", "cuda", "all"),
                     help="accept knowingly that this RNG stream (python, numpy, torch, cuda, all) differs after the "
                          "resume while training stays bit-exact: outcome rng_accepted (exit 0) instead of rng_only "
                          "(exit 3); repeatable")
    run.add_argument("--accept-lost-progress", action="store_true",
                     help="accept a resume from an older checkpoint than the newest committed before the kill "
                          "(a script that keeps one older checkpoint on purpose) instead of lost_progress")
    run.add_argument("--out", default=None, metavar="DIR", help="output folder (default harness-out/<target>-<time>-<id>)")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    run.add_argument("--no-cache", action="store_true", help="run the baseline again instead of using the cache")
    run.add_argument("--auto", action="store_true",
                     help="record with auto mode (torch hooks, no probe calls needed); the default for a script "
                          "that records nothing through harness.probe")
    run.add_argument("--baseline-runs", type=int, default=None, metavar="N",
                     help="uninterrupted runs compared to check reproducibility (default 2 for scripts, 1 for scenarios)")
    run.add_argument("--timeout", type=float, default=300.0, metavar="S", help="timeout of each launch in seconds (default 300)")
    run.add_argument("--stall", type=float, default=None, metavar="S",
                     help="stop an attempt when no rank records anything for S seconds "
                          "(default: derived from the baseline's step times)")
    run.add_argument("--launcher", choices=LAUNCHERS, default="pool",
                     help="pool: fork from a warm process (default); subprocess: fresh python per rank; "
                          "torchrun: torchrun's rendezvous (multi-node)")
    run.add_argument("--no-pool", dest="launcher", action="store_const", const="subprocess",
                     help="same as --launcher subprocess")
    run.add_argument("--launch-prefix", default="", metavar="CMD",
                     help="command put before torchrun, e.g. 'srun --nodes 2 --ntasks-per-node 1' (--launcher torchrun)")
    run.add_argument("--nnodes", type=int, default=1, help="nodes for --launcher torchrun (default 1)")
    run.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                     help="torchrun c10d rendezvous endpoint, needed with --nnodes > 1 (docs/multinode.md)")
    run.add_argument("--rdzv-timeout", type=float, default=20.0, metavar="S",
                     help="seconds a torchrun agent waits to reach the rendezvous endpoint and for all nodes to "
                          "join (default 20)")
    run.add_argument("--save-repro", default=None, metavar="FILE",
                     help="write a bug report of this run (pass or fail) to FILE (TOML); rerun it with harness repro FILE")
    run.add_argument("--inline", action="store_true", help="with --save-repro: embed the script's text in the report")
    run.add_argument("script_args", nargs="*", metavar="-- SCRIPT_ARGS", help="arguments for the script, after --")

    sub.add_parser("scenarios", help="list the built-in scenarios")
    sub.add_parser("certify", add_help=False, help="certify resume determinism over a matrix of scenarios x faults x "
                                                   "world sizes (harness certify --help)")
    _add_fuzz_parser(sub, BACKENDS)

    repro = sub.add_parser(
        "repro", help="rerun a bug report (harness run --save-repro) and say whether it reproduces",
        description="Rerun the trial of a bug report and compare it with what the report recorded. Exit codes: "
                    "0 reproduces; 1 reproduces differently, or does not reproduce (now passes); 2 environment "
                    "differs (it still reruns and reports), or a usage error or bad file.")
    repro.add_argument("file", metavar="FILE", help="the bug report (TOML) written by harness run --save-repro")
    repro.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    repro.add_argument("--out", default=None, metavar="DIR", help="output folder of the rerun "
                                                                  "(default harness-out/repro-<script>-<time>-<id>)")
    repro.add_argument("--ignore-hash", action="store_true",
                       help="run the script even though its sha256 differs from the report's (e.g. to check a fix)")
    repro.add_argument("--no-cache", action="store_true", help="run the baseline again instead of using the cache")

    convert = sub.add_parser(
        "convert", help="convert an HF Accelerate save_state folder to the native checkpoint format",
        description="Convert a folder written by HF Accelerate's save_state into a native checkpoint (no pickle, "
                    "checksummed). Accelerate's folder holds pickles, which can execute code when loaded: "
                    "--allow-unsafe-pickle is required, for folders you trust.")
    convert.add_argument("src", help="the Accelerate checkpoint folder")
    convert.add_argument("dst", help="the new native checkpoint folder (must not exist, or be empty)")
    convert.add_argument("--allow-unsafe-pickle", action="store_true",
                         help="unpickle SRC's files (they can execute arbitrary code): only for folders you trust")
    from harness.contents.cli import add_parsers as add_contents_parsers

    add_contents_parsers(sub)  # harness inspect, harness diff
    return parser


def _split_script_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certify"]:  # its own parser: harness certify [...] and harness certify merge ...
        from harness.certify.cli import main as certify_main

        return certify_main(argv[1:])
    own_args, script_args = _split_script_args(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(own_args)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_ERROR
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_ERROR
    if args.command == "scenarios":
        return _scenarios()
    if args.command == "convert":
        return _convert(args)
    if args.command in ("inspect", "diff"):
        from harness.contents.cli import main as contents_main

        return contents_main(args)
    if args.command == "repro":
        return _repro(args, script_args)
    if args.command == "fuzz":
        return _fuzz(args, script_args)
    if args.script_args:
        print(f"harness: error: unexpected argument(s) {' '.join(args.script_args)}; "
              "put script arguments after --", file=sys.stderr)
        return EXIT_ERROR
    return _run(args, script_args)


def _scenarios() -> int:
    from harness.engine import list_scenarios

    names = list_scenarios()
    if not names:
        print("no built-in scenarios are installed", file=sys.stderr)
        return EXIT_PASS
    try:
        from harness.scenarios import BUILTIN
    except ImportError:
        BUILTIN = {}
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {BUILTIN.get(name, '')}".rstrip())
    return EXIT_PASS


def _convert(args) -> int:
    from harness.checkpoint import CheckpointError
    from harness.checkpoint.from_accelerate import convert

    try:
        out = convert(args.src, args.dst, allow_unsafe_pickle=args.allow_unsafe_pickle)
    except (CheckpointError, OSError) as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {out}")
    return EXIT_PASS


def _run(args, script_args: list[str]) -> int:

    from harness.engine import UsageError, run
    from harness.report import make_console
    from harness.launch import make_launcher

    target = args.target or "default"
    kill = list(args.kill) or ["random"]  # a PASS needs a resume: no plan means a seeded random kill
    options = ({"nnodes": args.nnodes, "rdzv_endpoint": args.rdzv_endpoint, "rdzv_timeout_s": args.rdzv_timeout}
               if args.launcher == "torchrun" else {})
    try:
        prefix = shlex.split(args.launch_prefix)
    except ValueError as e:
        return _usage_error(f"--launch-prefix {args.launch_prefix!r}: {e}", args.json)
    try:
        launcher = make_launcher(args.launcher, prefix=prefix, **options)
    except ValueError as e:  # --nnodes < 1, or several nodes without --rdzv-endpoint
        return _usage_error(str(e), args.json)
    if args.launcher == "torchrun" and args.nproc % args.nnodes:
        return _usage_error(f"--nproc {args.nproc} is not a multiple of --nnodes {args.nnodes}", args.json)
    if args.inline and not args.save_repro:
        return _usage_error("--inline needs --save-repro FILE", args.json)
    if args.save_repro:
        from harness.repro import ReproError, check_inline_target

        try:
            check_inline_target(target, args.inline)
        except ReproError as e:
            return _usage_error(str(e), args.json)
    progress = None if args.json else _progress_printer()
    try:
        result = run(target, nproc=args.nproc, plan=kill, seed=args.seed, backend=args.backend,
                     out_dir=args.out, script_args=script_args, baseline_runs=args.baseline_runs,
                     use_cache=not args.no_cache, launcher=launcher, timeout_s=args.timeout, stall_s=args.stall,
                     progress=progress, auto=True if args.auto else None, strategy=args.strategy,
                     resume_nproc=args.resume_nproc, loss_rtol=args.loss_rtol, accept_rng=tuple(args.accept_rng),
                     accept_lost_progress=args.accept_lost_progress)
    except UsageError as e:
        return _usage_error(str(e), args.json)
    except KeyboardInterrupt:
        print("harness: interrupted; all processes were stopped", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in the harness: show it, but never exit 1 (that means "divergence")
        import traceback

        traceback.print_exc()
        return _usage_error(f"internal error: {type(e).__name__}: {e}", args.json)
    finally:
        launcher.close()
    if args.json:
        from harness.report import render_json

        sys.stdout.write(render_json(result) + "\n")
    else:
        from harness.report import render_text

        render_text(result, make_console())
    if args.save_repro:
        return _save_repro(args, result, script_args)
    return result.exit_code


def _save_repro(args, result, script_args: list[str]) -> int:
    """Write the run's bug report; the run's exit code, or 2 when the file could not be written."""
    from harness.repro import Repro, ReproError

    try:
        path = Repro.from_result(result, inline=args.inline, script_args=script_args, launcher=args.launcher,
                                 timeout_s=args.timeout, stall_s=args.stall, baseline_runs=args.baseline_runs,
                                 resume_nproc=args.resume_nproc, loss_rtol=args.loss_rtol).dump(args.save_repro)
    except ReproError as e:
        print(f"harness: error: --save-repro: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"harness: wrote bug report {path}; rerun it with: harness repro {shlex.quote(path)}", file=sys.stderr)
    return result.exit_code


def _repro(args, script_args: list[str]) -> int:
    from rich.text import Text

    from harness.engine import UsageError
    from harness.report import make_console, render_text
    from harness.repro import Repro, ReproError, rerun

    if script_args:
        return _repro_error("harness repro takes no script arguments: they are in the report ([script] args)",
                            args.json)
    try:
        repro = Repro.load(args.file)
    except ReproError as e:
        return _repro_error(str(e), args.json)
    progress = None if args.json else _progress_printer()
    try:
        outcome = rerun(repro, repro_path=args.file, out_dir=args.out, ignore_hash=args.ignore_hash,
                        use_cache=not args.no_cache, progress=progress)
    except (ReproError, UsageError) as e:
        return _repro_error(str(e), args.json)
    except KeyboardInterrupt:
        print("harness: interrupted; all processes were stopped", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in the harness: show it, but never exit 0 or 1
        import traceback

        traceback.print_exc()
        return _repro_error(f"internal error: {type(e).__name__}: {e}", args.json)
    if args.json:
        import json

        sys.stdout.write(json.dumps(outcome.to_json()) + "\n")
        return outcome.exit_code
    out = make_console()
    render_text(outcome.result, out)
    style = {0: "bold green", 1: "bold red"}.get(outcome.exit_code, "bold yellow")
    out.print(Text.assemble((f" {outcome.title.upper()} ", style + " reverse"), " ", outcome.message), soft_wrap=True)
    for line in outcome.environment_differences:
        out.print(Text.assemble(("  differs: ", "yellow"), line), soft_wrap=True)
    e = repro.expected
    if outcome.status != "reproduces":
        want = f"{e.outcome}" + (f" at {e.first_divergence.describe()}" if e.first_divergence else "")
        out.print(Text.assemble(("report: ", "bold"), f"{e.verdict}, {want}"), soft_wrap=True)
    return outcome.exit_code


def _repro_error(message: str, as_json: bool) -> int:
    if as_json:
        import json

        print(json.dumps({"status": "error", "exit_code": EXIT_ERROR, "message": message}))
    else:
        print(f"harness: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _progress_printer(err=None):
    """A callable printing one status line on stderr (or on the console ``err``, which a progress bar
    shares), ``harness: <line>``, never wrapped or parsed as markup."""
    from rich.text import Text

    from harness.report import make_console

    err = err or make_console(stderr=True)
    return lambda line: err.print(Text.assemble(("harness: ", "dim"), line), highlight=False, soft_wrap=True)


def _usage_error(message: str, as_json: bool) -> int:
    if as_json:
        import json

        print(json.dumps({"verdict": "error", "outcome": "error", "message": message, "first_divergence": None}))
    else:
        print(f"harness: error: {message}", file=sys.stderr)
    return EXIT_ERROR


# -- harness fuzz ------------------------------------------------------------------------------------

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


def _add_fuzz_parser(sub, backends) -> None:
    fuzz = sub.add_parser(
        "fuzz", help="search fault plans with Hypothesis; shrink a failing one to a minimal plan",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(textwrap.fill(p, 100) for p in (
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
            "interrupted.")))
    fuzz.add_argument("target", nargs="?", default=None,
                      help="built-in scenario name or path to a script, unmodified or with probe calls (default: the "
                           "'default' scenario)")
    budget = fuzz.add_mutually_exclusive_group()
    budget.add_argument("--trials", type=int, default=None, metavar="N",
                        help="trials of the search (default 100; shrinking a failure adds some)")
    budget.add_argument("--time", default=None, metavar="DURATION", help="search for this long, e.g. 90s, 5m, 1h")
    fuzz.add_argument("--seed", type=int, default=0, help="seeds Hypothesis's search (default 0)")
    fuzz.add_argument("--max-faults", type=int, default=3, metavar="K", help="faults per plan, at most (default 3)")
    fuzz.add_argument("--nproc", type=int, default=2, help="number of ranks (default 2)")
    fuzz.add_argument("--db", default=".hypothesis/harness-fuzz", metavar="DIR",
                      help="Hypothesis example database: failing plans are replayed first next time "
                           "(default .hypothesis/harness-fuzz; 'none' for no database)")
    fuzz.add_argument("--backend", choices=backends, default="auto",
                      help="process group backend: auto = nccl with CUDA, else gloo")
    fuzz.add_argument("--out", default=None, metavar="DIR",
                      help="output folder: fuzz.json, the minimal failure's trial and its bug report "
                           "(default harness-out/fuzz-<target>-<time>-<id>)")
    fuzz.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    fuzz.add_argument("--timeout", type=float, default=300.0, metavar="S", help="timeout of each launch in seconds (default 300)")
    fuzz.add_argument("--stall", type=float, default=None, metavar="S",
                      help="stop an attempt when no rank records anything for S seconds (default: from the baseline)")
    fuzz.add_argument("--auto", action="store_true",
                      help="record with auto mode (torch hooks, no probe calls needed); the default for a script "
                           "that records nothing through harness.probe")
    fuzz.add_argument("--save-repro", default=None, metavar="FILE",
                      help="also write the minimal failing plan's bug report to FILE (TOML; rerun it with harness "
                           "repro FILE); it is always written to OUT/repro.toml")
    fuzz.add_argument("script_args", nargs="*", metavar="-- SCRIPT_ARGS", help="arguments for the script, after --")


def _fuzz(args, script_args: list[str]) -> int:
    import os


    from harness.engine import UsageError, resolve_target
    from harness.engine.trial import default_out_dir
    from harness.report import make_console

    try:
        from harness.fuzz import Campaign, CampaignConfig
        from harness.fuzz.render import ProgressBar, render_json, render_text
    except ImportError as e:  # hypothesis is not installed
        return _usage_error(f"harness fuzz needs hypothesis ({e}); pip install hypothesis", args.json)
    if args.trials is not None and args.trials < 1:
        return _usage_error(f"--trials must be >= 1, got {args.trials}", args.json)
    try:
        time_s = parse_duration(args.time) if args.time is not None else None
    except ValueError as e:
        return _usage_error(str(e), args.json)
    target = args.target or "default"
    try:
        tgt = resolve_target(target)
    except UsageError as e:
        return _usage_error(str(e), args.json)
    out = args.out or os.path.join(os.path.dirname(default_out_dir(tgt)), "fuzz-" + os.path.basename(default_out_dir(tgt)))
    config = CampaignConfig(target=target, nproc=args.nproc, seed=args.seed, trials=args.trials, time_s=time_s,
                            max_faults=args.max_faults, backend=args.backend, timeout_s=args.timeout,
                            stall_s=args.stall, script_args=tuple(script_args), out_dir=out,
                            db=None if args.db.lower() == "none" else args.db, auto=True if args.auto else None)
    err = make_console(stderr=True)
    say = None if args.json else _progress_printer(err)
    try:
        if args.json:
            result = Campaign(config).run()
        else:
            with ProgressBar(err) as bar:
                result = Campaign(config, on_trial=bar, say=say).run()
    except UsageError as e:
        return _usage_error(str(e), args.json)
    except KeyboardInterrupt:  # before the campaign started its trials (it handles Ctrl-C from there on)
        print("harness: interrupted; all processes were stopped", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in the harness: never exit 1 (that means "a failing plan")
        import traceback

        traceback.print_exc()
        return _usage_error(f"internal error: {type(e).__name__}: {e}", args.json)
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


if __name__ == "__main__":
    sys.exit(main())
