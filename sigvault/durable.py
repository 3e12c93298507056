"""Durable file writes: the one home of "write, fsync, rename, fsync the directory".

A file replaced through :func:`atomic_write` or :func:`replace_file` is seen by readers, and found after a
crash or a power cut, either whole and old or whole and new: the content is fsynced before the rename (so
the new name never points at unwritten blocks) and the directory after it (so the rename itself survives).
:func:`append_durably` is the same promise for a file that only grows: the bytes are on disk when it returns.
The index files, the audit's result files, backups and ``log export`` all write through here.

It is also the one home of the files' modes. Everything sigvault writes may hold personal data (signature
images, vectors, decisions), so every file it creates is mode 0600 and every directory 0700, whatever the
umask: :func:`atomic_write` and :func:`replace_file` leave the file 0600, :func:`private_file` creates or
opens one 0600 (the SQLite database before SQLite opens it), :func:`private_dir` creates directories 0700.
An existing file that others can read is tightened to 0600 by :func:`tighten` (its owner's choice of group
access is not kept: a shared vault belongs in PostgreSQL, not in a shared SQLite file).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

#: Mode of every file sigvault writes (owner read and write) and of every directory it creates (owner only).
FILE_MODE = 0o600
DIR_MODE = 0o700


def atomic_write(path: Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces written in turn) so that readers and crashes see
    the old or the new content only. The parent directory is created if needed."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _fchmod(fd)  # mkstemp makes it 0600 already; said here, where the modes live
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
    fsync its content, rename, fsync the directory. The file is made 0600 first (:data:`FILE_MODE`)."""
    with open(written, "rb") as fh:
        _fchmod(fh.fileno())
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


def private_dir(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each mode 0700 whatever the umask (an existing directory
    is left as it is: the files in it are 0600)."""
    directory = Path(directory)
    missing = []
    for d in (directory, *directory.parents):
        if d.is_dir():
            break
        missing.append(d)
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by another process
        os.chmod(d, DIR_MODE)  # mkdir's mode passes through the umask, which may remove bits, never add them


def private_file(path: Path) -> None:
    """Make sure ``path`` exists as a regular file of mode 0600: create it empty with that mode (whatever the
    umask), or :func:`tighten` an existing one. For files another library then opens by name (SQLite)."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except FileExistsError:
        tighten(path)
        return
    try:
        _fchmod(fd)
    finally:
        os.close(fd)


def open_private(path: Path, mode: str = "ab") -> BinaryIO:
    """``open(path, mode)`` for a binary file that may be created: created 0600 whatever the umask, an
    existing one tightened (:func:`tighten`)."""
    private_file(path)
    return open(path, mode)  # type: ignore[return-value]  # noqa: SIM115 - binary modes only; the caller closes it


def tighten(path: Path) -> int | None:
    """Remove the group's and others' access to an existing file (mode 0600 for a file readable by others).

    Returns the old permission bits when they were changed, else None (already private, missing, or not the
    process's to change: then the file is left as it is)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    old = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or not old & 0o077:
        return None
    try:
        os.chmod(path, old & ~0o077 | FILE_MODE)
    except OSError:
        return None
    return old


def _fchmod(fd: int) -> None:
    """Mode 0600 on an open file (where the platform has ``fchmod``; Windows has no such modes)."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, FILE_MODE)
