"""``python -m harness.cli``: the ``harness`` console script."""

from harness.cli import console

console()
