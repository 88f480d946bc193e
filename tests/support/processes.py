"""Waiting for processes the harness started to be gone (the tests of reaping)."""

from __future__ import annotations

import signal
import time

from harness.launch.reap import alive


def wait_gone(pids, within: float = 5.0) -> bool:
    """Whether every one of ``pids`` is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def sigint_delivered() -> None:
    """``preexec_fn`` of a child a test interrupts with SIGINT: Ctrl-C's default disposition, even when the
    test run itself was started with SIGINT ignored (a background job of a shell without job control,
    ``nohup``), which a child would inherit and Python would then leave ignored (no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
