"""Erasure on disk: after ``people remove``, make the removed rows' bytes (images, vectors, the scorer) leave the
database files, and say honestly when they cannot leave yet.

SQLite: ``secure_delete`` zeroes freed pages as rows are deleted; ``VACUUM`` then rewrites the file and the WAL is
truncated. It needs the database to itself; when another process holds it, the error says to run
``sigvault db purge`` later.

PostgreSQL keeps a deleted row's bytes (a dead tuple) until no transaction that could still see it is open.
``VACUUM FULL`` rewrites a table and its TOAST into new files without the dead tuples, but it must copy a tuple
some older transaction may still see, so the bytes stay on disk while such a transaction is open:

- any transaction on the server (any database) that holds a transaction id older than the deletion: VACUUM
  FULL's own snapshot then counts it as running;
- a transaction in the vault's database whose snapshot is older than the deletion (``backend_xmin``);
- a prepared transaction, or a replication slot whose ``xmin`` is older (a standby with
  ``hot_standby_feedback``).

:func:`erase` looks for them first (``pg_stat_activity``, ``pg_prepared_xacts``, ``pg_replication_slots``). With
none, no transaction can appear later that sees the deleted rows, so the rewrite is sure to drop them: it runs
``VACUUM FULL`` on the tables and reports them erased. Otherwise it reports what the erasure waits for and
changes nothing (a rewrite would keep the bytes anyway); ``sigvault db purge`` completes it once they end.
Seeing other roles' sessions needs superuser or ``pg_read_all_stats``; without it the result says that the
erasure cannot be confirmed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

#: The tables ``people remove`` deletes from: the reference images, the vectors, the scorer and the person.
ERASED_TABLES = ("persons", "refs", "ref_images", "thresholds")
_XID = 1 << 32


@dataclass(frozen=True)
class Blocker:
    """An older transaction (or prepared transaction, or replication slot) that keeps erased rows on disk."""

    kind: str  # "transaction" | "prepared transaction" | "replication slot"
    pid: int | None
    database: str | None
    user: str | None
    application: str | None
    state: str | None  # e.g. "idle in transaction"
    since: datetime | None  # when its transaction began (prepared: when it was prepared)
    name: str | None = None  # a prepared transaction's gid, a slot's name

    def describe(self) -> str:
        parts = [f"pid {self.pid}" if self.pid is not None else f"{self.kind} {self.name}"]
        for label, value in (("user", self.user), ("database", self.database), ("application", self.application)):
            if value:
                parts.append(f"{label} {value}")
        if self.state:
            parts.append(self.state)
        if self.since is not None:
            parts.append(f"since {self.since:%Y-%m-%d %H:%M:%S %Z}".rstrip())
        return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"] = self.since.isoformat() if self.since is not None else None
        return out


@dataclass(frozen=True)
class Erasure:
    """What became of removed rows' bytes in the database files.

    ``erased``: they are gone from the files (SQLite rewritten; PostgreSQL tables rewritten with no older
    transaction open). Otherwise ``waiting_for`` lists what keeps them, or ``note`` says why it cannot be told.
    """

    erased: bool
    waiting_for: tuple[Blocker, ...] = ()
    note: str | None = None

    def message(self) -> str:
        """One line for people: what happened, and what to do when the erasure is not complete."""
        if self.erased:
            return "their images and vectors are erased from the database files"
        if self.waiting_for:
            n = len(self.waiting_for)
            listed = "; ".join(b.describe() for b in self.waiting_for[:5]) + ("; ..." if n > 5 else "")
            return (
                f"their images and vectors stay in the database files until {n} older transaction(s) end: {listed}; "
                "then run `sigvault db purge` (ask the database administrator to end them if they do not)"
            )
        return f"the erasure from the database files cannot be confirmed: {self.note}"

    def to_dict(self) -> dict[str, Any]:
        return {"erased": self.erased, "waiting_for": [b.to_dict() for b in self.waiting_for], "note": self.note}


def deletion_mark(conn: Connection) -> int | None:
    """Inside the transaction that deletes: its PostgreSQL transaction id (full, 64-bit), which :func:`erase`
    compares other transactions with; None on SQLite."""
    from sqlalchemy import text

    if conn.dialect.name != "postgresql":
        return None
    return int(conn.execute(text("SELECT pg_current_xact_id()::text::bigint")).scalar_one())


def blockers(engine: Engine, before: int | None = None) -> tuple[list[Blocker], str | None]:
    """What keeps rows deleted by transaction ``before`` (a :func:`deletion_mark`; None: any transaction
    committed until now) on disk: older transactions, prepared transactions and replication slots, oldest
    first; and a note when other roles' sessions cannot be seen. PostgreSQL only."""
    from sqlalchemy import text

    from sigvault.db.engine import transaction

    with transaction(engine) as conn:
        if before is None:
            before = int(conn.execute(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")).scalar_one())
        mark = before % _XID
        sees_all = bool(
            conn.execute(
                text(
                    "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
                    "FROM pg_roles WHERE rolname = current_user"
                )
            ).scalar()
        )
        found: list[tuple[datetime | None, Blocker]] = []
        sessions = conn.execute(
            text(
                "SELECT pid, datname, usename, application_name, state, xact_start, backend_type, "
                "backend_xid::text, backend_xmin::text, datname = current_database() "
                "FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            )
        )
        for pid, db, user, app, state, since, btype, xid, xmin, same_db in sessions:
            old_xid = xid is not None and _older(int(xid), mark)
            old_snapshot = (
                xmin is not None and same_db and btype != "autovacuum worker" and _older(int(xmin), mark, or_equal=True)
            )
            if old_xid or old_snapshot:
                found.append((since, Blocker("transaction", pid, db, user, app or None, state, since)))
        for xid, gid, owner, db, prepared in conn.execute(
            text("SELECT transaction::text, gid, owner, database, prepared FROM pg_prepared_xacts")
        ):
            if _older(int(xid), mark):
                found.append((prepared, Blocker("prepared transaction", None, db, owner, None, None, prepared, gid)))
        for slot, db, xmin in conn.execute(
            text("SELECT slot_name, database, xmin::text FROM pg_replication_slots WHERE xmin IS NOT NULL")
        ):
            if _older(int(xmin), mark, or_equal=True):
                found.append((None, Blocker("replication slot", None, db, None, None, None, None, slot)))
    found.sort(key=lambda item: (item[0] is None, item[0] or datetime.min))
    note = None if sees_all else (
        "this database role cannot see other roles' transactions; grant it pg_read_all_stats "
        "(or check pg_stat_activity as a superuser) to confirm the erasure"
    )
    return [b for _, b in found], note


def _older(xid: int, mark: int, *, or_equal: bool = False) -> bool:
    """Whether 32-bit transaction id ``xid`` precedes ``mark`` (modulo 2^32, as PostgreSQL compares them); a
    snapshot whose xmin is the deleting transaction itself still sees the deleted rows (``or_equal``)."""
    return (0 if or_equal else 1) <= (mark - xid) % _XID < 1 << 31


def erase(engine: Engine, tables: tuple[str, ...] = ERASED_TABLES, *, before: int | None = None) -> Erasure:
    """Rewrite ``tables`` so that deleted rows' bytes leave the database files, if nothing older keeps them.

    SQLite: ``VACUUM`` and a WAL truncation. PostgreSQL: :func:`blockers` first (of the deletion ``before``, or
    of anything committed until now); with none, ``VACUUM FULL`` of ``tables`` (their TOAST included; each is
    locked briefly); with some, nothing is rewritten and they are reported.

    Raises:
        SigvaultError: the database refused (e.g. SQLite still locked by another process after the timeout).
    """
    from sigvault.db.engine import reclaim_space

    if engine.dialect.name != "postgresql":
        reclaim_space(engine, tables)
        return Erasure(True)
    found, note = blockers(engine, before)
    if found:
        return Erasure(False, tuple(found), note)
    reclaim_space(engine, tables)
    return Erasure(note is None, (), note)


def current_mark(engine: Engine) -> int | None:
    """The transaction id the next transaction will get (PostgreSQL; None on SQLite): a mark for :func:`erase`
    that every deletion committed until now precedes."""
    from sqlalchemy import text

    from sigvault.db.engine import transaction

    if engine.dialect.name != "postgresql":
        return None
    with transaction(engine) as conn:
        return int(conn.execute(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")).scalar_one())


def erase_waiting(
    engine: Engine, tables: tuple[str, ...] = ERASED_TABLES, *, before: int | None = None, wait: float = 0.0,
    poll: float = 0.5,
) -> Erasure:
    """:func:`erase`, waiting up to ``wait`` seconds (checking every ``poll``) for the older transactions to end:
    on a busy server a short transaction that began before the deletion is usually gone within a second.
    ``before`` None: every deletion committed until now (``sigvault db purge``)."""
    if before is None:
        before = current_mark(engine)
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        result = erase(engine, tables, before=before)
        if result.erased or not result.waiting_for or time.monotonic() >= deadline:
            return result
        time.sleep(max(0.05, min(poll, deadline - time.monotonic())))
