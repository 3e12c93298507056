"""The FAISS index: a rebuildable cache of the reference embeddings stored in SQL.

Only ``identify`` searches it: ``verify`` reads the person's own vectors from SQL by person, so it never
scans everyone. SQL stays the source of truth; everything here can be deleted and rebuilt from SQL.

**In memory** a :class:`VectorIndex` is a *base* FAISS index plus a small *delta*:

- the base is ``IndexIDMap2(IndexFlatIP)`` (exact) below :data:`HNSW_THRESHOLD` vectors and
  ``IndexIDMap2(IndexHNSWFlat)`` (approximate, inner product) above it, keyed by reference id. Inner
  product on L2-normalised vectors is the cosine similarity;
- the delta is an exact ``IndexIDMap2(IndexFlatIP)`` holding vectors added since the base was written;
- removed ids of the base are *tombstones*: their stored vector is overwritten with zeros at once (the
  bytes are gone: ``people remove`` is an erasure) and a FAISS ``IDSelector`` keeps them out of results.
  HNSW cannot remove a node from its graph, so the node stays, as a zero vector nobody can find, until
  tombstones exceed :data:`TOMBSTONE_REBUILD_FRACTION` of the base and the graph is rebuilt.

A search asks the base (HNSW: ``efSearch`` = max(:data:`HNSW_EF_SEARCH`, k)) and the delta, and merges.

**On disk** (``<home>/index/<model>.faiss`` and ``<model>.faiss.journal``), built so that an update is
cheap and a crash at any point leaves a state that is either right or detected and repaired from SQL:

- the *base file*: ``MAGIC`` (8 bytes) + epoch (16 random bytes) + SHA-256 of (epoch + payload) (32 bytes)
  + payload (a JSON header, the tombstone ids, the serialised FAISS index). A damaged file is never
  deserialised. It is only ever replaced whole: written to a temporary file, fsynced, renamed over the
  old one, directory fsynced, so a reader sees the old or the new base, never half of one;
- the *journal*: ``JOURNAL_MAGIC`` + the epoch of the base it extends, then append-only records
  (length, body = ids and float32 vectors, CRC-32). ``enroll`` appends one record and fsyncs: O(new
  references), whatever the vault's size, instead of rewriting a 1 GB file. A journal whose epoch is not
  the base's is ignored (it belongs to an older base that already contains it) and replaced by the next
  writer; a record torn by a crash is cut off by the next writer; a record with a bad CRC stops the
  replay and marks the index ``damaged`` so the vault re-checks it against SQL and compacts.
- *compaction* (:meth:`VectorIndex.save`) merges the delta and tombstones into a new base with a new
  epoch, then starts an empty journal with that epoch. A crash between the two renames leaves the new
  base and an old-epoch journal, which is ignored: still right. The vault compacts when the journal holds
  more than max(:data:`COMPACT_MIN_CHANGES`, :data:`COMPACT_FRACTION` of the base) changes, and always on
  ``people remove`` (so the erased vectors leave the files, as ``VACUUM`` does for the database).

Concurrency: writers hold :func:`file_lock` (a per-file ``flock``, reentrant within a process) across
read-modify-write; a reader reads the base without the lock (renames are atomic), then the journal under
the lock, retrying if a compaction replaced the base in between.

Why not rewrite the file per change: at 1,000,000 references the base is ~1.3 GB (HNSW, M=32); a rewrite
costs seconds of I/O per enroll. Why not an IVF index: it needs training (k-means) that goes stale as the
vault grows; HNSW needs none and its recall is measured in ``benchmarks/index_bench.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sigvault.durable import append_durably, atomic_write, open_private
from sigvault.errors import IndexFileError

MAGIC = b"SIGVIDX2"
JOURNAL_MAGIC = b"SIGVJRN1"
_EPOCH = 16
_DIGEST = 32
_HEADER = len(MAGIC) + _EPOCH + _DIGEST

#: Above this many vectors the base is an HNSW graph; it goes back to flat below half of it.
HNSW_THRESHOLD = 50_000
#: Links per node (FAISS guidelines: 4 <= M <= 64; memory (d * 4 + M * 2 * 4) bytes per vector).
HNSW_M = 32
#: Candidate list size while inserting (FAISS default 40); larger builds a better graph, more slowly.
HNSW_EF_CONSTRUCTION = 40
#: Candidate list size while searching (at least k); the speed/recall trade-off, see index_bench.py
#: (1M clustered random 256-d vectors: 3.6 ms for k=50, the query's own person in the top 10 every time).
HNSW_EF_SEARCH = 256
#: Compact when the delta and tombstones exceed max(COMPACT_MIN_CHANGES, COMPACT_FRACTION * base size).
COMPACT_MIN_CHANGES = 1_000
COMPACT_FRACTION = 0.02
#: Rebuild an HNSW graph when this fraction of its nodes are tombstones.
TOMBSTONE_REBUILD_FRACTION = 0.10

Kind = Literal["flat", "hnsw"]
_REC = struct.Struct("<I")  # record body length, then body, then CRC-32 of the body
_ADD = b"A"


def journal_path(path: Path) -> Path:
    """The journal beside a base file: ``<name>.journal``."""
    return path.with_name(path.name + ".journal")


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a set of reference ids: how many, and SHA-256 of the sorted int64 little-endian ids."""

    count: int
    checksum: str

    @classmethod
    def of(cls, ids: np.ndarray) -> Fingerprint:
        ordered = np.sort(np.asarray(ids, dtype=np.int64)).astype("<i8")
        return cls(int(ordered.size), hashlib.sha256(ordered.tobytes()).hexdigest())


