"""The ``harness`` command line (``pyproject.toml``: ``harness = "harness.cli:console"``, ``main`` then a quick exit).

    dispatch.py   the top-level parser and main: one subparser per command module
    common.py     what the commands share: parser class, shared options, error envelope, guard, progress
    run.py fuzz.py repro.py certify.py inspect.py (inspect, diff) scenarios.py convert.py   one per command
"""

from .common import EXIT_ERROR, EXIT_FAIL, EXIT_PASS
from .dispatch import build_parser, console, main
from .fuzz import parse_duration

__all__ = ["main", "console", "build_parser", "parse_duration", "EXIT_PASS", "EXIT_FAIL", "EXIT_ERROR"]
