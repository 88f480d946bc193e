"""What the commands share: the parser class, the options several commands take, one error envelope, one
guard around a command, one progress printer.

Every command module has ``add_parser(sub)``, which registers its subparser and sets ``handler``: a
function ``(args, script_args) -> exit code`` wrapped in ``guarded``, so that bad input, Ctrl-C and a bug of
the harness end the same way in every command (exit 2 with one line, 130, or exit 2 after the traceback).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a process the signal ended: stdout's reader went away

#: The JSON printed on stdout for an error under ``--json``, by command family. They differ because each
#: family's normal JSON answer has its own keys (tests and users read ``verdict``, ``status``, ``error``):
#: an error looks like an answer of the same family.
ERROR_SHAPES: dict[str, Callable[[str], dict]] = {
    "trial": lambda m: {"verdict": "error", "outcome": "error", "message": m, "first_divergence": None},  # run, fuzz
    "repro": lambda m: {"status": "error", "exit_code": EXIT_ERROR, "message": m},
    "contents": lambda m: {"error": m},  # inspect, diff
}

class HarnessParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exit code 2 (never a traceback).

    ``who``: the name the error line starts with (``harness``, or ``harness certify`` for certify's parsers).
    ``own_extras``: report unrecognized arguments itself (``see harness certify --help``) rather than leave
    them to the top-level parser (``see harness --help``). ``nested``: commands inside this command, chosen by
    the first argument (``harness certify merge ...``), each a parser of its own."""

    def __init__(self, *args, who: str = "harness", own_extras: bool = False,
                 nested: dict[str, argparse.ArgumentParser] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.who, self.own_extras, self.nested = who, own_extras, dict(nested or {})

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.who}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] in self.nested:
            return self.nested[args[0]].parse_known_args(args[1:], namespace)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.own_extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


# -- options several commands share ------------------------------------------------------------------
# Added in place, not through argparse's parents=: a parent's options come first in --help, and each
# command's --help keeps the order it has always had.


def _shared_options() -> dict[str, dict]:
    from harness.settings import BACKENDS, DEFAULT_TIMEOUT_S

    return {
        "--nproc": dict(type=int, default=2, help="number of ranks (default 2)"),
        "--backend": dict(choices=BACKENDS, default="auto",
                          help="process group backend: auto = nccl with CUDA, else gloo"),
        "--json": dict(action="store_true", help="print one JSON object on stdout"),
        "--no-cache": dict(action="store_true", help="run the baseline again instead of using the cache"),
        "--auto": dict(action="store_true", help="record with auto mode (torch hooks, no probe calls needed); the "
                                                 "default for a script that records nothing through harness.probe"),
        "--timeout": dict(type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                          help=f"timeout of each launch in seconds (default {DEFAULT_TIMEOUT_S:g})"),
        "script_args": dict(nargs="*", metavar="-- SCRIPT_ARGS", help="arguments for the script, after --"),
        "--scratch": _spec_flag("scratch"),
    }


def _spec_flag(field: str) -> dict:
    """The argparse options of a TrialSpec field's own flag (its help and choices defined once, in the spec)."""
    import dataclasses

    from harness.engine.spec import FLAGS, TrialSpec

    flag = next(f for f in FLAGS if f.field == field)
    default = next(f.default for f in dataclasses.fields(TrialSpec) if f.name == field)
    return dict(choices=flag.choices, default=default, help=flag.help)


