"""The SQL schema: the source of truth of the vault (the FAISS index is a cache of ``refs.embedding``).

The schema is created and changed only by the Alembic revisions in ``migrations/``; a test upgrades an
empty database to head and finds it equal to these models. Works on SQLite and PostgreSQL alike.

Tables:

- ``persons``: one row per enrolled person (``person_id`` is the NFC-normalised, validated text id).
- ``refs``: reference signatures. ``id`` is also the FAISS id, never reused (SQLite AUTOINCREMENT, a
  PostgreSQL sequence), so a stale index entry can never be mistaken for a new reference. ``embedding``
  is float32 little-endian bytes made by the model ``model_id``.
- ``ref_images``: the exact image bytes of each reference, kept in SQL (not under the home) so that
  ``reembed`` can recompute embeddings, a database backup is the whole vault, an enrolment is
  all-or-nothing in one transaction, and ``people remove`` erases images with the rows.
- ``thresholds``: each person's current threshold and how it was derived, or an explicit override.
- ``decisions``: the append-only decision log; ``id`` is the position in a SHA-256 hash chain
  (``prev_hash`` -> ``hash``). Rows keep the person's text id, hashes and scores only (no image, no
  embedding) and survive ``people remove``.
- ``log_head``: a single row (``id`` = 1) holding the chain's last position and hash. Appenders lock it,
  which serialises the chain across processes, and it lets ``log verify`` detect a truncated tail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PERSON_ID_MAX = 200
SHA256_HEX = 64
MODEL_ID_MAX = 100
METHOD_MAX = 200
GENESIS_HASH = "0" * SHA256_HEX  # prev_hash of the first decision

# A 64-bit id everywhere except SQLite, whose rowid alias must be spelled INTEGER.
Id64 = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive; we add UTC back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Person(Base):
    __tablename__ = "persons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[str] = mapped_column(String(PERSON_ID_MAX), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Reference(Base):
    __tablename__ = "refs"
    __table_args__ = (
        UniqueConstraint("person_pk", "sha256"),
        Index(None, "model_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id64, primary_key=True, autoincrement=True)
    person_pk: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX))
    source_name: Mapped[str | None] = mapped_column(String(1000))
    model_id: Mapped[str] = mapped_column(String(MODEL_ID_MAX))
    embedding: Mapped[bytes] = mapped_column(LargeBinary())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReferenceImage(Base):
    __tablename__ = "ref_images"

    ref_id: Mapped[int] = mapped_column(Id64, ForeignKey("refs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary())


class Threshold(Base):
    __tablename__ = "thresholds"

    person_pk: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[float] = mapped_column(Float())
    method: Mapped[str] = mapped_column(String(METHOD_MAX))
    n_references: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON())
    model_id: Mapped[str] = mapped_column(String(MODEL_ID_MAX))
    is_override: Mapped[bool] = mapped_column(Boolean())
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Id64, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    person_id: Mapped[str] = mapped_column(String(PERSON_ID_MAX), index=True)
    image_sha256: Mapped[str] = mapped_column(String(SHA256_HEX))
    score: Mapped[float] = mapped_column(Float())
    threshold: Mapped[float] = mapped_column(Float())
    threshold_method: Mapped[str] = mapped_column(String(METHOD_MAX))
    decision: Mapped[str] = mapped_column(String(16))
    probability: Mapped[float] = mapped_column(Float())
    model_id: Mapped[str] = mapped_column(String(MODEL_ID_MAX))
    references_used: Mapped[list[dict[str, Any]]] = mapped_column(JSON())
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    prev_hash: Mapped[str] = mapped_column(String(SHA256_HEX))
    hash: Mapped[str] = mapped_column(String(SHA256_HEX), unique=True)


class LogHead(Base):
    __tablename__ = "log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(Id64)
    last_hash: Mapped[str] = mapped_column(String(SHA256_HEX))
