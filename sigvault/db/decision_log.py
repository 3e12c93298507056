"""The tamper-evident decision log: an append-only table chained with SHA-256.

Entry ``n`` stores ``prev_hash`` (the hash of entry ``n - 1``; :data:`GENESIS_HASH` for entry 1) and
``hash = sha256(canonical JSON of every field of the entry, prev_hash included)``. Ids are consecutive
positions in the chain, assigned under a lock on the single ``log_head`` row, which also records the last
position and hash. So :func:`verify_chain` detects an edited entry (its hash no longer matches), a deleted
or reordered one (a ``prev_hash`` or position breaks), and a removed tail (the head disagrees).

Anyone with write access could recompute the whole chain; anchoring the head hash outside the database
(printing it, sending it to another system) closes that gap: :func:`head` gives it.

Two families of entries share the one chain, so a single ``log verify`` covers both:

- **decisions** (:data:`DECISION_KINDS`): a verification's score, threshold, decision and probability;
- **events** (:data:`EVENT_KINDS`): a change of the vault's state (an enrolment, a threshold override, a
  removal, a restore...) or a reviewer's outcome, made with :func:`event`. Their score, threshold and
  probability are None; ``decision`` holds the event's outcome where it has one (a review's
  ``genuine``/``forged``).

Every entry may name its ``operator`` (who or which system asked: ``--operator``, ``SIGVAULT_OPERATOR``, the
OS user, or an HTTP key as ``api-key:NAME``) and a free-text ``reason``. Those two fields enter the hashed
content only when set, so entries written before they existed keep their hashes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from sigvault.db.models import GENESIS_HASH, OPERATOR_MAX, REASON_MAX, Decision, LogHead, utcnow

DECISION_KINDS = ("verify", "audit")
EVENT_KINDS = (
    "enroll",  # a person created or references added
    "reference-remove",
    "threshold-set",  # an operator's override
    "threshold-reset",  # back to the value derived from the references
    "person-remove",
    "restore",
    "reembed",
    "key-create",
    "key-revoke",
    "review",  # a reviewer's outcome on a logged decision
)
KINDS = DECISION_KINDS + EVENT_KINDS


@dataclass(frozen=True)
class NewEntry:
    """What a caller logs; the log adds id, time and hashes."""

    kind: str
    person_id: str
    image_sha256: str | None
    score: float | None
    threshold: float | None
    threshold_method: str | None
    decision: str | None
    probability: float | None
    model_id: str | None
    references_used: list[dict[str, Any]]
    details: dict[str, Any] | None = None
    operator: str | None = None
    reason: str | None = None


def event(
    kind: str,
    person_id: str,
    *,
    operator: str | None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    outcome: str | None = None,
    threshold: float | None = None,
    model_id: str | None = None,
) -> NewEntry:
    """A state change or a review, to :func:`append` in the same transaction as the change itself, so the
    log holds an event exactly when the change was committed. ``person_id`` is ``""`` for changes that
    concern no one person (a restore, a re-embedding, a key)."""
    return NewEntry(
        kind=kind,
        person_id=person_id,
        image_sha256=None,
        score=None,
        threshold=threshold,
        threshold_method=None,
        decision=outcome,
        probability=None,
        model_id=model_id,
        references_used=[],
        details=details,
        operator=operator,
        reason=reason,
    )


@dataclass(frozen=True)
class Entry:
    """A stored entry, as hashed and exported."""

    id: int
    at: datetime
    kind: str
    person_id: str
    image_sha256: str | None
    score: float | None
    threshold: float | None
    threshold_method: str | None
    decision: str | None
    probability: float | None
    model_id: str | None
    references_used: list[dict[str, Any]]
    details: dict[str, Any] | None
    operator: str | None
    reason: str | None
    prev_hash: str
    hash: str

    @property
    def is_event(self) -> bool:
        """A state change or review rather than a verification."""
        return self.kind in EVENT_KINDS

    def content(self) -> dict[str, Any]:
        """Every field except ``hash``, in JSON types: what the hash covers. ``operator`` and ``reason``
        are included only when set (entries from before they existed hash as they always did)."""
        optional = {k: v for k, v in (("operator", self.operator), ("reason", self.reason)) if v is not None}
        return {
            **optional,
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "person_id": self.person_id,
            "image_sha256": self.image_sha256,
            "score": self.score,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "decision": self.decision,
            "probability": self.probability,
            "model_id": self.model_id,
            "references_used": self.references_used,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }

    def to_dict(self) -> dict[str, Any]:
        """The content with ``hash``, ``operator`` and ``reason`` always present (None when unset)."""
        return {"operator": None, "reason": None, **self.content(), "hash": self.hash}


def entry_hash(content: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of an entry's content."""
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


