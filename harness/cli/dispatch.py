"""The top-level parser: ``harness COMMAND ...``, one subparser per command module, and ``main``.

    harness run [TARGET] [--nproc N] [--kill PLAN]... [--seed S] [--backend auto|gloo|nccl] [--out DIR]
                [--json] [--no-cache] [--auto] [--baseline-runs N] [--timeout S] [--stall S]
                [--launcher pool|subprocess|torchrun]
                [--launch-prefix "srun ..."] [--nnodes N] [--rdzv-endpoint HOST:PORT] [--rdzv-timeout S]
                [--resume-nproc M [--loss-rtol R]] [--save-repro FILE [--inline]] [-- SCRIPT_ARGS...]
    harness fuzz [TARGET] [--trials N | --time 5m] [--seed S] [--max-faults K] [--nproc N] [--db DIR] [--json] ...
    harness repro FILE [--json] [--out DIR] [--ignore-hash] [--no-cache]
    harness certify [SCRIPT.py] [options] [-- SCRIPT_ARGS...]     harness certify merge OUT1 OUT2 ... --out DIR
    harness inspect CKPT [--json]            harness diff CKPT_A CKPT_B [--json]
    harness scenarios                        harness convert SRC DST --allow-unsafe-pickle

TARGET is a built-in scenario name or a path to a script (default: the ``default`` scenario); without
``--kill``, a step is drawn from ``--seed`` (``--kill random``) and the plan drawn is printed. Exit codes: 0
bit-exact, 1 divergence or nondeterministic baseline, 2 harness or usage error. ``--json`` prints one JSON
object on stdout and nothing else; progress goes to stderr in human mode only.

Arguments after the first ``--`` are the script's: they are split off before parsing and handed to the
command as ``script_args``. Each command module's ``add_parser(sub)`` sets ``handler``; ``main`` calls it.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import certify, convert, fuzz, inspect, repro, run, scenarios
from .common import EXIT_ERROR, HarnessParser, split_script_args

#: In ``harness --help``'s order (inspect adds inspect and diff).
COMMANDS = (run, scenarios, certify, fuzz, repro, convert, inspect)


def build_parser() -> argparse.ArgumentParser:
    from harness import __version__

    parser = HarnessParser(prog="harness",
                           description="Kill distributed PyTorch training, resume it, check it is bit-exact.")
    parser.add_argument("--version", action="version", version=f"resume-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=HarnessParser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own_args, script_args = split_script_args(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(own_args)
    except SystemExit as e:  # --help, --version, usage errors (already printed)
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_ERROR
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_ERROR
    args.argv = argv  # the command line as given (harness certify records it in its certificate)
    return args.handler(args, script_args)


def console() -> None:
    """The ``harness`` console script: ``main``, then an exit that skips the interpreter's teardown.

    A run leaves torch imported in this process, and tearing its modules down took longer than many
    a whole trial. Everything a normal exit does that matters still happens, in order: other threads
    are waited for, the atexit handlers run (the launchers' last reaping among them), stdout and stderr
    are flushed; then the process ends. An exception out of ``main`` takes the ordinary way.
    """
    from harness.launch.rank import finish_interpreter

    os._exit(finish_interpreter(main()))


__all__ = ["build_parser", "main", "console", "COMMANDS"]
