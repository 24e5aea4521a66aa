"""Durable file writes: a whole file replaced atomically, lines appended."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    # The rename (or unlink) is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, payload: bytes, fsync: bool = True) -> None:
    """Replace `path` with `payload` so that a crash at any moment leaves the old or the new file
    (fsync=False: the same rename, without waiting for the disk)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as f:
            f.write(payload)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def append(fd: int, payload: bytes, fsync: bool) -> None:
    """One write of whole lines at the end of the file (durable when fsync)."""
    view = memoryview(payload)
    while view:  # a regular file takes it in one write; a short write is finished here
        view = view[os.write(fd, view):]
    if fsync:
        os.fdatasync(fd)
