"""``harness scenarios``: list the built-in scenarios."""

from __future__ import annotations

import sys

from .common import EXIT_PASS, guarded


def add_parser(sub) -> None:
    sub.add_parser("scenarios", help="list the built-in scenarios").set_defaults(handler=command)


@guarded()
def command(args, script_args: list[str]) -> int:
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


__all__ = ["add_parser", "command"]
