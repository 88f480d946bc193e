"""``harness certify`` and ``harness certify merge`` (the campaign itself: ``harness.certify``).

    harness certify [SCRIPT.py] [--sut NAME] [--strategy S] [--backend B] [--world-sizes 1,2,3] [--trials N]
                    [--seed S] [--scenarios A,B] [--classes C,D] [--auto] [--out DIR] [--force] [--shard i/N]
                    [--junit FILE] [--no-progress] [--stall-retries N] [-- SCRIPT_ARGS...]
    harness certify merge OUT1 OUT2 ... --out DIR [--force] [--junit FILE]

A script (``harness certify path/to/train.py``, or among ``--scenarios``) is certified as ``harness run``
tests it: without probe calls, in auto mode (``--auto`` forces it), with its own save calls as fault points.

Exit codes: 0 every trial bit-exact (at least one ran); 1 a trial failed, or a baseline is not reproducible
(no trial runs then); 2 a trial errored, a cell was not run (merge of an incomplete set of shards), no trial
ran at all (nothing certified: every cell n/a), or bad input; 4 trials stalled on every run (load), and
nothing else went wrong.
"""

from __future__ import annotations

import argparse
import textwrap

from .common import HarnessParser, add_shared, guarded, progress_printer

WHO = "harness certify"  # its errors start with "harness certify: error:"

_DESCRIPTION = (
    "Certify resume determinism: run a matrix of scenarios x fault classes x world sizes "
    "(kill/resume trials, each compared bit for bit with the uninterrupted run) and write "
    "certificate.json, certificate.md and certificate.html. `harness certify merge OUT1 "
    "OUT2 ... --out DIR` joins the certificates of --shard slices.",
    "Your own script: `harness certify path/to/train.py [-- SCRIPT_ARGS]` (or --scenarios "
    "path/to/train.py,...), shown by its file name. A script with no probe calls is certified as it "
    "is, in auto mode, as harness run tests it ('no probe calls: testing in auto mode'; --auto "
    "forces it); its fault points are then its own save calls (class save_call: torch.save:N, "
    "safetensors.save_file:N, dcp.save:N, deepspeed.save_checkpoint:N) and checkpoint.committed:N "
    "after each.")


def build_merge_parser() -> argparse.ArgumentParser:
    p = HarnessParser(prog="harness certify merge", who=WHO, own_extras=True,
                      description="Join the certificates of the shards of one campaign.")
    p.add_argument("folders", nargs="+", metavar="OUT", help="--out folders of harness certify --shard i/N")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the merged certificate")
    p.add_argument("--force", action="store_true", help="replace a certificate already in --out")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write a JUnit XML")
    p.set_defaults(handler=merge_command)
    return p


def add_parser(sub) -> None:
    from harness.certify.campaign import DEFAULT_STALL_RETRIES
    from harness.settings import BACKENDS
    from harness.certify.matrix import (AUTO_FAULT_CLASSES, DEFAULT_SEED, DEFAULT_TRIALS, DEFAULT_WORLD_SIZES,
                                        FAULT_CLASSES, STRATEGIES, SUT_DEFAULT_TRIALS, SUTS)

    p = sub.add_parser(
        "certify", who=WHO, own_extras=True, nested={"merge": build_merge_parser()},
        help="certify resume determinism over a matrix of scenarios x faults x world sizes (harness certify --help)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(textwrap.fill(t, 100) for t in _DESCRIPTION),
        epilog="\n".join(textwrap.fill(t, 100, subsequent_indent="  ") for t in [
            "fault classes (built-in scenarios, scripts with probe calls): " + ", ".join(FAULT_CLASSES),
            "fault classes (scripts in auto mode): " + ", ".join(AUTO_FAULT_CLASSES),
            "exit codes: 0 every trial bit-exact; 1 a trial failed (or a baseline is not reproducible); "
            "2 a trial errored, a cell not run, nothing certified, or bad input; 4 only stalls"]))
    p.add_argument("script", nargs="?", default=None, metavar="SCRIPT.py",
                   help="a training script to certify, unmodified or with probe calls (the same as --scenarios "
                        "SCRIPT.py; with --sut reference)")
    p.add_argument("--sut", default="reference", metavar="NAME",
                   help=f"system under test: {', '.join(SUTS)} (default reference: the reference checkpointer)")
    p.add_argument("--strategy", default="ddp", metavar="S", help=f"{', '.join(STRATEGIES)} (default ddp)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="process group backend (default auto: nccl with CUDA, else gloo)")
    p.add_argument("--world-sizes", default=",".join(map(str, DEFAULT_WORLD_SIZES)), metavar="LIST",
                   help="comma-separated world sizes (default 1,2,3: at 2 ranks float addition is commutative and "
                        "reduction-order bugs hide)")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help=f"trials per cell (default {DEFAULT_TRIALS} for the reference SUT; "
                        + ", ".join(f"{k} {v}" for k, v in SUT_DEFAULT_TRIALS.items() if k != "reference") + ")")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the fault schedule (default 0)")
    add_shared(p, "--scratch")
    p.add_argument("--scenarios", default=None, metavar="LIST",
                   help="built-in scenarios and script paths to certify with --sut reference (default: default)")
    p.add_argument("--classes", default=None, metavar="LIST",
                   help="only these fault classes (default: those of the scenarios, see below)")
    p.add_argument("--auto", action="store_true",
                   help="record the scripts with auto mode (torch hooks, no probe calls needed); the default for a "
                        "script that records nothing through harness.probe")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default harness-out/certify-<sut>-<strategy>)")
    p.add_argument("--force", action="store_true", help="replace a certificate already in --out")
    p.add_argument("--shard", default=None, metavar="i/N", help="run only slice i of N (1-based) of the matrix")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write a JUnit XML (one testcase per cell)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--stall-retries", type=int, default=DEFAULT_STALL_RETRIES, metavar="N",
                   help="run a trial that stalled (no rank recorded anything for the stall limit: machine load) "
                        f"again, up to N times, before it counts as stalled (default {DEFAULT_STALL_RETRIES})")
    p.set_defaults(handler=command)


