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


def atomic_write(path: Path, payload: bytes, fsync: bool = True, mode: int = 0o600) -> None:
    """Replace `path` with `payload` so that a crash at any moment leaves the old or the new file
    (fsync=False: the same rename, without waiting for the disk). `mode` as os.open takes it
    (the umask applies): state files are the owner's only."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
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


def cut_torn_tail(path: Path) -> int:
    """Cut a last line without its newline (an append that a crash cut short, so never
    acknowledged) and fsync; returns the bytes dropped (0: the file ends with a whole line)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        back = min(size, 4096)
        f.seek(size - back)
        cut = f.read(back).rfind(b"\n")
        keep = size - back + cut + 1 if cut >= 0 else 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep
