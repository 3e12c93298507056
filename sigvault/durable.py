"""Durable file writes: the one home of "write, fsync, rename, fsync the directory".

A file replaced through :func:`atomic_write` or :func:`replace_file` is seen by readers, and found after a
crash or a power cut, either whole and old or whole and new: the content is fsynced before the rename (so
the new name never points at unwritten blocks) and the directory after it (so the rename itself survives).
:func:`append_durably` is the same promise for a file that only grows: the bytes are on disk when it returns.
The index files, the audit's result files, backups and ``log export`` all write through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces written in turn) so that readers and crashes see
    the old or the new content only. The parent directory is created if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_file(written: Path, path: Path) -> None:
    """Move a file written in full beside ``path`` (same directory, hence same file system) over it, durably:
    fsync its content, rename, fsync the directory."""
    with open(written, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(written, path)
    fsync_dir(path.parent)


def append_durably(fh: BinaryIO, data: bytes) -> None:
    """Append ``data`` to an open file and return once it is on disk."""
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible on some platforms (Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
