"""harness.launch.scratch: a trial's run folder on tmpfs, removed however the block ends."""

import os
import subprocess
import sys

import pytest

from harness.launch import scratch
from harness.launch.scratch import scratch_dir

needs_shm = pytest.mark.skipif(scratch.tmpfs_unusable() is not None, reason="no usable /dev/shm here")


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch):
    monkeypatch.setattr(scratch, "_noted", set())


def _ours() -> set[str]:
    return {n for n in os.listdir(scratch.SHM_ROOT) if n.startswith(f"{scratch.PREFIX}{os.getpid()}-")}


@needs_shm
def test_the_folder_is_on_dev_shm_and_removed_at_the_end(tmp_path):
    disk = tmp_path / "out" / "run"
    with scratch_dir("tmpfs", disk_path=str(disk)) as s:
        assert s.kind == "tmpfs" and s.note is None
        assert os.path.dirname(s.path) == scratch.SHM_ROOT and os.path.isdir(s.path)
        (open(os.path.join(s.path, "ckpt.bin"), "wb")).write(b"x" * 100)
    assert not os.path.exists(s.path)
    assert not disk.exists()  # passed, not kept: nothing copied
    assert s.copy_s is None
    assert not _ours()


@needs_shm
def test_an_exception_removes_the_folder_and_copies_it_to_disk(tmp_path):
    disk = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        with scratch_dir("tmpfs", disk_path=str(disk)) as s:
            os.makedirs(os.path.join(s.path, "step_4"))
            open(os.path.join(s.path, "step_4", "model.bin"), "wb").write(b"abc")
            raise RuntimeError("boom")
    assert not os.path.exists(s.path)
    assert (disk / "step_4" / "model.bin").read_bytes() == b"abc"
    assert s.copy_s is not None and s.copy_s >= 0
    assert not _ours()


@needs_shm
def test_ctrl_c_removes_the_folder_without_copying(tmp_path):
    disk = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with scratch_dir("tmpfs", disk_path=str(disk)) as s:
            open(os.path.join(s.path, "f"), "wb").write(b"1")
            raise KeyboardInterrupt
    assert not os.path.exists(s.path)
    assert not disk.exists()
    assert not _ours()


@needs_shm
def test_a_kept_folder_is_copied_to_disk_then_removed(tmp_path):
    disk = tmp_path / "run"
    with scratch_dir("tmpfs", disk_path=str(disk)) as s:
        os.symlink("step_8", os.path.join(s.path, "latest"))
        os.makedirs(os.path.join(s.path, "step_8"))
        open(os.path.join(s.path, "step_8", "opt.bin"), "wb").write(b"\0" * 4096)
        s.keep()  # the trial failed: its checkpoints are wanted
    assert not os.path.exists(s.path)
    assert (disk / "step_8" / "opt.bin").stat().st_size == 4096
    assert os.readlink(disk / "latest") == "step_8"
    assert s.kept and s.copy_s is not None


def test_no_room_on_tmpfs_falls_back_to_disk_and_says_so_once(tmp_path):
    notes = []
    disk = tmp_path / "run"
    huge = 1 << 60  # more than any /dev/shm has
    for _ in range(2):
        with scratch_dir("tmpfs", disk_path=str(disk), need_bytes=huge, note=notes.append) as s:
            assert s.kind == "disk" and s.path == str(disk) and os.path.isdir(s.path)
            assert s.note is not None and "tmpfs" in s.note
    assert len(notes) == 1 and str(disk) in notes[0] and "MiB" in notes[0]
    assert disk.is_dir()  # a disk folder is left to its owner


def test_a_missing_shm_root_falls_back_to_disk(tmp_path):
    notes = []
    with scratch_dir("tmpfs", disk_path=str(tmp_path / "run"), shm_root=str(tmp_path / "nope"),
                     note=notes.append) as s:
        assert s.kind == "disk"
    assert len(notes) == 1 and "does not exist" in notes[0]


def test_disk_is_the_run_folder_itself_and_says_nothing(tmp_path):
    notes = []
    with scratch_dir("disk", disk_path=str(tmp_path / "run"), note=notes.append) as s:
        assert s.kind == "disk" and s.path == str(tmp_path / "run") and s.note is None
    assert notes == [] and (tmp_path / "run").is_dir()


def test_an_unknown_kind_is_refused_naming_the_option(tmp_path):
    with pytest.raises(ValueError, match="--scratch must be one of tmpfs, disk"):
        with scratch_dir("ramdisk", disk_path=str(tmp_path)):
            pass


def test_folders_of_a_dead_harness_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / f"{scratch.PREFIX}{pid}-abc"
    mine = tmp_path / f"{scratch.PREFIX}{os.getpid()}-def"
    other = tmp_path / "someone-else"
    for d in (stale, mine, other):
        d.mkdir()
    assert scratch.sweep_stale(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and mine.exists() and other.exists()
