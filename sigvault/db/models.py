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
- ``decisions``: the append-only decision log (verifications, and events: state changes and reviews, with
  the operator and reason); ``id`` is the position in a SHA-256 hash chain
  (``prev_hash`` -> ``hash``). Rows keep the person's text id, hashes and scores only (no image, no
  embedding) and survive ``people remove``.
- ``log_head``: a single row (``id`` = 1) holding the chain's last position and hash. Appenders lock it,
  which serialises the chain across processes, and it lets ``log verify`` detect a truncated tail.
- ``api_keys``: the HTTP service's keys (:mod:`sigvault.keys`): a unique name (never reused, so the name a
  decision records identifies one key forever), a scope, the SHA-256 of the secret (never the secret), and
  when it was created and revoked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
)

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
OPERATOR_MAX = 200  # who asked: an operator, a system or an HTTP key (``api-key:NAME``)
REASON_MAX = 1000
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


# SQLAlchemy Core tables, not ORM classes: nothing here needs the ORM, and importing ``sqlalchemy.orm`` and
# mapping the classes cost every start of the command line CPU (importing sigvault.vault: 414-496 ms with
# them, 336-350 ms without), besides the ORM plugin's work on each statement. Every column is NOT NULL
# unless marked nullable.
metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base:
    """The schema's :class:`~sqlalchemy.MetaData` as ``Base.metadata`` (for Alembic, backup and tests)."""

    metadata = metadata


def _col(name: str, type_: Any, *args: Any, nullable: bool = False, **kwargs: Any) -> Column[Any]:
    return Column(name, type_, *args, nullable=nullable, **kwargs)


Person = Table(
    "persons",
    metadata,
    _col("id", Integer, primary_key=True),
    _col("person_id", String(PERSON_ID_MAX), unique=True),
    _col("created_at", UTCDateTime()),
)

Reference = Table(
    "refs",
    metadata,
    _col("id", Id64, primary_key=True, autoincrement=True),
    _col("person_pk", Integer, ForeignKey("persons.id", ondelete="CASCADE"), index=True),
    _col("sha256", String(SHA256_HEX)),
    _col("source_name", String(1000), nullable=True),
    _col("model_id", String(MODEL_ID_MAX)),
    _col("embedding", LargeBinary()),
    _col("created_at", UTCDateTime()),
    UniqueConstraint("person_pk", "sha256"),
    Index(None, "model_id"),
    sqlite_autoincrement=True,
)

ReferenceImage = Table(
    "ref_images",
    metadata,
    _col("ref_id", Id64, ForeignKey("refs.id", ondelete="CASCADE"), primary_key=True),
    _col("data", LargeBinary()),
)

Threshold = Table(
    "thresholds",
    metadata,
    _col("person_pk", Integer, ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True),
    _col("value", Float()),
    _col("method", String(METHOD_MAX)),
    _col("n_references", Integer),
    _col("details", JSON()),
    _col("model_id", String(MODEL_ID_MAX)),
    _col("is_override", Boolean()),
    _col("set_at", UTCDateTime()),
)

Decision = Table(
    "decisions",
    metadata,
    _col("id", Id64, primary_key=True, autoincrement=False),
    _col("at", UTCDateTime()),
    _col("kind", String(16)),
    _col("person_id", String(PERSON_ID_MAX), index=True),
    # None in events (state changes, reviews: sigvault.db.decision_log.EVENT_KINDS)
    _col("image_sha256", String(SHA256_HEX), nullable=True),
    _col("score", Float(), nullable=True),
    _col("threshold", Float(), nullable=True),
    _col("threshold_method", String(METHOD_MAX), nullable=True),
    _col("decision", String(16), nullable=True),
    _col("probability", Float(), nullable=True),
    _col("model_id", String(MODEL_ID_MAX), nullable=True),
    _col("references_used", JSON()),
    _col("details", JSON(), nullable=True),
    _col("operator", String(OPERATOR_MAX), nullable=True),
    _col("reason", String(REASON_MAX), nullable=True),
    _col("prev_hash", String(SHA256_HEX)),
    _col("hash", String(SHA256_HEX), unique=True),
)

LogHead = Table(
    "log_head",
    metadata,
    _col("id", Integer, primary_key=True, autoincrement=False),
    _col("last_id", Id64),
    _col("last_hash", String(SHA256_HEX)),
)

API_KEY_NAME_MAX = 64

ApiKey = Table(
    "api_keys",
    metadata,
    _col("id", Integer, primary_key=True),
    _col("name", String(API_KEY_NAME_MAX), unique=True),
    _col("scope", String(16)),
    _col("secret_sha256", String(SHA256_HEX), unique=True),
    _col("created_at", UTCDateTime()),
    _col("revoked_at", UTCDateTime(), nullable=True),
)
