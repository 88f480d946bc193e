"""Checksums taken while a backend writes its files, and verified files served to it on load.

A backend that writes its own files (DCP, DeepSpeed) used to be followed by a second pass that read
every file back to hash it. Here the bytes are hashed as they pass through on their way to the file
(xxh3-128, ~13 GB/s on one core, against ~2 GB/s for the disk), so the manifest gets its checksums
without reading anything again:

    HashingFileSystemWriter   a DCP `FileSystemWriter` whose streams hash what DCP writes into them
                              (shards and `.metadata`; the rename of `.metadata.tmp` carries the digest).
    VerifiedFileSystemReader  a DCP `FileSystemReader` that reads the files this rank verified from the
                              very mapping it hashed, and refuses files the manifest does not list.
    HashingCheckpointEngine   wraps a DeepSpeed engine's `checkpoint_engine` for one save: each file
                              it writes is hashed from the page cache right after (fsynced later,
                              all files of the rank at once).

Why the reader does not hash while DCP reads: DCP copies into the live parameters as it reads, and a
corrupt file must be found before anything changes (every rank agrees first; `load_state()` then
falls back to an older checkpoint). So each rank verifies, before the agreement, the files it will
read itself (one pass over a mapping of the file), and DCP then deserializes from that mapping: the
file is read from disk once. Files that another rank verified (a replicated item, a resharded load)
are read normally.
"""

from __future__ import annotations

import io
import mmap
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import xxhash
from torch.distributed.checkpoint.filesystem import FileSystem, FileSystemReader, FileSystemWriter

from .errors import CorruptCheckpointError
from .files import FileRecord


class HashingWriter(io.RawIOBase):
    """A write-only stream over an open binary file that hashes every byte written through it."""

    def __init__(self, raw) -> None:
        super().__init__()
        self.raw = raw
        self.digest = xxhash.xxh3_128()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        view = memoryview(b).cast("B")
        self.digest.update(view)
        n = self.raw.write(view)
        if n is not None and n != len(view):  # a buffered file writes everything or raises
            raise OSError(f"short write ({n} of {len(view)} bytes)")
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.raw.tell()

    def fileno(self) -> int:
        # DCP only asks to fsync it. (Never give this stream to torch.save's legacy format: it would write
        # storages straight to the descriptor, past the hash; DCP wraps it in a writer without fileno.)
        self.raw.flush()  # DCP fsyncs the descriptor without flushing the buffered file first
        return self.raw.fileno()

    def flush(self) -> None:
        if not self.raw.closed:
            self.raw.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes
            self.raw.close()

    def record(self) -> tuple[int, str]:
        return self.size, self.digest.hexdigest()


class HashingFileSystem(FileSystem):
    """DCP's local file system, recording (size, xxh3-128) of every file it creates, by path."""

    def __init__(self) -> None:
        super().__init__()
        self.digests: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()  # DCP may write files from several threads (thread_count > 1)

    @contextmanager
    def create_stream(self, path, mode: str):
        if "r" in mode or "+" in mode or "a" in mode:
            with super().create_stream(path, mode) as stream:
                yield stream
            return
        key = os.path.abspath(os.fspath(path))
        with Path(path).open(mode) as raw:
            stream = HashingWriter(raw)
            yield stream
            stream.flush()  # a no-op once DCP closed it
            record = stream.record()
        with self._lock:
            self.digests[key] = record

    def rename(self, path, new_path) -> None:
        super().rename(path, new_path)
        with self._lock:
            record = self.digests.pop(os.path.abspath(os.fspath(path)), None)
            if record is not None:
                self.digests[os.path.abspath(os.fspath(new_path))] = record

    def rm_file(self, path) -> None:
        super().rm_file(path)
        with self._lock:
            self.digests.pop(os.path.abspath(os.fspath(path)), None)


class HashingFileSystemWriter(FileSystemWriter):
    """`FileSystemWriter` that checksums each file as DCP writes it (`records()` after `dcp.save`)."""

    def __init__(self, path, *args, **kwargs) -> None:
        super().__init__(path, *args, **kwargs)
        self.fs = HashingFileSystem()

    def records(self, staging: str, owned=None) -> list[FileRecord]:
        """The files this process wrote, relative to `staging` (the checkpoint folder), sorted by path."""
        out = []
        for full, (size, digest) in self.fs.digests.items():
            rel = os.path.relpath(full, staging).replace(os.sep, "/")
            if owned is None or owned(os.path.basename(full)):
                out.append(FileRecord(rel, size, digest))
        return sorted(out, key=lambda r: r.path)


