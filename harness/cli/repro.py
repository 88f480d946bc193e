"""``harness repro FILE``: rerun a bug report (``harness run --save-repro``) and say whether it reproduces."""

from __future__ import annotations

import sys

from .common import CommandError, add_out, add_shared, guarded, progress_printer


def add_parser(sub) -> None:
    repro = sub.add_parser(
        "repro", help="rerun a bug report (harness run --save-repro) and say whether it reproduces",
        description="Rerun the trial of a bug report and compare it with what the report recorded. Exit codes: "
                    "0 reproduces; 1 reproduces differently, or does not reproduce (now passes); 2 environment "
                    "differs (it still reruns and reports), or a usage error or bad file.")
    repro.add_argument("file", metavar="FILE", help="the bug report (TOML) written by harness run --save-repro")
    add_shared(repro, "--json")
    add_out(repro, "output folder of the rerun (default harness-out/repro-<script>-<time>-<id>)")
    repro.add_argument("--ignore-hash", action="store_true",
                       help="run the script even though its sha256 differs from the report's (e.g. to check a fix)")
    add_shared(repro, "--no-cache")
    repro.set_defaults(handler=command)


def _errors() -> tuple:
    from harness.engine import UsageError
    from harness.repro import ReproError

    return ReproError, UsageError


@guarded(shape="repro", errors=_errors)
def command(args, script_args: list[str]) -> int:
    from harness.repro import Repro, rerun

    if script_args:
        raise CommandError("harness repro takes no script arguments: they are in the report ([script] args)")
    repro = Repro.load(args.file)
    outcome = rerun(repro, repro_path=args.file, out_dir=args.out, ignore_hash=args.ignore_hash,
                    use_cache=not args.no_cache, progress=None if args.json else progress_printer())
    if args.json:
        import json

        sys.stdout.write(json.dumps(outcome.to_json()) + "\n")
        return outcome.exit_code
    _render(repro, outcome)
    return outcome.exit_code


def _render(repro, outcome) -> None:
    from rich.text import Text

    from harness.report import make_console, render_text

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


__all__ = ["add_parser", "command"]
