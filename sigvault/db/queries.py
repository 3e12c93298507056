"""Queries over the vault schema. Every function takes an open :class:`~sqlalchemy.Connection` inside the
caller's transaction; no business rules live here (validation, scoring and index upkeep are the vault's).

Embeddings are stored as float32 little-endian bytes (:func:`encode_vector` / :func:`decode_vectors`).

The statements of the per-request paths (``verify``, ``identify``, ``enroll``, ``audit``) are built once,
at import, with bound parameters: building a ``select()`` and its cache key costs ~75 us of CPU per call,
several times the SQLite query itself (a person lookup: 95 us built per call, 21 us prebuilt), and
``identify`` runs three per candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from sigvault.db.models import Person, Reference, ReferenceImage, Threshold, utcnow

VECTOR_DTYPE = np.dtype("<f4")
_CHUNK = 500  # ids per IN (...) clause, well under SQLite's and PostgreSQL's parameter limits


def encode_vector(vector: np.ndarray) -> bytes:
    """(d,) float -> float32 little-endian bytes."""
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int | None = None) -> np.ndarray:
    """Float32 little-endian blobs -> (n, d) float32 (native byte order). ``dim`` is checked if given."""
    if not blobs:
        return np.zeros((0, dim or 0), dtype=np.float32)
    arr = np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).astype(np.float32)
    d = len(blobs[0]) // VECTOR_DTYPE.itemsize
    if dim is not None and d != dim:
        raise ValueError(f"stored vectors have {d} dimensions, expected {dim}")
    return arr.reshape(len(blobs), d)


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield [int(x) for x in ids[i : i + _CHUNK]]


# ------------------------------------------------------------------------------------------------ persons


@dataclass(frozen=True)
class PersonRow:
    pk: int
    person_id: str
    created_at: datetime


_GET_PERSON = select(Person.c.id, Person.c.person_id, Person.c.created_at).where(
    Person.c.person_id == bindparam("person_id")
)
_GET_PERSON_LOCKED = _GET_PERSON.with_for_update()


def get_person(conn: Connection, person_id: str, *, lock: bool = False) -> PersonRow | None:
    """The person, or None. ``lock=True`` locks the row until commit (PostgreSQL ``FOR UPDATE``)."""
    row = conn.execute(_GET_PERSON_LOCKED if lock else _GET_PERSON, {"person_id": person_id}).one_or_none()
    return None if row is None else PersonRow(row.id, row.person_id, row.created_at)


def create_person(conn: Connection, person_id: str) -> PersonRow:
    """Insert a person (raises ``IntegrityError`` if the id exists: the caller decides)."""
    now = utcnow()
    pk = conn.execute(insert(Person).values(person_id=person_id, created_at=now).returning(Person.c.id)).scalar_one()
    return PersonRow(pk, person_id, now)


@dataclass(frozen=True)
class PersonSummary:
    person_id: str
    created_at: datetime
    n_references: int
    threshold: float | None
    threshold_method: str | None
    is_override: bool


def list_persons(conn: Connection) -> list[PersonSummary]:
    """Every person with reference count and threshold, ordered by person id."""
    counts = select(Reference.c.person_pk, func.count().label("n")).group_by(Reference.c.person_pk).subquery()
    stmt = (
        select(
            Person.c.person_id,
            Person.c.created_at,
            func.coalesce(counts.c.n, 0),
            Threshold.c.value,
            Threshold.c.method,
            Threshold.c.is_override,
        )
        .outerjoin(counts, counts.c.person_pk == Person.c.id)
        .outerjoin(Threshold, Threshold.c.person_pk == Person.c.id)
        .order_by(Person.c.person_id)
    )
    return [
        PersonSummary(pid, created, int(n), value, method, bool(override))
        for pid, created, n, value, method, override in conn.execute(stmt)
    ]


def delete_person(conn: Connection, person_pk: int) -> list[int]:
    """Delete a person with references, images and threshold; returns the deleted reference ids."""
    ref_ids = [int(i) for i in conn.execute(select(Reference.c.id).where(Reference.c.person_pk == person_pk)).scalars()]
    for chunk in _chunks(ref_ids):
        conn.execute(delete(ReferenceImage).where(ReferenceImage.c.ref_id.in_(chunk)))
    conn.execute(delete(Reference).where(Reference.c.person_pk == person_pk))
    conn.execute(delete(Threshold).where(Threshold.c.person_pk == person_pk))
    conn.execute(delete(Person).where(Person.c.id == person_pk))
    return ref_ids


def delete_reference(conn: Connection, ref_id: int) -> None:
    """Delete one reference and its image (the caller refits the person's threshold)."""
    conn.execute(delete(ReferenceImage).where(ReferenceImage.c.ref_id == ref_id))
    conn.execute(delete(Reference).where(Reference.c.id == ref_id))


def references_by_sha256(conn: Connection, hashes: Iterable[str]) -> dict[str, tuple[str, int]]:
    """sha256 -> (person id, reference id) of the stored references whose image has one of these hashes."""
    found: dict[str, tuple[str, int]] = {}
    wanted = sorted(set(hashes))
    for at in range(0, len(wanted), _CHUNK):
        stmt = (
            select(Reference.c.sha256, Person.c.person_id, Reference.c.id)
            .join(Person, Person.c.id == Reference.c.person_pk)
            .where(Reference.c.sha256.in_(wanted[at : at + _CHUNK]))
        )
        for sha, person_id, ref_id in conn.execute(stmt):
            found.setdefault(sha, (person_id, int(ref_id)))
    return found


# --------------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class ReferenceRow:
    id: int
    sha256: str
    source_name: str | None
    model_id: str
    created_at: datetime


_PERSON_REFERENCES = (
    select(
        Reference.c.id,
        Reference.c.sha256,
        Reference.c.source_name,
        Reference.c.model_id,
        Reference.c.created_at,
        Reference.c.embedding,
    )
    .where(Reference.c.person_pk == bindparam("person_pk"))
    .order_by(Reference.c.id)
)


def person_references(conn: Connection, person_pk: int) -> tuple[list[ReferenceRow], list[bytes]]:
    """A person's references in id order, and their embedding blobs (same order)."""
    rows, blobs = [], []
    for rid, sha, name, model_id, created, blob in conn.execute(_PERSON_REFERENCES, {"person_pk": person_pk}):
        rows.append(ReferenceRow(int(rid), sha, name, model_id, created))
        blobs.append(bytes(blob))
    return rows, blobs


_INSERT_REFERENCE = insert(Reference).returning(Reference.c.id)
_INSERT_IMAGE = insert(ReferenceImage)


def insert_reference(
    conn: Connection,
    *,
    person_pk: int,
    sha256: str,
    source_name: str | None,
    model_id: str,
    embedding: bytes,
    image: bytes,
) -> int:
    """Insert a reference and its image; returns the new reference id (also its FAISS id)."""
    values = {
        "person_pk": person_pk,
        "sha256": sha256,
        "source_name": source_name,
        "model_id": model_id,
        "embedding": embedding,
        "created_at": utcnow(),
    }
    ref_id = conn.execute(_INSERT_REFERENCE, values).scalar_one()
    conn.execute(_INSERT_IMAGE, {"ref_id": ref_id, "data": image})
    return int(ref_id)


def model_counts(conn: Connection) -> dict[str, int]:
    """Number of references per model id that made their vectors."""
    stmt = select(Reference.c.model_id, func.count()).group_by(Reference.c.model_id)
    return {model_id: int(n) for model_id, n in conn.execute(stmt)}


_MODEL_BELOW = select(Reference.c.model_id).where(Reference.c.model_id < bindparam("model_id")).limit(1)
_MODEL_ABOVE = select(Reference.c.model_id).where(Reference.c.model_id > bindparam("model_id")).limit(1)


def other_model(conn: Connection, model_id: str) -> tuple[str, int] | None:
    """A model other than ``model_id`` that made some stored vectors, with its reference count, or None.

    Cheap when there is none (one indexed probe), which is the normal case.
    """
    # two index range seeks (below and above model_id): `!=` would scan the whole index when all agree
    below = conn.execute(_MODEL_BELOW, {"model_id": model_id}).scalar()
    other = below or conn.execute(_MODEL_ABOVE, {"model_id": model_id}).scalar()
    if other is None:
        return None
    n = conn.execute(select(func.count()).where(Reference.c.model_id == other)).scalar_one()
    return other, int(n)


def reference_ids(conn: Connection, model_id: str) -> np.ndarray:
    """Sorted int64 ids of the references made by ``model_id``."""
    stmt = select(Reference.c.id).where(Reference.c.model_id == model_id).order_by(Reference.c.id)
    return np.fromiter(conn.execute(stmt).scalars(), dtype=np.int64)


_ID_GENERATION = select(func.count(), func.max(Reference.c.id)).where(Reference.c.model_id == bindparam("model_id"))


def id_generation(conn: Connection, model_id: str) -> tuple[int, int]:
    """(count, max id) of ``model_id``'s references: it changes whenever their id set changes, because ids
    only grow and are never reused."""
    n, top = conn.execute(_ID_GENERATION, {"model_id": model_id}).one()
    return int(n), int(top or 0)


def embeddings_by_ids(conn: Connection, ids: Sequence[int]) -> tuple[np.ndarray, list[bytes]]:
    """(ids found, int64 sorted) and their embedding blobs, same order."""
    found: list[tuple[int, bytes]] = []
    for chunk in _chunks(ids):
        stmt = select(Reference.c.id, Reference.c.embedding).where(Reference.c.id.in_(chunk))
        found.extend((int(i), bytes(b)) for i, b in conn.execute(stmt))
    found.sort()
    return np.array([i for i, _ in found], dtype=np.int64), [b for _, b in found]


def iter_embeddings(conn: Connection, model_id: str) -> Iterator[tuple[int, bytes]]:
    """(id, embedding blob) of every reference made by ``model_id``, in id order, streamed."""
    stmt = (
        select(Reference.c.id, Reference.c.embedding).where(Reference.c.model_id == model_id).order_by(Reference.c.id)
    )
    for rid, blob in conn.execution_options(yield_per=1000).execute(stmt):
        yield int(rid), bytes(blob)


@dataclass(frozen=True)
class ReferenceOwner:
    person_id: str
    sha256: str


_REFERENCE_OWNERS = (
    select(Reference.c.id, Person.c.person_id, Reference.c.sha256)
    .join(Person, Person.c.id == Reference.c.person_pk)
    .where(Reference.c.id.in_(bindparam("ids", expanding=True)))
)


def reference_owners(conn: Connection, ids: Iterable[int]) -> dict[int, ReferenceOwner]:
    """Reference id -> (person id, image sha256) for the given ids."""
    out: dict[int, ReferenceOwner] = {}
    for chunk in _chunks(list(ids)):
        rows = conn.execute(_REFERENCE_OWNERS, {"ids": chunk})
        out.update({int(i): ReferenceOwner(pid, sha) for i, pid, sha in rows})
    return out


def iter_reference_images(conn: Connection) -> Iterator[tuple[int, str, str | None, bytes]]:
    """(reference id, person id, source name, image bytes) of every reference, in id order, streamed."""
    stmt = (
        select(Reference.c.id, Person.c.person_id, Reference.c.source_name, ReferenceImage.c.data)
        .join(ReferenceImage, ReferenceImage.c.ref_id == Reference.c.id)
        .join(Person, Person.c.id == Reference.c.person_pk)
        .order_by(Reference.c.id)
    )
    for rid, pid, name, data in conn.execution_options(yield_per=200).execute(stmt):
        yield int(rid), pid, name, bytes(data)


def reference_images(conn: Connection, ids: Iterable[int]) -> dict[int, bytes]:
    """Reference id -> stored image bytes, for the given ids (absent ids are left out)."""
    out: dict[int, bytes] = {}
    for chunk in _chunks(sorted(set(ids))):
        stmt = select(ReferenceImage.c.ref_id, ReferenceImage.c.data).where(ReferenceImage.c.ref_id.in_(chunk))
        out.update({int(ref_id): bytes(data) for ref_id, data in conn.execute(stmt)})
    return out


def all_reference_ids(conn: Connection) -> list[int]:
    return [int(i) for i in conn.execute(select(Reference.c.id).order_by(Reference.c.id)).scalars()]


def set_embeddings(conn: Connection, model_id: str, items: Iterable[tuple[int, bytes]]) -> None:
    """Replace embeddings (and their model id) of the given references."""
    params = [{"ref_id": ref_id, "blob": blob} for ref_id, blob in items]
    if params:
        stmt = (
            update(Reference)
            .where(Reference.c.id == bindparam("ref_id"))
            .values(embedding=bindparam("blob"), model_id=model_id)
        )
        conn.execute(stmt, params)


def all_persons(conn: Connection) -> list[PersonRow]:
    stmt = select(Person.c.id, Person.c.person_id, Person.c.created_at).order_by(Person.c.id)
    return [PersonRow(int(pk), pid, created) for pk, pid, created in conn.execute(stmt)]


def person_embeddings(conn: Connection, person_pk: int) -> list[bytes]:
    """A person's embedding blobs in id order."""
    stmt = select(Reference.c.embedding).where(Reference.c.person_pk == person_pk).order_by(Reference.c.id)
    return [bytes(b) for b in conn.execute(stmt).scalars()]


# --------------------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class ThresholdRow:
    value: float
    method: str
    n_references: int
    details: dict[str, Any]
    model_id: str
    is_override: bool
    set_at: datetime


_GET_THRESHOLD = select(
    Threshold.c.value,
    Threshold.c.method,
    Threshold.c.n_references,
    Threshold.c.details,
    Threshold.c.model_id,
    Threshold.c.is_override,
    Threshold.c.set_at,
).where(Threshold.c.person_pk == bindparam("person_pk"))


def get_threshold(conn: Connection, person_pk: int) -> ThresholdRow | None:
    row = conn.execute(_GET_THRESHOLD, {"person_pk": person_pk}).one_or_none()
    return None if row is None else ThresholdRow(*row)


def put_threshold(
    conn: Connection,
    person_pk: int,
    *,
    value: float,
    method: str,
    n_references: int,
    details: dict[str, Any],
    model_id: str,
    is_override: bool,
    set_at: datetime | None = None,
) -> None:
    """Insert or replace the person's threshold (the caller holds the person's row lock); ``set_at``
    defaults to now (an override refitted for new references keeps the time it was set)."""
    values = dict(
        value=float(value),
        method=method,
        n_references=n_references,
        details=details,
        model_id=model_id,
        is_override=is_override,
        set_at=set_at or utcnow(),
    )
    done = conn.execute(update(Threshold).where(Threshold.c.person_pk == person_pk).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(Threshold).values(person_pk=person_pk, **values))