_HEAD = select(LogHead.c.last_id, LogHead.c.last_hash).where(LogHead.c.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()
_INSERT = insert(Decision)
_MOVE_HEAD = update(LogHead).where(LogHead.c.id == 1)  # statements built once (see sigvault.db.queries)


def head(conn: Connection, *, lock: bool = False) -> tuple[int, str]:
    """(last id, last hash) of the chain; ``lock=True`` serialises appenders until commit."""
    last_id, last_hash = conn.execute(_HEAD_LOCKED if lock else _HEAD).one()
    return int(last_id), last_hash


def append(conn: Connection, entries: Sequence[NewEntry]) -> list[Entry]:
    """Append entries in order inside the caller's transaction (a write transaction on SQLite).

    Raises:
        ValueError: an unknown kind or a non-finite number (a bug in the caller, never user input).
    """
    if not entries:
        return []
    last_id, last_hash = head(conn, lock=True)
    stored: list[Entry] = []
    for new in entries:
        _check(new)
        partial = Entry(
            id=last_id + 1,
            at=utcnow(),
            kind=new.kind,
            person_id=new.person_id,
            image_sha256=new.image_sha256,
            score=_number(new.score),
            threshold=_number(new.threshold),
            threshold_method=new.threshold_method,
            decision=new.decision,
            probability=_number(new.probability),
            model_id=new.model_id,
            references_used=json.loads(json.dumps(new.references_used)),
            details=json.loads(json.dumps(new.details)) if new.details is not None else None,
            operator=new.operator,
            reason=new.reason,
            prev_hash=last_hash,
            hash="",
        )
        entry = Entry(**{**partial.__dict__, "hash": entry_hash(partial.content())})
        stored.append(entry)
        last_id, last_hash = entry.id, entry.hash
    conn.execute(_INSERT, [e.__dict__ for e in stored])
    conn.execute(_MOVE_HEAD, {"last_id": last_id, "last_hash": last_hash})
    return stored


def _number(x: float | None) -> float | None:
    return None if x is None else float(x)


def _check(new: NewEntry) -> None:
    """Raise ValueError for an entry no caller should make (a bug, never user input): an unknown kind, a
    decision without finite numbers, an operator or reason longer than its column."""
    if new.kind not in KINDS:
        raise ValueError(f"unknown log entry kind {new.kind!r}")
    numbers = (new.score, new.threshold, new.probability)
    if new.kind in DECISION_KINDS:
        if not all(x is not None and math.isfinite(x) for x in numbers):
            raise ValueError(f"non-finite or missing score, threshold or probability {numbers}")
    elif not all(x is None or math.isfinite(x) for x in numbers):
        raise ValueError(f"non-finite number in a {new.kind} event {numbers}")
    if new.operator is not None and len(new.operator) > OPERATOR_MAX:
        raise ValueError(f"operator longer than {OPERATOR_MAX} characters")
    if new.reason is not None and len(new.reason) > REASON_MAX:
        raise ValueError(f"reason longer than {REASON_MAX} characters")


@dataclass(frozen=True)
class LogFilter:
    """Which entries ``log export`` writes: a person, some kinds, a time window ``[since, until)`` (UTC).
    None everywhere: the whole log."""

    person_id: str | None = None
    kinds: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


def iter_entries(conn: Connection, *, after: int = 0, where: LogFilter | None = None) -> Iterator[Entry]:
    """Stored entries in chain order, streamed; ``where`` keeps some of them (each still carries its
    ``prev_hash`` and ``hash``, so a subset can be checked entry by entry: :func:`exported_entry_ok`)."""
    cols = [Decision.c[f] for f in Entry.__dataclass_fields__]
    stmt = select(*cols).where(Decision.c.id > after).order_by(Decision.c.id)
    if where is not None:
        if where.person_id is not None:
            stmt = stmt.where(Decision.c.person_id == where.person_id)
        if where.kinds:
            stmt = stmt.where(Decision.c.kind.in_(where.kinds))
        if where.since is not None:
            stmt = stmt.where(Decision.c.at >= where.since)
        if where.until is not None:
            stmt = stmt.where(Decision.c.at < where.until)
    # options on the statement, not the connection: a connection's options stay set (a later INSERT in the same
    # transaction would run through a server-side cursor on PostgreSQL)
    for row in conn.execute(stmt.execution_options(yield_per=1000)):
        yield Entry(*row)


def logged_rows(
    conn: Connection, *, after: int, person_ids: Iterable[str], scope: Mapping[str, Any], key: str
) -> dict[Any, Entry]:
    """Entries after ``after`` of these persons whose details hold every item of ``scope``, by ``details[key]``.

    What makes a batch's appends idempotent (:class:`sigvault.vault.LogOnce`): an audit's entries carry the
    audit id and the row number in their details, so a row already logged is found before it is logged again.
    The search goes through the index on ``person_id`` (a person has a few entries a night, not millions), and
    ``id > after`` bounds it to the entries written since the audit started.
    """
    persons = sorted(set(person_ids))
    if not persons:
        return {}
    cols = [Decision.c[f] for f in Entry.__dataclass_fields__]
    stmt = select(*cols).where(Decision.c.person_id.in_(persons), Decision.c.id > after).order_by(Decision.c.id)
    found: dict[Any, Entry] = {}
    for row in conn.execute(stmt):
        entry = Entry(*row)
        details = entry.details or {}
        if key in details and all(details.get(k) == v for k, v in scope.items()):
            found.setdefault(details[key], entry)
    return found


def exported_entry_ok(line: dict[str, Any]) -> bool:
    """Does an exported entry (a line of ``log export``, :meth:`Entry.to_dict`) still hash to its ``hash``?
    Checks one entry alone, so a filtered export can be checked line by line; only the whole log
    (``log verify``) shows that no entry was removed between two."""
    content = {k: v for k, v in line.items() if k != "hash" and not (k in ("operator", "reason") and v is None)}
    return entry_hash(content) == line.get("hash")


@dataclass(frozen=True)
class ExportReport:
    """Outcome of :func:`check_export`: ``first_bad`` is the line number (from 1) of the first line that fails."""

    ok: bool
    entries: int
    linked: int  # entries whose prev_hash matched the line before (consecutive ids)
    first_bad: int | None = None
    problem: str | None = None


def check_export(lines: Iterable[str]) -> ExportReport:
    """Check an export of ``log export`` (whole or filtered) line by line: each entry hashes to its ``hash``
    (:func:`exported_entry_ok`), ids increase, and where two lines hold consecutive ids the second's
    ``prev_hash`` is the first's ``hash``. What a filter left out cannot be checked: ``log verify`` on the
    vault, or a head hash kept elsewhere, does that."""
    count = linked = 0
    last: dict[str, Any] | None = None
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            ok = isinstance(line, dict) and exported_entry_ok(line)
        except (ValueError, TypeError):
            return ExportReport(False, count, linked, number, f"line {number} is not a log entry (JSON with a hash)")
        if not ok:
            return ExportReport(False, count, linked, number, f"line {number} (entry {line.get('id')}) was altered")
        if last is not None and not int(line["id"]) > int(last["id"]):
            return ExportReport(False, count, linked, number, f"line {number}: entry {line['id']} is out of order")
        if last is not None and int(line["id"]) == int(last["id"]) + 1:
            if line.get("prev_hash") != last["hash"]:
                return ExportReport(
                    False, count, linked, number, f"line {number}: entry {line['id']} does not follow entry {last['id']}"
                )
            linked += 1
        count += 1
        last = line
    return ExportReport(True, count, linked)


def get_entry(conn: Connection, entry_id: int) -> Entry | None:
    """The stored entry with this id, or None."""
    cols = [Decision.c[f] for f in Entry.__dataclass_fields__]
    row = conn.execute(select(*cols).where(Decision.c.id == entry_id)).first()
    return Entry(*row) if row is not None else None


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_chain`. ``first_bad`` is the id of the first entry that fails, if any."""

    ok: bool
    entries: int
    head_id: int
    head_hash: str
    first_bad: int | None = None
    problem: str | None = None


def verify_chain(conn: Connection) -> ChainReport:
    """Walk the whole chain and report the first broken entry."""
    head_id, head_hash = head(conn)
    expected_id, expected_prev, count = 1, GENESIS_HASH, 0
    for entry in iter_entries(conn):
        problem = None
        if entry.id != expected_id:
            problem = f"entry {expected_id} is missing (next entry found is {entry.id}): deleted"
            bad = expected_id
        elif entry.prev_hash != expected_prev:
            problem = f"entry {entry.id} does not follow entry {entry.id - 1}: entries deleted, reordered or edited"
            bad = entry.id
        elif entry_hash(entry.content()) != entry.hash:
            problem = f"entry {entry.id} was altered after it was written (its hash does not match)"
            bad = entry.id
        if problem is not None:
            return ChainReport(False, count, head_id, head_hash, bad, problem)
        count += 1
        expected_id, expected_prev = entry.id + 1, entry.hash
    if count != head_id or expected_prev != head_hash:
        bad = count + 1 if count < head_id else head_id + 1
        problem = (
            f"the log ends at entry {count} but its head records entry {head_id}: entries removed from the end"
            if count < head_id
            else f"the log head does not match entry {count}: the head or the last entries were altered"
        )
        return ChainReport(False, count, head_id, head_hash, bad, problem)
    return ChainReport(True, count, head_id, head_hash)
