"""Import torch in the harness's own process while the ranks start, not after the trial.

The harness process needs torch only to judge the files a run exported (``harness.oracle.artefacts``
reads torch.save archives) and the final tensors. Imported there on first use, it came after the
last launch and added its whole import time to every ``harness run``. Started on a thread when a trial
begins, it runs beside the pool's zygote, which imports torch in its own process at the same time,
so the two imports share the cores instead of following each other. A later ``import torch`` on the
main thread waits for this one (the import system's module lock); nothing else waits for it.
"""

from __future__ import annotations

import sys
import threading

_STARTED: list[threading.Thread] = []


def import_torch_in_background() -> None:
    """Start importing torch on a daemon thread, once per process; nothing when it is imported already."""
    if "torch" in sys.modules or _STARTED:
        return
    thread = threading.Thread(target=_import, name="harness-import-torch", daemon=True)
    _STARTED.append(thread)
    thread.start()


def _import() -> None:
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001 - the main thread's own import says what is wrong, where it needs torch
        pass