def add_shared(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared options ``names`` (``--nproc``, ``--backend``, ``--json``, ``--no-cache``, ``--auto``,
    ``--timeout``, ``--scratch``, ``script_args``) to ``parser`` in the order given, with one spelling of each everywhere."""
    options = _shared_options()
    for name in names:
        parser.add_argument(name, **options[name])


def add_out(parser: argparse.ArgumentParser, help: str) -> None:
    """``--out DIR`` (its help names the command's own default folder)."""
    parser.add_argument("--out", default=None, metavar="DIR", help=help)


def split_script_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """The harness's own arguments, and the script's: those after the first ``--``."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


# -- one error envelope, one guard -----------------------------------------------------------------------


class CommandError(Exception):
    """Bad input that a command found itself (a flag's value, a file): exit 2 with this message."""


def flag_of(error: BaseException) -> str | None:
    """The flag an error is about: its ``field`` (``UsageError.field``, a TrialSpec field), else None."""
    from harness.engine.spec import FLAG_OF

    return FLAG_OF.get(getattr(error, "field", None) or "")


def error_message(error: BaseException, *, name_flag: bool = False) -> str:
    """The one line an error is reported with: its message; with ``name_flag``, the flag in front where the
    message does not name it (``--kill: bad fault '12@x': ...``). The guard leaves ``name_flag`` off for now:
    the messages stay as they were."""
    message, flag = str(error), flag_of(error)
    return f"{flag}: {message}" if name_flag and flag and flag not in message else message


def fail(message: str, *, as_json: bool = False, shape: str = "trial", who: str = "harness") -> int:
    """Report an error and return exit code 2: under ``--json`` one JSON object of ``shape`` on stdout
    (``ERROR_SHAPES``), else ``<who>: error: <message>`` on stderr."""
    if as_json:
        import json

        print(json.dumps(ERROR_SHAPES[shape](message)))
    else:
        print(f"{who}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def guarded(*, shape: str = "trial", who: str = "harness", errors: Callable[[], tuple] = tuple):
    """Decorate a command ``(args, script_args) -> exit code``: ``CommandError`` and the exceptions that
    ``errors()`` names (bad input: imported only when an error is raised) become ``fail(message)``; Ctrl-C
    is exit 130 (the launchers stop their processes on the way out); any other exception is a bug of the
    harness: its traceback, then ``fail("internal error: ...")``, never exit 1 (a divergence, a failing
    plan, a failed trial)."""

    def decorate(command):
        def guard(args, script_args: list[str]) -> int:
            as_json = bool(getattr(args, "json", False))
            try:
                return command(args, script_args)
            except CommandError as e:
                return fail(str(e), as_json=as_json, shape=shape, who=who)
            except KeyboardInterrupt:
                print(f"{who}: interrupted; all processes were stopped", file=sys.stderr)
                return EXIT_INTERRUPTED
            except Exception as e:
                if isinstance(e, BrokenPipeError) and stdout_gone():
                    raise  # before errors(): a BrokenPipeError is an OSError, which some commands count as bad input
                if isinstance(e, errors()):
                    return fail(error_message(e), as_json=as_json, shape=shape, who=who)
                import traceback

                traceback.print_exc()
                return fail(f"internal error: {type(e).__name__}: {e}", as_json=as_json, shape=shape, who=who)

        @functools.wraps(command)
        def handler(args, script_args: list[str]) -> int:
            # `harness inspect --json X | head`: stdout's reader went away, in the command or in the error
            # report written to stdout after it (--json): exit 141, as SIGPIPE would end the process, and no
            # error. A BrokenPipeError while stdout is fine is another pipe's, and stays an internal error.
            try:
                return guard(args, script_args)
            except BrokenPipeError:
                if stdout_gone():
                    return EXIT_BROKEN_PIPE
                raise

        return handler

    return decorate


def stdout_gone() -> bool:
    """Whether stdout's reader went away; then stdout is pointed at /dev/null, so that nothing tries again.

    A BrokenPipeError from elsewhere (a pipe to a launcher's process) leaves stdout writable: that one
    stays an error. (A pipe with no reader left polls as an error on its write end.)"""
    import select

    global _stdout_gone
    if _stdout_gone:  # found before, and stdout is /dev/null since
        return True
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    _stdout_gone = True
    return True


_stdout_gone = False


# -- one progress printer ------------------------------------------------------------------------------


def progress_printer(err=None, prefix: str = "harness"):
    """A callable printing one status line on stderr (or on the console ``err``, which a progress bar
    shares), ``<prefix>: <line>``, never wrapped or parsed as markup."""
    from rich.text import Text

    from harness.report import make_console

    err = err or make_console(stderr=True)
    return lambda line: err.print(Text.assemble((f"{prefix}: ", "dim"), line), highlight=False, soft_wrap=True)


__all__ = ["EXIT_PASS", "EXIT_FAIL", "EXIT_ERROR", "EXIT_INTERRUPTED", "ERROR_SHAPES", "HarnessParser",
           "add_shared", "add_out", "split_script_args", "CommandError", "flag_of", "error_message", "fail", "guarded",
           "progress_printer"]
