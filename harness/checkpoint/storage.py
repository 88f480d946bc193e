"""Checkpoint folders on disk: naming, staging, atomic commit, rotation, and listing candidates.

A save writes into `.staging-<name>` beside its final folder and becomes visible only by one
`rename` of the whole folder, after every file and the folders were fsynced. Rotation renames an
old checkpoint to `.deleting-<name>` before removing it, so a kill in the middle of a deletion
never leaves a half-deleted folder under a checkpoint's name.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil

from .files import fsync_dir

_AUTO = re.compile(r"^checkpoint_(\d+)$")
STAGING = ".staging-"
DELETING = ".deleting-"
TOKEN = ".writer-token"  # in a staging folder only: who created it (see create_staging)


def auto_checkpoints(checkpoints_dir: str) -> list[tuple[int, str]]:
    """(N, path) of every `checkpoint_N` folder, newest (highest N) first. Validity is not checked."""
    try:
        names = os.listdir(checkpoints_dir)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), os.path.join(checkpoints_dir, n)) for n in names if (m := _AUTO.match(n))]
    return sorted(found, reverse=True)


def staging_path(final: str) -> str:
    parent, name = os.path.split(os.path.abspath(final))
    return os.path.join(parent, STAGING + name)


def prepare_staging(final: str, clean_siblings: bool) -> str:
    """Create a fresh, empty staging folder for `final` (one writer, e.g. `harness convert`)."""
    clean_staging(final, clean_siblings)
    staging = staging_path(final)
    os.makedirs(staging)
    return staging


def clean_staging(final: str, clean_siblings: bool) -> None:
    """Remove what killed saves left: this folder's own staging, and with `clean_siblings` (the
    automatic `checkpoints/` folder, which only this checkpointer writes) every staging and
    half-deleted folder beside it."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    staging = staging_path(final)
    leftovers = [n for n in os.listdir(parent) if n.startswith((STAGING, DELETING))] if clean_siblings else []
    for path in {staging, *(os.path.join(parent, n) for n in leftovers)}:
        shutil.rmtree(path, ignore_errors=True)


def create_staging(final: str) -> str:
    """Create the staging folder for `final`, failing (FileExistsError) if it exists, with a fresh token in it.

    The other ranks that write into this folder read the token back (`read_token`): a rank that cannot
    read it does not see this folder (node-local disks), which is found before anything is written.
    """
    staging = staging_path(final)
    os.mkdir(staging)
    token = secrets.token_hex(16)
    with open(os.path.join(staging, TOKEN), "w") as f:
        f.write(token)
    return token


def read_token(staging: str) -> str | None:
    try:
        with open(os.path.join(staging, TOKEN)) as f:
            return f.read()
    except OSError:
        return None


def remove_token(staging: str) -> None:
    """Before the manifest lists the folder's files (the token is not part of the checkpoint)."""
    try:
        os.remove(os.path.join(staging, TOKEN))
    except FileNotFoundError:
        pass


def commit(staging: str, final: str) -> None:
    """Make the staging folder the checkpoint: fsync it, rename it into place, fsync the parent."""
    fsync_dir(staging)
    os.rename(staging, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))


def remove(path: str) -> None:
    """Delete a checkpoint folder so that no half of it is ever left under its name."""
    parent, name = os.path.split(os.path.abspath(path))
    doomed = os.path.join(parent, DELETING + name)
    os.rename(path, doomed)
    fsync_dir(parent)
    shutil.rmtree(doomed, ignore_errors=True)


def rotate(checkpoints_dir: str, total_limit: int, keep: str) -> list[str]:
    """Delete the oldest automatic checkpoints beyond `total_limit`, never `keep`. Returns what was deleted."""
    deleted = []
    for _, path in auto_checkpoints(checkpoints_dir)[total_limit:]:
        if os.path.abspath(path) != os.path.abspath(keep):
            remove(path)
            deleted.append(path)
    return deleted