class MappedStream(io.RawIOBase):
    """A read-only, seekable stream over bytes already in memory (a verified file's mapping); no copy."""

    def __init__(self, data) -> None:
        super().__init__()
        self._data = data if len(data) else b""  # bytes, bytearray or mmap: all have find()
        self._view = memoryview(self._data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b) -> int:
        out = memoryview(b).cast("B")
        n = max(0, min(len(out), len(self._view) - self._pos))
        out[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        data = self._view[self._pos:end].tobytes() if end > self._pos else b""
        self._pos = max(self._pos, end)
        return data

    def readline(self, size: int = -1) -> bytes:  # DCP's .metadata reader asks for it
        limit = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        end = self._data.find(b"\n", self._pos, limit)
        return self.read((limit if end < 0 else end + 1) - self._pos)

    def close(self) -> None:
        self._view.release()
        super().close()


class VerifiedFiles:
    """Files one rank verified against the manifest, kept mapped until the backend has read them."""

    def __init__(self) -> None:
        self.maps: dict[str, object] = {}

    def verify(self, full: str, record: FileRecord, key: str | None = None) -> None:
        """Check `full` against `record`, keep its mapping under `key` (the path the backend will open)."""
        from .files import open_verified

        self.maps[os.path.abspath(key or full)] = open_verified(full, record)

    def get(self, full) -> object | None:
        return self.maps.get(os.path.abspath(os.fspath(full)))

    def release(self) -> None:
        for m in self.maps.values():
            if isinstance(m, mmap.mmap):
                try:
                    m.close()
                except BufferError:  # a tensor still views it (not ours: DCP copies out); leave it to the GC
                    pass
        self.maps.clear()


class _VerifiedFileSystem(FileSystem):
    def __init__(self, verified: VerifiedFiles, listed: set[str], root: str) -> None:
        super().__init__()
        self.verified, self.listed, self.root = verified, listed, root

    @contextmanager
    def create_stream(self, path, mode: str):
        full = os.path.abspath(os.fspath(path))
        if "r" in mode and full not in self.listed:
            raise CorruptCheckpointError(f"{full}: DCP reads this file, but the manifest of {self.root} does not list "
                                         "it (a file added to the checkpoint after the save); refusing to read it")
        data = self.verified.get(full) if "r" in mode else None
        if data is None:
            with super().create_stream(path, mode) as stream:
                yield stream
            return
        with MappedStream(data) as stream:
            yield stream


class VerifiedFileSystemReader(FileSystemReader):
    """`FileSystemReader` over a checkpoint's DCP folder: files this rank verified are read from their
    verified mapping; every file it opens must be listed in the manifest (`listed`: absolute paths)."""

    def __init__(self, path, verified: VerifiedFiles, listed, root: str) -> None:
        super().__init__(path)
        self.fs = _VerifiedFileSystem(verified, {os.path.abspath(p) for p in listed}, root)


class HashingCheckpointEngine:
    """DeepSpeed's checkpoint engine for one save: each file hashed right after DeepSpeed wrote it.

    Measured (bench/checkpoint_backends.py --breakdown, and a 100 MB torch.save alone): passing torch.save's
    bytes through a Python stream to hash them costs an extra copy of every byte (torch's writer hands each
    record to Python as a new bytes object), more than hashing the file from the page cache right after
    torch.save wrote it to its path, through a mapping (no copy). So DeepSpeed's own fast writer writes, and
    the file is hashed while it is certainly still in the page cache. Only DeepSpeed's plain
    `TorchCheckpointEngine` is wrapped (`wrap`); another engine (Nebula, decoupled writers) is left alone
    and its files are hashed after the save.
    """

    def __init__(self, inner) -> None:
        self._inner = inner
        self.digests: dict[str, tuple[int, str]] = {}

    @classmethod
    def wrap(cls, inner):
        try:
            from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
        except ImportError:
            return None
        return cls(inner) if type(inner) is TorchCheckpointEngine else None

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def save(self, state_dict, path: str) -> None:
        from .files import hash_file

        self._inner.save(state_dict, path)
        self.digests[os.path.abspath(path)] = hash_file(path, sync=False)  # fsynced with the rest (_hash_owned)
