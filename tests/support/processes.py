"""Waiting for processes the harness started to be gone (the tests of reaping)."""

from __future__ import annotations

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
