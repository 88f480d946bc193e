"""``harness convert SRC DST``: an HF Accelerate ``save_state`` folder to the native checkpoint format."""

from __future__ import annotations

from .common import EXIT_PASS, guarded


def add_parser(sub) -> None:
    convert = sub.add_parser(
        "convert", help="convert an HF Accelerate save_state folder to the native checkpoint format",
        description="Convert a folder written by HF Accelerate's save_state into a native checkpoint (no pickle, "
                    "checksummed). Accelerate's folder holds pickles, which can execute code when loaded: "
                    "--allow-unsafe-pickle is required, for folders you trust.")
    convert.add_argument("src", help="the Accelerate checkpoint folder")
    convert.add_argument("dst", help="the new native checkpoint folder (must not exist, or be empty)")
    convert.add_argument("--allow-unsafe-pickle", action="store_true",
                         help="unpickle SRC's files (they can execute arbitrary code): only for folders you trust")
    convert.set_defaults(handler=command)


def _errors() -> tuple:
    from harness.checkpoint import CheckpointError

    return CheckpointError, OSError


@guarded(errors=_errors)
def command(args, script_args: list[str]) -> int:
    from harness.checkpoint.from_accelerate import convert

    out = convert(args.src, args.dst, allow_unsafe_pickle=args.allow_unsafe_pickle)
    print(f"wrote {out}")
    return EXIT_PASS


__all__ = ["add_parser", "command"]
