"""``harness inspect CKPT`` and ``harness diff CKPT_A CKPT_B`` (the reading and comparing: ``harness.contents``).

    harness inspect CKPT [--json]     exit 0: every file intact; 1: a file failed its checksum, is missing or
                                      cannot be read (named); 2: bad input (not a checkpoint)
    harness diff A B [--json]         exit 0: identical (bit-exact); 1: different; 2: bad input, or a file
                                      of A or B failed its checksum or cannot be read (named)
"""

from __future__ import annotations

from .common import CommandError, add_shared, guarded

EXIT_OK, EXIT_DIFFERENT = 0, 1
FORMATS_HELP = ("native resume-harness checkpoints (also FSDP2/DCP and DeepSpeed inside them), plain DCP folders, "
                "DeepSpeed save_checkpoint folders or tag folders, HF Accelerate save_state folders, plain torch.save "
                "and safetensors files and folders of them (per-rank files: rank<N> in the path)")


def add_parser(sub) -> None:
    """Both commands: ``inspect`` and ``diff``."""
    inspect = sub.add_parser(
        "inspect", help="show what is inside a checkpoint, per rank, with its checksums verified",
        description="Show what is inside a checkpoint, per rank: tensors (name, dtype, shape, bytes, xxh3-128 of "
                    "the raw bytes), the non-tensor state, and every file re-hashed and compared with the manifest. "
                    f"Reads {FORMATS_HELP}; never executes code from a checkpoint. Exit codes: 0 every file intact; "
                    "1 a file failed its checksum, is missing, or cannot be read; 2 bad input.")
    inspect.add_argument("ckpt", metavar="CKPT", help="the checkpoint folder or file")
    add_shared(inspect, "--json")
    inspect.set_defaults(handler=inspect_command)
    diff = sub.add_parser(
        "diff", help="compare two checkpoints tensor by tensor (bit-exact)",
        description="Compare two checkpoints tensor by tensor (raw bytes) and their non-tensor state leaf by leaf: "
                    "the first differing tensor (shared first, then ranks in order, names in code-point order), "
                    "for each differing tensor the max abs diff and max ULP distance, dtype/shape mismatches, and "
                    "the tensors present on one side only. Exit codes: 0 identical; 1 different; 2 bad input or a "
                    "damaged file.")
    diff.add_argument("a", metavar="CKPT_A", help="the first checkpoint folder or file")
    diff.add_argument("b", metavar="CKPT_B", help="the second checkpoint folder or file")
    add_shared(diff, "--json")
    diff.set_defaults(handler=diff_command)


def _errors() -> tuple:
    from harness.contents.readers import ContentsError

    return ContentsError, OSError


@guarded(shape="contents", errors=_errors)
def inspect_command(args, script_args: list[str]) -> int:
    from harness.contents.readers import read_checkpoint
    from harness.contents.render import inspect_json, inspect_text

    contents = read_checkpoint(args.ckpt)
    print(inspect_json(contents) if args.json else inspect_text(contents))
    return EXIT_OK if contents.ok else EXIT_DIFFERENT


@guarded(shape="contents", errors=_errors)
def diff_command(args, script_args: list[str]) -> int:
    from harness.contents.diff import diff_contents
    from harness.contents.readers import ContentsError, read_checkpoint
    from harness.contents.render import diff_json, diff_text

    sides = []
    for label, path in (("A", args.a), ("B", args.b)):
        try:
            contents = read_checkpoint(path)
        except (ContentsError, OSError) as e:
            raise CommandError(f"{label}: {e}") from None
        if not contents.ok:
            bad = "; ".join(f"{f.path}: {f.status}: {f.detail}" for f in contents.failed_files)
            raise CommandError(f"{label}: {path}: damaged, so it cannot be compared ({bad}); "
                               f"see harness inspect {path}")
        sides.append(contents)
    result = diff_contents(*sides)
    print(diff_json(result) if args.json else diff_text(result))
    return result.exit_code


__all__ = ["add_parser", "inspect_command", "diff_command", "FORMATS_HELP"]
