"""`exit_after`, how a spawned rank (tests, benches) ends: its target's outcome as the exit code, after the
atexit handlers and the flush, and with no interpreter teardown after them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_PROGRAM = textwrap.dedent("""
    import atexit, sys
    from harness.launch.rank import exit_after

    class Teardown:  # freed only by the interpreter's teardown
        def __del__(self):
            print("teardown ran")
    keep = Teardown()
    atexit.register(print, "atexit handler ran")

    def target(how):
        sys.stdout.write("target ran ")  # not flushed: exit_after flushes
        if how == "raise":
            raise ValueError("the rank's own error")
        if how == "exit":
            sys.exit(3)

    if sys.argv[1] == "teardown":  # the control: the interpreter's own exit
        target("return")
    else:
        exit_after(target, sys.argv[1])
        print("never reached")
""")


def _run(how):
    return subprocess.run([sys.executable, "-c", _PROGRAM, how], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how, code", [("return", 0), ("raise", 1), ("exit", 3)])
def test_a_spawned_rank_ends_with_its_targets_outcome_and_no_teardown(how, code):
    proc = _run(how)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "target ran atexit handler ran\n", proc.stdout
    assert ("ValueError: the rank's own error" in proc.stderr) == (how == "raise"), proc.stderr


def test_the_control_shows_the_teardown_that_is_skipped():
    proc = _run("teardown")
    assert proc.returncode == 0 and proc.stdout == "target ran atexit handler ran\nteardown ran\n", proc.stdout
