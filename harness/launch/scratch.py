"""Where a trial's checkpoints are written: a scratch folder on tmpfs (/dev/shm), or the run folder on disk.

    with scratch_dir("tmpfs", disk_path=os.path.join(out, "run")) as scratch:
        ...  # ranks get HARNESS_RUN_DIR=scratch.path; the oracle reads it before the block ends
        if verdict == "fail":
            scratch.keep()  # its checkpoints are copied to disk_path on the way out, for inspection

What a fault of the harness does, and so what a folder on tmpfs does and does not prove:

- The harness's faults are process faults: SIGKILL, SIGTERM, SIGINT, an exception, a stall, of ranks of
  one job. A killed process loses none of what it wrote: its ``write`` calls returned, so the bytes
  are in the kernel's page cache, and every later reader (the resumed job, the oracle) sees them,
  fsynced or not. On any filesystem a process kill therefore tests the same thing: the ordering of
  the job's own writes, renames and commit markers, and what a resume reads of a checkpoint that was
  half written when the process died. ``fsync`` only waits for the page cache to reach the device; its
  cost is real time and tests nothing here. On tmpfs it returns at once, and the files never touch a
  disk: ``tmpfs`` is the default.
- What tmpfs does NOT test: a machine crash or power loss (the page cache is lost), where a missing
  fsync of a file or of its directory lets a "committed" checkpoint come back truncated or absent. No
  process kill tests that on any filesystem either; ``disk`` does not simulate it. ``disk`` is for a
  checkpointer whose speed or behaviour depends on the real filesystem (O_DIRECT, a fsync that must
  be timed, file locks, a network or parallel filesystem mounted there, space running out), and for
  checkpoints larger than /dev/shm's free space.

``scratch_dir("tmpfs", ...)`` makes the folder under /dev/shm when it exists, is a writable directory
and has ``need_bytes`` free (default ``DEFAULT_NEED_BYTES``); otherwise it falls back to ``disk_path``
and says why, once per reason and process, in one line through ``note`` (stderr by default) and in
``Scratch.note``. A tmpfs folder is removed when the block ends, however it ends (an exception, Ctrl-C,
a ``SystemExit``); a folder left by a harness that was SIGKILLed is removed by the next
``scratch_dir`` of any harness on the machine (its name holds the dead process's id). Before removal
the folder is copied to ``disk_path`` when ``Scratch.keep()`` was called or the block raised an
exception other than KeyboardInterrupt (a failure's checkpoints can still be inspected;
``Scratch.copy_s`` is what the copy took). ``disk``: the folder is ``disk_path`` itself, created and
left in place (its owner's clean-up rules apply), as before this module existed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

KINDS = ("tmpfs", "disk")
SHM_ROOT = "/dev/shm"
#: Free space /dev/shm must have for a trial's folder to go there (the default scenario's checkpoints
#: are well under 1 MiB; a scenario with more passes its own estimate).
DEFAULT_NEED_BYTES = 256 * 1024 * 1024
PREFIX = "harness-scratch-"
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-")

_noted: set[str] = set()  # fallback reasons already said in this process


@dataclass
class Scratch:
    """The folder of one ``scratch_dir`` block."""

    path: str  # where the ranks write (HARNESS_RUN_DIR)
    kind: str  # what it is: "tmpfs" or "disk" ("disk" also after a fallback)
    disk_path: str  # where it is copied when kept (or the folder itself for "disk")
    note: str | None = None  # why a "tmpfs" request fell back to disk
    kept: bool = False
    copy_s: float | None = None  # seconds the copy to disk_path took, once copied

    def keep(self) -> None:
        """Copy the folder to ``disk_path`` when the block ends (a failed trial's checkpoints)."""
        self.kept = True


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: str = SHM_ROOT) -> list[str]:
    """Remove the scratch folders under ``root`` whose harness process is gone (SIGKILLed): their paths."""
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        m = _NAME.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            path = os.path.join(root, name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def tmpfs_unusable(root: str = SHM_ROOT, need_bytes: int = DEFAULT_NEED_BYTES) -> str | None:
    """Why ``root`` cannot hold a scratch folder (None: it can)."""
    if not os.path.isdir(root):
        return f"{root} does not exist"
    if not os.access(root, os.W_OK | os.X_OK):
        return f"{root} is not writable"
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    if free < need_bytes:
        return f"{root} has {free / 2**20:.0f} MiB free, less than the {need_bytes / 2**20:.0f} MiB asked for"
    return None


def copy_tree(src: str, dst: str) -> float:
    """Copy ``src`` into ``dst`` (merged into what is there; symlinks as links): the seconds it took."""
    t0 = time.perf_counter()
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(dst, 0o777 & ~umask)  # a folder as the user's others are, not mkdtemp's private 0700
    return time.perf_counter() - t0


@contextmanager
def scratch_dir(kind: str = "tmpfs", *, disk_path: str, shm_root: str = SHM_ROOT,
                need_bytes: int = DEFAULT_NEED_BYTES,
                note: Callable[[str], None] = _say) -> Iterator[Scratch]:
    """A run folder for one trial (see the module docstring): yields a ``Scratch``."""
    if kind not in KINDS:
        raise ValueError(f"--scratch must be one of {', '.join(KINDS)}, got {kind!r}")
    disk_path = os.path.abspath(disk_path)
    reason = None
    path = None
    if kind == "tmpfs":
        sweep_stale(shm_root)
        reason = tmpfs_unusable(shm_root, need_bytes)
        if reason is None:
            try:
                path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=shm_root)
            except OSError as e:
                reason = f"cannot make a folder in {shm_root}: {e}"
        if reason is not None:
            if reason not in _noted:  # once per reason and process: a campaign runs thousands of trials
                _noted.add(reason)
                note(f"harness: the run folder is on disk ({disk_path}), not tmpfs: {reason}")
            reason = f"the run folder is on disk, not tmpfs: {reason}"
    if path is None:
        os.makedirs(disk_path, exist_ok=True)
        yield Scratch(path=disk_path, kind="disk", disk_path=disk_path, note=reason)
        return
    scratch = Scratch(path=path, kind="tmpfs", disk_path=disk_path)
    failed = False
    try:
        yield scratch
    except KeyboardInterrupt:
        raise
    except BaseException:
        failed = True
        raise
    finally:
        try:
            if (scratch.kept or failed) and os.path.isdir(path):
                scratch.copy_s = copy_tree(path, disk_path)
        finally:
            shutil.rmtree(path, ignore_errors=True)


__all__ = ["Scratch", "scratch_dir", "sweep_stale", "tmpfs_unusable", "copy_tree", "KINDS", "SHM_ROOT"]
