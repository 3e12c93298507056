"""The FAISS index: a rebuildable cache of the reference embeddings stored in SQL.

One file per model (``<home>/index/<model_id>.faiss``) holding an ``IndexIDMap2(IndexFlatIP(dim))`` keyed
by reference id; inner product on L2-normalised vectors is the cosine similarity. Only ``identify`` needs
to search it: ``verify`` reads the person's own vectors from SQL, so it never scans everyone.

File format: ``MAGIC`` (8 bytes) + SHA-256 of the payload (32 bytes) + the serialised FAISS index. The
checksum keeps a damaged file from ever being deserialised; it is written to a temporary file, fsynced,
then renamed over the old one, so a reader sees the old or the new index, never half of one.

For very large vaults an approximate index (HNSW) can replace the flat one behind the same methods.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sigvault.errors import IndexError_

MAGIC = b"SIGVIDX1"
_DIGEST = 32


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a set of reference ids: how many, and SHA-256 of the sorted int64 little-endian ids."""

    count: int
    checksum: str

    @classmethod
    def of(cls, ids: np.ndarray) -> Fingerprint:
        ordered = np.sort(np.asarray(ids, dtype=np.int64)).astype("<i8")
        return cls(int(ordered.size), hashlib.sha256(ordered.tobytes()).hexdigest())


class VectorIndex:
    """Exact inner-product search over L2-normalised vectors, keyed by int64 reference ids."""

    def __init__(self, dim: int, *, _faiss_index: Any = None) -> None:
        import faiss

        self.dim = int(dim)
        # Any: faiss's SWIG stubs do not describe its numpy-accepting wrappers
        self._index: Any = _faiss_index if _faiss_index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """Sorted int64 ids in the index."""
        import faiss

        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self.ids())

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, vector) in the index, sorted by id: ((n,) int64, (n, dim) float32)."""
        import faiss

        n = self.ntotal
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        inner = faiss.downcast_index(self._index.index)
        vectors = inner.reconstruct_n(0, n) if n else np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort(ids, kind="stable")
        return ids[order], np.asarray(vectors, dtype=np.float32)[order]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (n,) ids with their (n, dim) vectors."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"expected ({ids.shape[0]}, {self.dim}) vectors, got {vectors.shape}")
        if ids.size:
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (absent ones are ignored); returns how many were removed."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.size == 0:
            return 0
        return int(self._index.remove_ids(ids))

    def reconstruct(self, ref_id: int) -> np.ndarray:
        """The stored (dim,) vector of one id (raises IndexError_ if absent)."""
        try:
            return np.asarray(self._index.reconstruct(int(ref_id)), dtype=np.float32)
        except RuntimeError:
            raise IndexError_(f"reference {ref_id} is not in the index; run `sigvault index rebuild`") from None

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar vectors to a (dim,) query: (similarities (m,), ids (m,)), best first, m <= k."""
        k = min(int(k), self.ntotal)
        if k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        sims, ids = self._index.search(q, k)
        keep = ids[0] >= 0
        return sims[0][keep], ids[0][keep].astype(np.int64)

    # ------------------------------------------------------------------------------------- persistence

    def to_bytes(self) -> bytes:
        import faiss

        payload = faiss.serialize_index(self._index).tobytes()
        return MAGIC + hashlib.sha256(payload).digest() + payload

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "index") -> VectorIndex:
        """Raises IndexError_ when the data is not an intact sigvault index."""
        import faiss

        header = len(MAGIC) + _DIGEST
        if len(data) < header or data[: len(MAGIC)] != MAGIC:
            raise IndexError_(f"{name}: not a sigvault index file; run `sigvault index rebuild`")
        payload = data[header:]
        if hashlib.sha256(payload).digest() != data[len(MAGIC) : header]:
            raise IndexError_(f"{name}: index file is damaged (checksum mismatch); run `sigvault index rebuild`")
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexError_(f"{name}: index file cannot be read ({exc}); run `sigvault index rebuild`") from None
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexError_(f"{name}: unexpected index type {type(index).__name__}; run `sigvault index rebuild`")
        return cls(index.d, _faiss_index=index)

    def save(self, path: Path) -> None:
        """Write atomically: temporary file in the same directory, fsync, rename, fsync the directory."""
        atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        """Raises FileNotFoundError if absent, IndexError_ if unreadable or damaged."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IndexError_(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return cls.from_bytes(data, name=str(path))


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see the old or the new content only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
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


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``<path>.lock`` (POSIX ``flock``; a no-op where unavailable).

    Writers of an index file hold it across load-update-save, so two processes never lose each other's
    changes; readers need no lock because saves are atomic renames.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