def _errors() -> tuple:
    from harness.certify.errors import CertifyError
    from harness.engine.target import UsageError

    return CertifyError, UsageError


@guarded(who=WHO, errors=_errors)
def command(args, script_args: list[str]) -> int:
    from harness.certify.campaign import command_line, prepare_out, run_campaign, write_reports
    from harness.report import make_console
    from harness.certify.errors import CertifyError
    from harness.certify.matrix import CampaignSpec
    from harness.certify.shard import parse_shard
    from harness.engine import resolve_backend

    if args.stall_retries < 0:
        raise CertifyError(f"--stall-retries must be >= 0, got {args.stall_retries}")
    backend = resolve_backend(args.backend)  # UsageError: exit 2
    spec = CampaignSpec.make(
        sut=args.sut, strategy=args.strategy, backend=backend, world_sizes=args.world_sizes, trials=args.trials,
        seed=args.seed, scenarios=([args.script] if args.script else []) + (args.scenarios.split(",") if args.scenarios
                                                                            else []) or None,
        classes=args.classes.split(",") if args.classes else None, script_args=tuple(script_args), auto=args.auto)
    shard = parse_shard(args.shard)
    out = args.out or f"harness-out/certify-{spec.sut}-{spec.strategy}"
    if shard:
        out = args.out or f"{out}-shard{shard[0]}of{shard[1]}"
    prepare_out(out, force=args.force)  # refuse an older certificate before anything runs
    err = make_console(stderr=True)  # the progress bar's console, which the status lines share
    cert = run_campaign(spec, out, shard=shard, force=args.force, progress=not args.no_progress,
                        command=command_line(args.argv[1:]), stall_retries=args.stall_retries,
                        console=err, say=progress_printer(err, prefix="harness certify"), scratch=args.scratch)
    paths = write_reports(cert, out)
    if args.junit:
        from harness.certify import junit

        junit.write(cert, args.junit)
    _say(cert, paths, args.junit)
    return cert["summary"]["exit_code"]


@guarded(who=WHO, errors=_errors)
def merge_command(args, script_args: list[str]) -> int:
    from harness.certify import junit, report_json
    from harness.certify.campaign import conclude, prepare_out, write_reports
    from harness.certify.shard import merge

    certs = [report_json.read(f) for f in args.folders]
    cert = conclude(merge(certs))  # merge recounts the summary: its outcome again (nothing certified, stalls)
    out = prepare_out(args.out, force=args.force)
    paths = write_reports(cert, out)
    if args.junit:
        junit.write(cert, args.junit)
    _say(cert, paths, args.junit)
    return cert["summary"]["exit_code"]


def _say(cert: dict, paths: dict, junit: str | None) -> None:
    s = cert["summary"]
    outcome = s.get("outcome")
    head = s["verdict"].upper() + (f" ({outcome})" if outcome not in (None, "certified", "failed", "error") else "")
    line = (f"{head}: {s['passed']}/{s['trials']} trials bit-exact, {s['failed']} failed, "
            f"{s['errors']} errors; cells {s['cells_passed']} pass, {s['cells_failed']} fail, "
            f"{s['cells_error']} error, "
            f"{s['cells_na']} n/a" + (f", {s['cells_not_run']} not run" if s["cells_not_run"] else "")
            + f"; {s['wall_s']:.1f} s" + (f" ({s['trials_per_min']} trials/min)" if s["trials_per_min"] else ""))
    print(line)
    if s.get("message"):
        print(s["message"])
    for kind in ("html", "md", "json"):
        print(f"  {kind:5} {paths[kind]}")
    if junit:
        print(f"  junit {junit}")


__all__ = ["add_parser", "build_merge_parser", "command", "merge_command"]
