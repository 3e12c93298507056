"""Keeps a vault home's FAISS index files in line with SQL, the source of truth.

The index is a cache: :meth:`IndexSync.check` compares it with SQL without changing anything,
:meth:`IndexSync.rebuild` rebuilds it from SQL alone, :meth:`IndexSync.current` returns an index that agrees
with SQL (repairing it id by id when it does not), :meth:`IndexSync.record_added` journals committed
references, and :meth:`IndexSync.purge` erases ids from every model's files. Every writer holds the file's
inter-process lock across load-update-save. One instance per :class:`~sigvault.vault.Vault`, which passes the
loaded model's id and dimension; the index it last synchronised is kept in :attr:`IndexSync.cache`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sigvault import config
from sigvault.db import queries
from sigvault.db.engine import transaction
from sigvault.errors import IndexFileError
from sigvault.index import HNSW_THRESHOLD, Fingerprint, VectorIndex, append_journal, delete_index_files, file_lock
from sigvault.results import IndexReport

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

#: Ids (and vectors) read from SQL at a time when comparing or rebuilding, so memory stays bounded.
SQL_CHUNK = 10_000


class IndexSync:
    """The index files in ``index_dir`` (one base file and journal per model) over the database of ``engine``."""

    def __init__(self, engine: Engine, index_dir: Path) -> None:
        self.engine = engine
        self.index_dir = index_dir
        #: (SQL's id generation, index) of the index this process last brought in line with SQL
        self.cache: tuple[tuple[int, int], VectorIndex] | None = None

    def path(self, model_id: str) -> Path:
        return config.index_path(self.index_dir, model_id)

    def check(self, model_id: str, dim: int) -> IndexReport:
        """Compare the index files (base and journal) with SQL, ids and vectors, without changing anything.

        Vectors are compared in chunks of :data:`SQL_CHUNK` in id order, so memory stays bounded at a million."""
        path = self.path(model_id)
        try:
            index: VectorIndex | None = VectorIndex.load(path)
            failure = None
        except FileNotFoundError:
            index, failure = None, None
        except IndexFileError as exc:
            index, failure = None, str(exc)
        with transaction(self.engine) as conn:
            sql_ids = queries.reference_ids(conn, model_id)
            sql = Fingerprint.of(sql_ids)
            if index is None:
                if failure is not None:
                    return IndexReport(model_id, path, sql, None, False, failure)
                empty = sql.count == 0  # nothing enrolled with this model: no file is the right state
                return IndexReport(model_id, path, sql, None, empty, None if empty else "no index file")
            ids = index.ids()
            found = Fingerprint.of(ids)
            if index.dim != dim:
                return IndexReport(model_id, path, sql, found, False, f"index has {index.dim} dimensions")
            if found != sql:
                missing, extra = np.setdiff1d(sql_ids, ids).size, np.setdiff1d(ids, sql_ids).size
                problem = f"{missing} references missing from the index, {extra} in the index but not in SQL"
                return IndexReport(model_id, path, sql, found, False, problem)
            same = all(
                np.array_equal(index.vectors(chunk_ids), vectors)
                for chunk_ids, vectors in _embedding_chunks(conn, model_id, dim)
            )
        if not same:
            return IndexReport(model_id, path, sql, found, False, "vectors differ from SQL")
        if index.damaged:
            return IndexReport(model_id, path, sql, found, False, index.damaged)
        return IndexReport(model_id, path, sql, found, True)

    def rebuild(self, model_id: str, dim: int) -> IndexReport:
        """Rebuild the model's index files from SQL alone (HNSW above ``index.HNSW_THRESHOLD`` references) and
        save them atomically."""
        path = self.path(model_id)
        with file_lock(path):
            index = VectorIndex(dim)
            with transaction(self.engine) as conn:
                generation = queries.id_generation(conn, model_id)
                for ids, vectors in _embedding_chunks(conn, model_id, dim):
                    index.add(ids, vectors)
            index.save(path)
        self.cache = (generation, index)
        found = index.fingerprint()
        return IndexReport(model_id, path, found, found, True)

    def sync(self, model_id: str, dim: int) -> VectorIndex:
        """Bring the index in line with SQL and return it.

        The index this process already holds is brought up to date from the journal (cheap); otherwise
        the files are loaded (or an empty index started if missing or damaged). A freshly loaded index,
        a damaged journal, or one whose (count, max id) disagrees with SQL is compared id by id with SQL:
        missing references are added (and journaled), extra ones removed. The files are compacted when
        the journal grew large, when something had to be removed, or when they were unusable."""
        path = self.path(model_id)
        with file_lock(path):
            cached = self.cache[1] if self.cache is not None else None
            index: VectorIndex | None = None
            verified = False
            if cached is not None and cached.dim == dim and cached.epoch is not None and cached.refresh(path):
                index, verified = cached, True  # compared with SQL id by id when this process loaded it
            else:
                try:
                    index = VectorIndex.load(path)
                except (FileNotFoundError, IndexFileError):
                    index = None
            rebuild = index is None or index.dim != dim
            if index is None or index.dim != dim:
                index = VectorIndex(dim)
            extra = missing = np.zeros(0, dtype=np.int64)
            fetched: list[tuple[np.ndarray, np.ndarray]] = []
            with transaction(self.engine) as conn:
                generation = queries.id_generation(conn, model_id)
                if not (verified and index.damaged is None and (index.ntotal, index.max_id()) == generation):
                    sql_ids = queries.reference_ids(conn, model_id)
                    have = index.ids()
                    extra = np.setdiff1d(have, sql_ids, assume_unique=True)
                    missing = np.setdiff1d(sql_ids, have, assume_unique=True)
                    index.remove(extra)
                    for start in range(0, missing.size, SQL_CHUNK):
                        ids, blobs = queries.embeddings_by_ids(conn, missing[start : start + SQL_CHUNK].tolist())
                        fetched.append((ids, queries.decode_vectors(blobs, dim)))
                        index.add(*fetched[-1])
            if rebuild or index.damaged or extra.size or index.needs_compaction():
                index.save(path)
            else:
                for ids, vectors in fetched:  # already in memory: this records them for other processes
                    index.append(path, ids, vectors)
        self.cache = (generation, index)
        return index

    def current(self, conn: Connection, model_id: str, dim: int) -> VectorIndex:
        """The index for searching; re-synced only when the references changed since it was loaded."""
        generation = queries.id_generation(conn, model_id)
        if self.cache is not None and self.cache[0] == generation:
            return self.cache[1]
        return self.sync(model_id, dim)

    def record_added(self, model_id: str, dim: int, ids: np.ndarray, vectors: np.ndarray) -> list[str]:
        """Record committed references in the index: one fsynced journal append, O(len(ids)) whatever the
        vault's size. With no index file yet, a small vault's index is built now; a large one's (over
        ``index.HNSW_THRESHOLD`` references, e.g. after a bulk import) at the next ``identify`` or
        ``sigvault index rebuild``. SQL is already right, so a failure here is only a warning (returned): the
        next command that needs the index repairs it from SQL."""
        path = self.path(model_id)
        try:
            with file_lock(path):
                if append_journal(path, ids, vectors):
                    return []
                with transaction(self.engine) as conn:
                    n, _ = queries.id_generation(conn, model_id)
                if n <= HNSW_THRESHOLD:
                    self.sync(model_id, dim)
        except (OSError, IndexFileError) as exc:
            return [f"index not updated ({exc}); it will be rebuilt on next use"]
        return []

    def purge(self, ids: np.ndarray) -> None:
        """Erase ids from every model's index files: load, remove, compact (the base and the journal are
        rewritten without them, like ``VACUUM`` for the database). A damaged file is deleted (it is only a
        cache), and so is a journal left without its base."""
        self.cache = None
        for path in sorted(self.index_dir.glob("*.faiss")):
            with file_lock(path):
                try:
                    index = VectorIndex.load(path)
                except FileNotFoundError:
                    continue
                except IndexFileError:
                    delete_index_files(path)
                    continue
                if index.remove(ids) or index.damaged:
                    index.save(path)
        for journal in sorted(self.index_dir.glob("*.faiss.journal")):
            base = journal.with_name(journal.name.removesuffix(".journal"))
            with file_lock(base):
                if not base.exists():
                    journal.unlink(missing_ok=True)

    def delete_other_models(self, model_id: str) -> None:
        """Delete the index files of every model but ``model_id`` (after ``reembed``: none has vectors left)."""
        keep = self.path(model_id)
        for stale in self.index_dir.glob("*.faiss"):
            if stale != keep:
                delete_index_files(stale)


def _embedding_chunks(conn: Connection, model_id: str, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of the model's references in id order, :data:`SQL_CHUNK` at a time."""
    ids: list[int] = []
    blobs: list[bytes] = []
    for ref_id, blob in queries.iter_embeddings(conn, model_id):
        ids.append(ref_id)
        blobs.append(blob)
        if len(ids) == SQL_CHUNK:
            yield np.asarray(ids, dtype=np.int64), queries.decode_vectors(blobs, dim)
            ids, blobs = [], []
    if ids:
        yield np.asarray(ids, dtype=np.int64), queries.decode_vectors(blobs, dim)
