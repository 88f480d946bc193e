"""An async save's snapshot: the state copied into host buffers while the background thread writes them.

`save_state(blocking=False)` must not return before the state is copied (training then changes it), so
the caller's stall is one copy of the state. The write need not wait for the whole copy, though: the
background thread starts first and writes each tensor as soon as its copy has landed, in the order the
caller copies them (the order the files are written). The total is then about the write alone instead
of copy + write.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable


class HostCopies:
    """The copies one async save makes: planned on the payloads (buffers swapped in), run by the caller."""

    def __init__(self) -> None:
        self._pairs: list = []  # (host buffer, live tensor), in the order the files are written
        self._done = 0
        self._error: str | None = None
        self._cond = threading.Condition()

    @classmethod
    def plan(cls, jobs, buffer_for: Callable) -> HostCopies:
        """Swap every tensor payload of `jobs` (layout.FileJob) for its host buffer (`buffer_for(key, t)`),
        not yet filled; each job's `ready(name)` waits until tensor `name` is copied."""
        copies = cls()
        for job in jobs:
            if not job.is_tensors:
                continue
            index, payload = {}, {}
            for name, t in job.payload.items():
                buf = buffer_for(f"{job.rel}:{name}", t)
                index[name] = len(copies._pairs)
                copies._pairs.append((buf, t))
                payload[name] = buf
            job.payload = payload
            job.ready = functools.partial(copies._wait, index)
        return copies

    def run(self) -> None:
        """Copy every tensor, in order, signalling each. A failure is handed to the writer (which then fails the
        save on every rank, reported at the next save_state/load_state/wait), not raised here."""
        try:
            for i, (buf, src) in enumerate(self._pairs):
                buf.copy_(src.detach())
                with self._cond:
                    self._done = i + 1
                    self._cond.notify_all()
        except Exception as e:  # noqa: BLE001 - reported through the writer
            with self._cond:
                self._error = f"{type(e).__name__}: {e}"
                self._cond.notify_all()
        finally:
            self._pairs = []  # no reference to the live state is kept

    def _wait(self, index: dict, name: str) -> None:
        i = index[name]
        with self._cond:
            while self._done <= i and self._error is None:
                self._cond.wait()
            if self._done <= i:
                raise RuntimeError(f"copying the state into host memory for the async save failed: {self._error}")
