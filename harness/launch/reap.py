"""Killing and finding processes: process groups, parent-death signal, /proc scans (Linux)."""

from __future__ import annotations

import ctypes
import os
import signal

from harness import run_env

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) exits."""
    return _prctl(PR_SET_PDEATHSIG, int(sig))


def tie_to_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """In a child before exec: die with ``sig`` when the parent exits, and at once if it already has
    (it may have died between the fork and the prctl; the child then belongs to someone else)."""
    die_with_parent(sig)
    if os.getppid() != parent:
        os._exit(1)


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process instead of init, so it can reap them."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a process group; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat(pid) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        fields = _stat(name) if name.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


def processes_with_env(key: str, value: str) -> list[int]:
    """Live processes of this user whose environment has ``key=value`` (e.g. HARNESS_LAUNCH_ID)."""
    needle = f"{key}={value}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:
            continue
        if needle in entries and alive(int(name)):
            found.append(int(name))
    return found


def sweep(launch_id: str, sig: int = signal.SIGKILL) -> list[int]:
    """Kill every remaining process that carries ``HARNESS_LAUNCH_ID=launch_id``; return their pids."""
    pids = processes_with_env(run_env.LAUNCH_ID, launch_id)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return pids