def _flat(dim: int) -> Any:
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _hnsw(dim: int) -> Any:
    import faiss

    inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    inner.hnsw.efSearch = HNSW_EF_SEARCH
    return faiss.IndexIDMap2(inner)


def _storage(idmap: Any) -> Any:
    """The IndexFlat that holds the vectors of an IDMap2 over a flat or HNSW-flat index."""
    import faiss

    inner = faiss.downcast_index(idmap.index)
    return faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner


def _vectors_view(idmap: Any, dim: int) -> np.ndarray:
    """A writable (ntotal, dim) view of the vectors in storage order (no copy)."""
    import faiss

    n = int(idmap.ntotal)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return faiss.rev_swig_ptr(_storage(idmap).get_xb(), n * dim).reshape(n, dim)


def _kind_of(idmap: Any) -> Kind:
    import faiss

    return "hnsw" if isinstance(faiss.downcast_index(idmap.index), faiss.IndexHNSW) else "flat"


class VectorIndex:
    """Inner-product search over L2-normalised vectors keyed by int64 reference ids (see the module doc)."""

    def __init__(self, dim: int, *, _faiss_index: Any = None, _tombstones: Iterable[int] = ()) -> None:
        import faiss

        self.dim = int(dim)
        # Any: faiss's SWIG stubs do not describe its numpy-accepting wrappers
        self._base: Any = _faiss_index if _faiss_index is not None else _flat(self.dim)
        self._base_ids = faiss.vector_to_array(self._base.id_map).astype(np.int64)  # storage order
        self._base_order = np.argsort(self._base_ids, kind="stable")
        self._tomb: set[int] = {int(i) for i in _tombstones}
        self._selector: Any = None  # cached IDSelector excluding the tombstones
        self._delta: Any = _flat(self.dim)
        self._delta_ids: list[int] = []
        self._delta_set: set[int] = set()
        self.epoch: bytes | None = None  # the base file this was loaded from / saved to
        self.journal_offset = 0  # bytes of that base's journal already applied
        self.damaged: str | None = None  # why the journal replay stopped early, if it did

    # ----------------------------------------------------------------------------------- contents

    @property
    def kind(self) -> Kind:
        return _kind_of(self._base)

    @property
    def ntotal(self) -> int:
        return int(self._base.ntotal) - len(self._tomb) + len(self._delta_ids)

    @property
    def pending(self) -> int:
        """Changes not yet merged into the base: delta vectors plus tombstones."""
        return len(self._delta_ids) + len(self._tomb)

    def needs_compaction(self) -> bool:
        return self.pending > max(COMPACT_MIN_CHANGES, COMPACT_FRACTION * int(self._base.ntotal))

    def _in_base(self, ids: np.ndarray) -> np.ndarray:
        """Mask: which ids are live in the base (present and not tombstoned)."""
        if self._base_ids.size == 0 or ids.size == 0:
            return np.zeros(ids.shape, dtype=bool)
        pos = np.searchsorted(self._base_ids, ids, sorter=self._base_order)
        pos = np.minimum(pos, self._base_ids.size - 1)
        found = self._base_ids[self._base_order[pos]] == ids
        if self._tomb:
            found &= ~np.isin(ids, np.fromiter(self._tomb, dtype=np.int64, count=len(self._tomb)))
        return found

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Storage positions in the base of ids known to be there."""
        return self._base_order[np.searchsorted(self._base_ids, ids, sorter=self._base_order)]

    def ids(self) -> np.ndarray:
        """Sorted int64 ids in the index."""
        base = self._base_ids[~np.isin(self._base_ids, list(self._tomb))] if self._tomb else self._base_ids
        return np.sort(np.concatenate([base, np.asarray(self._delta_ids, dtype=np.int64)]))

    def max_id(self) -> int:
        """The largest id (0 when empty)."""
        top = max(self._delta_ids, default=0)
        for pos in self._base_order[::-1]:
            ref_id = int(self._base_ids[pos])
            if ref_id not in self._tomb:
                return max(top, ref_id)
        return top

    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self.ids())

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, vector) in the index, sorted by id: ((n,) int64, (n, dim) float32)."""
        ids = self.ids()
        return ids, self.vectors(ids)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (n, dim) vectors of the given ids (raises IndexFileError naming the first absent one)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((ids.size, self.dim), dtype=np.float32)
        live = self._in_base(ids)
        if live.any():
            out[live] = _vectors_view(self._base, self.dim)[self._positions(ids[live])]
        rest = np.flatnonzero(~live)
        if rest.size:
            if self._delta_ids:
                dpos = {ref_id: i for i, ref_id in enumerate(self._delta_ids)}
                view = _vectors_view(self._delta, self.dim)
            for i in rest:
                ref_id = int(ids[i])
                if ref_id not in self._delta_set:
                    raise IndexFileError(f"reference {ref_id} is not in the index; run `sigvault index rebuild`")
                out[i] = view[dpos[ref_id]]
        return out

    def reconstruct(self, ref_id: int) -> np.ndarray:
        """The stored (dim,) vector of one id (raises IndexFileError if absent)."""
        return self.vectors(np.array([int(ref_id)]))[0]

    # ------------------------------------------------------------------------------------ changes

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Add (n,) ids with their (n, dim) vectors; ids already present are skipped. Returns how many
        were added. They go to the delta (exact search) until the next compaction."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"expected ({ids.shape[0]}, {self.dim}) vectors, got {vectors.shape}")
        new = ~self._in_base(ids) & np.array([int(i) not in self._delta_set for i in ids], dtype=bool)
        if not new.all():
            ids, vectors = ids[new], vectors[new]
            ids, first = np.unique(ids, return_index=True)
            vectors = vectors[first]
        if ids.size:
            self._delta.add_with_ids(vectors, ids)
            self._delta_ids.extend(int(i) for i in ids)
            self._delta_set.update(int(i) for i in ids)
        return int(ids.size)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (absent ones are ignored); returns how many were removed. A removed vector is
        overwritten at once in memory; it leaves the files at the next :meth:`save`."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if ids.size == 0:
            return 0
        removed = 0
        in_delta = np.array([int(i) in self._delta_set for i in ids], dtype=bool)
        if in_delta.any():
            gone = ids[in_delta]
            removed += int(self._delta.remove_ids(gone))
            self._delta_set.difference_update(int(i) for i in gone)
            self._delta_ids = [i for i in self._delta_ids if i in self._delta_set]
        live = self._in_base(ids)
        if live.any():
            _vectors_view(self._base, self.dim)[self._positions(ids[live])] = 0.0  # erase the bytes now
            self._tomb.update(int(i) for i in ids[live])
            self._selector = None
            removed += int(live.sum())
        return removed

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar vectors to a (dim,) query: (similarities (m,), ids (m,)), best first, m <= k.

        Exact below :data:`HNSW_THRESHOLD` vectors; approximate (HNSW) above it. Runs on the calling
        thread only: FAISS parallelises over queries, so with one query its OpenMP team only adds a
        barrier whose spinning threads cost more CPU than the search itself (see :func:`_single_thread`)."""
        k = min(int(k), self.ntotal)
        if k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        with _single_thread():
            return self._search(query, k)

    def _search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss as faiss_

        faiss: Any = faiss_  # its stubs lack the search-parameter classes
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        sims, ids = [], []
        if self._base.ntotal > len(self._tomb):
            kb = min(k, int(self._base.ntotal))
            if self._tomb and self._selector is None:
                tomb = np.fromiter(self._tomb, dtype=np.int64, count=len(self._tomb))
                self._selector = (faiss.IDSelectorNot(faiss.IDSelectorBatch(tomb)), tomb)  # keep tomb alive
            sel = self._selector[0] if self._tomb else None
            if self.kind == "hnsw":
                params: Any = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, kb))
                if sel is not None:
                    params.sel = sel
            else:
                params = faiss.SearchParameters(sel=sel) if sel is not None else None
            s, i = self._base.search(q, kb, params=params)
            sims.append(s[0])
            ids.append(i[0])
        if self._delta_ids:
            s, i = self._delta.search(q, min(k, len(self._delta_ids)))
            sims.append(s[0])
            ids.append(i[0])
        all_sims, all_ids = np.concatenate(sims), np.concatenate(ids).astype(np.int64)
        keep = all_ids >= 0
        all_sims, all_ids = all_sims[keep], all_ids[keep]
        order = np.lexsort((all_ids, -all_sims))[:k]
        return all_sims[order], all_ids[order]

    # -------------------------------------------------------------------------------- compaction

    def compact(self) -> None:
        """Merge the delta and the tombstones into the base, switching flat <-> HNSW by size."""
        n = self.ntotal
        kind: Kind = self.kind
        if n >= HNSW_THRESHOLD:
            kind = "hnsw"
        elif n < HNSW_THRESHOLD // 2:
            kind = "flat"
        base_n = int(self._base.ntotal)
        rebuild = kind != self.kind or (kind == "hnsw" and len(self._tomb) > TOMBSTONE_REBUILD_FRACTION * base_n)
        if rebuild:
            ids = self.ids()
            vectors = self.vectors(ids) if ids.size else np.zeros((0, self.dim), dtype=np.float32)
            self._reset_delta()
            self._base = _hnsw(self.dim) if kind == "hnsw" else _flat(self.dim)
            self._tomb = set()
            for start in range(0, ids.size, 100_000):  # HNSW inserts in parallel within a call
                self._base.add_with_ids(vectors[start : start + 100_000], ids[start : start + 100_000])
        else:
            if self._tomb and kind == "flat":
                self._base.remove_ids(np.fromiter(self._tomb, dtype=np.int64, count=len(self._tomb)))
                self._tomb = set()
            if self._delta_ids:
                self._base.add_with_ids(_vectors_view(self._delta, self.dim), np.asarray(self._delta_ids))
            self._reset_delta()
        import faiss

        self._selector = None
        self._base_ids = faiss.vector_to_array(self._base.id_map).astype(np.int64)
        self._base_order = np.argsort(self._base_ids, kind="stable")

    def _reset_delta(self) -> None:
        self._delta = _flat(self.dim)
        self._delta_ids = []
        self._delta_set = set()

    # ------------------------------------------------------------------------------- persistence

    def _payload_parts(self) -> list[bytes | memoryview]:
        import faiss

        header = json.dumps(
            {
                "dim": self.dim,
                "kind": self.kind,
                "tombstones": len(self._tomb),
                "hnsw": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION} if self.kind == "hnsw" else None,
            },
            sort_keys=True,
        ).encode()
        tomb = np.array(sorted(self._tomb), dtype="<i8").tobytes()
        return [_REC.pack(len(header)), header, tomb, faiss.serialize_index(self._base).data]

    def _file_parts(self, epoch: bytes) -> list[bytes | memoryview]:
        """The base file as pieces (never joined: at a million vectors it is over a gigabyte)."""
        self.compact()
        payload = self._payload_parts()
        digest = hashlib.sha256(epoch)
        for part in payload:
            digest.update(part)
        return [MAGIC, epoch, digest.digest(), *payload]

    def to_bytes(self) -> bytes:
        """The base file's content (compacts first), with a fresh epoch."""
        return b"".join(bytes(p) for p in self._file_parts(os.urandom(_EPOCH)))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, name: str = "index") -> VectorIndex:
        """Raises IndexFileError when the data is not an intact sigvault index."""
        import faiss

        data = memoryview(data)
        if len(data) < _HEADER or bytes(data[: len(MAGIC)]) != MAGIC:
            raise IndexFileError(f"{name}: not a sigvault index file; run `sigvault index rebuild`")
        epoch = bytes(data[len(MAGIC) : len(MAGIC) + _EPOCH])
        payload = data[_HEADER:]
        digest = hashlib.sha256(epoch)
        digest.update(payload)
        if digest.digest() != bytes(data[len(MAGIC) + _EPOCH : _HEADER]):
            raise IndexFileError(f"{name}: index file is damaged (checksum mismatch); run `sigvault index rebuild`")
        try:
            (hlen,) = _REC.unpack_from(payload, 0)
            header = json.loads(bytes(payload[4 : 4 + hlen]))
            n_tomb = int(header["tombstones"])
            start = 4 + hlen + 8 * n_tomb
            tomb = np.frombuffer(payload[4 + hlen : start], dtype="<i8").astype(np.int64)
            index = faiss.deserialize_index(np.frombuffer(payload[start:], dtype=np.uint8))
        except (RuntimeError, ValueError, KeyError, TypeError, struct.error) as exc:
            raise IndexFileError(f"{name}: index file cannot be read ({exc}); run `sigvault index rebuild`") from None
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexFileError(f"{name}: unexpected index type {type(index).__name__}; run `sigvault index rebuild`")
        out = cls(index.d, _faiss_index=index, _tombstones=tomb.tolist())
        out.epoch = epoch
        return out

    def save(self, path: Path) -> None:
        """Compact: merge everything into a new base file (new epoch) and start an empty journal.

        Both are written atomically (temporary file, fsync, rename, fsync the directory). If this index
        was loaded from ``path`` and the base there is still the same, journal records appended since are
        applied first, so no other writer's change is lost."""
        with file_lock(path):
            if self.epoch is not None and read_epoch(path) == self.epoch:
                self.refresh(path)
            epoch = os.urandom(_EPOCH)
            atomic_write(path, self._file_parts(epoch))
            atomic_write(journal_path(path), [JOURNAL_MAGIC, epoch])
            self.epoch, self.journal_offset, self.damaged = epoch, len(JOURNAL_MAGIC) + _EPOCH, None

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        """The base file plus its journal. Raises FileNotFoundError if absent, IndexFileError if the base is
        unreadable or damaged (a damaged journal only sets ``damaged``)."""
        for _ in range(5):
            index = cls._load_base(path)
            if index.refresh(path):
                return index
        raise IndexFileError(f"{path}: keeps changing while being read; try again")  # pragma: no cover

    @classmethod
    def _load_base(cls, path: Path) -> VectorIndex:
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                buf = bytearray(size)
                fh.readinto(buf)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IndexFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return cls.from_bytes(buf, name=str(path))

    def refresh(self, path: Path) -> bool:
        """Apply the journal records appended since the last call. False when the base file is no
        longer the one this index came from (compacted by another process: load it again)."""
        with file_lock(path):
            if self.epoch is None or read_epoch(path) != self.epoch:
                return False
            jpath = journal_path(path)
            try:
                with open(jpath, "rb") as fh:
                    head = fh.read(len(JOURNAL_MAGIC) + _EPOCH)
                    if head != JOURNAL_MAGIC + self.epoch:
                        return True  # no journal for this base yet (or an old one): nothing to apply
                    offset = max(self.journal_offset, len(head))
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                return True
            pos = 0
            while pos < len(data):
                if pos + 4 > len(data):
                    self.damaged = f"{jpath}: torn record at byte {offset + pos}"
                    break
                (length,) = _REC.unpack_from(data, pos)
                end = pos + 4 + length + 4
                if end > len(data):
                    self.damaged = f"{jpath}: torn record at byte {offset + pos}"
                    break
                body = data[pos + 4 : pos + 4 + length]
                if zlib.crc32(body) != _REC.unpack_from(data, end - 4)[0] or not self._apply(body):
                    self.damaged = f"{jpath}: damaged record at byte {offset + pos}"
                    break
                pos = end
            self.journal_offset = offset + pos
            return True

    def _apply(self, body: bytes) -> bool:
        if body[:1] != _ADD or len(body) < 5:
            return False
        (n,) = _REC.unpack_from(body, 1)
        if len(body) != 5 + n * 8 + n * self.dim * 4:
            return False
        ids = np.frombuffer(body, dtype="<i8", count=n, offset=5).astype(np.int64)
        vectors = np.frombuffer(body, dtype="<f4", offset=5 + 8 * n).astype(np.float32).reshape(n, self.dim)
        self.add(ids, vectors)
        return True

    def append(self, path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors here and record them in the journal of ``path`` (the file this index was loaded
        from or saved to). Journal records other processes appended meanwhile are applied first; if the
        base there changed or is gone, this compacts (:meth:`save`) instead."""
        with file_lock(path):
            if self.epoch is None or not self.refresh(path):
                self.add(ids, vectors)
                self.save(path)
                return
            self.add(ids, vectors)
            if not append_journal(path, ids, vectors):  # pragma: no cover - the base vanished under the lock
                self.save(path)
                return
            self.journal_offset = _journal_end(journal_path(path), self.epoch) or self.journal_offset


@contextmanager
def _single_thread() -> Iterator[None]:
    """FAISS calls made inside run on the calling thread (OpenMP team size 1), restored afterwards.

    For one query FAISS has nothing to split (it parallelises over queries, and ``IndexIDMap`` maps the
    k result ids in a parallel loop), yet each parallel region wakes the OpenMP team and its threads then
    spin-wait: ``identify`` measured 13.8 ms of CPU per search of ~100 vectors with the default 2 threads,
    0.17 ms with 1 (and more wall time whenever the other core is busy). The setting is the calling
    thread's own (an OpenMP ICV), so other threads keep theirs; index builds stay parallel."""
    import faiss

    before = faiss.omp_get_max_threads()
    if before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def read_epoch(path: Path) -> bytes | None:
    """The epoch of the base file at ``path`` from its first bytes (None if absent or not an index)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(MAGIC) + _EPOCH)
    except OSError:
        return None
    if len(head) < len(MAGIC) + _EPOCH or head[: len(MAGIC)] != MAGIC:
        return None
    return head[len(MAGIC) :]


def _journal_end(jpath: Path, epoch: bytes) -> int | None:
    """End of the last complete record of a journal that extends ``epoch`` (None: absent or another
    base's). Walks the record lengths only; CRCs are checked by readers."""
    try:
        with open(jpath, "rb") as fh:
            if fh.read(len(JOURNAL_MAGIC) + _EPOCH) != JOURNAL_MAGIC + epoch:
                return None
            size = os.fstat(fh.fileno()).st_size
            pos = len(JOURNAL_MAGIC) + _EPOCH
            while pos + 4 <= size:
                fh.seek(pos)
                (length,) = _REC.unpack(fh.read(4))
                if pos + 4 + length + 4 > size:
                    break
                pos += 4 + length + 4
            return pos
    except FileNotFoundError:
        return None


def append_journal(path: Path, ids: np.ndarray, vectors: np.ndarray) -> bool:
    """Record added vectors in the journal of the base file at ``path``: O(len(ids)), fsynced.

    Returns False (and writes nothing) when there is no readable base file to extend: the next reader
    builds the index from SQL. A torn record left by a crash is cut off first."""
    ids = np.ascontiguousarray(ids, dtype="<i8")
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if ids.size == 0:
        return True
    body = _ADD + _REC.pack(ids.size) + ids.tobytes() + vectors.tobytes()
    record = _REC.pack(len(body)) + body + _REC.pack(zlib.crc32(body))
    with file_lock(path):
        epoch = read_epoch(path)
        if epoch is None:
            return False
        jpath = journal_path(path)
        end = _journal_end(jpath, epoch)
        if end is None:
            atomic_write(jpath, [JOURNAL_MAGIC, epoch])
            end = len(JOURNAL_MAGIC) + _EPOCH
        with open(jpath, "r+b") as fh:
            fh.truncate(end)
            fh.seek(end)
            append_durably(fh, record)
    return True


def delete_index_files(path: Path) -> None:
    """Delete a base file and its journal."""
    path.unlink(missing_ok=True)
    journal_path(path).unlink(missing_ok=True)


class _Held:
    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fh: Any = None


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def _forget_locks_after_fork() -> None:
    """In a forked child: drop the parent's locks. The child's copies of the lock files are closed, never
    unlocked (a flock belongs to the open file shared with the parent, which keeps holding it); without
    this a child that outlives its parent (e.g. a worker after a SIGKILL) would keep the lock forever."""
    global _HELD_GUARD
    for held in _HELD.values():
        if held.fh is not None:
            with suppress(OSError):
                held.fh.close()
    _HELD.clear()
    _HELD_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_after_fork)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``<path>.lock`` (POSIX ``flock``; a no-op where unavailable).

    Reentrant within a process (a thread that holds it may take it again; other threads wait), so a
    method holding it can call another that takes it. Writers of an index file hold it across
    load-update-save, so two processes never lose each other's changes.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    key = os.path.abspath(lock_path)
    with _HELD_GUARD:
        held = _HELD.setdefault(key, _Held())
    with held.rlock:
        if held.depth == 0:
            held.fh = open_private(lock_path, "a+b")  # closed when the outermost holder leaves
            try:
                fcntl.flock(held.fh.fileno(), fcntl.LOCK_EX)
            except BaseException:
                held.fh.close()
                raise
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                fcntl.flock(held.fh.fileno(), fcntl.LOCK_UN)
                held.fh.close()
                held.fh = None
