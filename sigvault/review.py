"""The review loop: a reviewer's outcome (genuine or forged) recorded beside the model's decision, and how often
the two disagree.

A review is an event of kind ``review`` in the decision log (:mod:`sigvault.db.decision_log`), in the same
hash chain as the decisions, so ``sigvault log verify`` covers it and ``sigvault log export`` shows it. Its
``person_id`` is the reviewed decision's person, ``decision`` holds the outcome (``genuine`` / ``forged``),
``operator`` the reviewer (``--operator``, ``SIGVAULT_OPERATOR``, the OS user, the CSV's ``reviewer`` column, or
an HTTP key as ``api-key:NAME``), ``reason`` why, and ``details`` what the model said about the item:

    {"decision_id": 12, "decision": "reject", "model_decision": "reject", "score": 0.21, "threshold": 0.35,
     "probability": 0.08, "decided_at": "2026-12-06T20:40:00+00:00", "kind": "audit",
     "audit": "3f2a...", "row": 17, "item_id": "CHQ-0017",        # for an audit's decision only
     "supersedes": 40,                                              # when it amends an earlier review
     "imported_from": "outcomes.csv", "line": 3}                     # when imported from a CSV

so that the figures of :func:`review_stats` need only the review events, never the decisions again.

Choices, made for a bank's audit trail:

- **One outcome per decision unless amended.** A second review of the same decision is refused
  (:class:`AlreadyReviewedError`) unless ``amend`` (``--amend``) says so; it is then recorded as a new event
  whose ``details["supersedes"]`` names the review it replaces. Nothing is ever edited: the log keeps both, and
  the figures use the latest review of each decision.
- **Only decisions are reviewed.** An id of an event (an enrolment, another review) is refused
  (:class:`NotADecisionError`). An audit row that could not be decided has no log entry, hence nothing to review.
- **A CSV is imported whole or not at all.** Every row is checked (header, id, outcome, duplicates, decisions
  already reviewed) before anything is written; the first problem is reported with the file, line and value
  (:class:`ReviewFileError`); the reviews are then appended in one transaction.
- **Disagreement, per band.** By the decision as logged (the one the user saw: under an audit's amount policy,
  the policy's): an accepted item the reviewer finds forged, or a rejected item found genuine, is a
  disagreement; a referred item has no verdict to disagree with, so only its split into genuine and forged is
  given. By calibrated probability: the model leans genuine at P(genuine) >= 0.5, and a disagreement is an
  outcome on the other side; beside each band's observed share of genuine signatures, its mean probability
  (the two should be close when the calibration holds).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from sigvault.db import decision_log
from sigvault.db.engine import transaction
from sigvault.db.models import OPERATOR_MAX, REASON_MAX, Decision
from sigvault.errors import DecisionNotFoundError, SigvaultError, UsageError

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Connection

    from sigvault.vault import Vault

OUTCOMES = ("genuine", "forged")
#: The decision bands of :func:`review_stats`, in the order they are reported.
DECISION_BANDS = ("accept", "refer", "reject")
#: Edges of the probability bands: [0, 0.1), [0.1, 0.3), ... [0.9, 1]; none straddles 0.5, where the model's
#: leaning changes side.
PROBABILITY_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
LEANS_GENUINE = 0.5  # P(genuine) at and above which the model leans genuine
#: Columns of an outcomes CSV (``report.html`` exports them in this order); the first two are required.
CSV_COLUMNS = ("decision_id", "outcome", "reason", "reviewer")
REQUIRED_CSV_COLUMNS = ("decision_id", "outcome")
MAX_CSV_BYTES = 64 * 2**20
_CHUNK = 500  # ids per IN (...) query


class NotADecisionError(DecisionNotFoundError):
    """The log entry asked for is an event (a state change or a review), not a decision to review."""


class AlreadyReviewedError(SigvaultError):
    """The decision already has a review and ``--amend`` was not given."""


class ReviewFileError(UsageError):
    """An outcomes CSV cannot be imported: unreadable, bad header, or a bad row (named by its line)."""


# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Review:
    """A review recorded in the decision log (or read back from it)."""

    review_id: int  # its position in the decision log
    decision_id: int
    person: str
    outcome: str
    decision: str  # as logged (under an audit's policy, the policy's)
    model_decision: str  # the model's own
    score: float
    threshold: float
    probability: float
    operator: str | None
    reason: str | None
    at: datetime
    decided_at: datetime | None = None  # when the reviewed decision was made
    audit: str | None = None
    row: int | None = None
    item_id: str | None = None
    supersedes: int | None = None  # the review this one replaces
    superseded_outcome: str | None = None  # that review's outcome (when just recorded)

    @property
    def agreement(self) -> str:
        """``agree``, ``disagree`` (an accepted forgery, a rejected genuine signature) or ``referred``."""
        return agreement(self.decision, self.outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "review_id": self.review_id,
            "decision_id": self.decision_id,
            "person": self.person,
            "outcome": self.outcome,
            "decision": self.decision,
            "model_decision": self.model_decision,
            "agreement": self.agreement,
            "score": self.score,
            "threshold": self.threshold,
            "probability": self.probability,
            "operator": self.operator,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at is not None else None,
            "audit": self.audit,
            "row": self.row,
            "item_id": self.item_id,
            "supersedes": self.supersedes,
            "superseded_outcome": self.superseded_outcome,
        }


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_reviews` recorded."""

    path: Path
    reviews: list[Review]

    @property
    def superseded(self) -> int:
        return sum(1 for r in self.reviews if r.supersedes is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "recorded": len(self.reviews),
            "superseded": self.superseded,
            "reviews": [r.to_dict() for r in self.reviews],
        }


def agreement(decision: str, outcome: str) -> str:
    """Does a reviewer's ``outcome`` agree with the logged ``decision``? ``referred`` for a referred item."""
    if decision == "refer":
        return "referred"
    return "agree" if (decision == "accept") == (outcome == "genuine") else "disagree"


# ------------------------------------------------------------------------------------------ recording


@dataclass(frozen=True)
class _Request:
    """One outcome to record, checked: the reviewed entry, and where it came from (a CSV line)."""

    entry: decision_log.Entry
    outcome: str
    reason: str | None
    operator: str | None
    line: int | None = None


def outcome_value(value: str) -> str:
    """``genuine`` or ``forged`` (case and surrounding spaces ignored).

    Raises:
        UsageError: anything else.
    """
    text = value.strip().lower()
    if text not in OUTCOMES:
        raise UsageError(f"outcome {value!r} is not genuine or forged; give one of them")
    return text


def _text(what: str, value: str | None, limit: int) -> str | None:
    """A one-line reason or reviewer, whitespace collapsed, as ``--operator`` and ``--reason`` are; None when
    blank (an empty CSV cell).

    Raises:
        UsageError: longer than ``limit``.
    """
    from sigvault.config import _text as one_line

    return one_line(what, value, limit) if value is not None and value.strip() else None


def record_review(
    vault: Vault,
    decision_id: int,
    outcome: str,
    *,
    reason: str | None = None,
    operator: str | None = None,
    amend: bool = False,
) -> Review:
    """Record a reviewer's outcome on the logged decision ``decision_id``, as a ``review`` event.

    Args:
        outcome: ``genuine`` or ``forged``.
        reason: why (else the vault's ``reason``, the global ``--reason``).
        operator: who reviewed (else the vault's operator).
        amend: record it even when the decision was already reviewed (the new review supersedes the old).

    Raises:
        UsageError: a bad outcome, or a reason too long.
        DecisionNotFoundError: no log entry has that id; NotADecisionError: the entry is an event.
        AlreadyReviewedError: the decision was already reviewed and ``amend`` is false.
    """
    value = outcome_value(outcome)
    why = _text("reason", reason, REASON_MAX) if reason is not None else vault.reason
    who = _text("operator", operator, OPERATOR_MAX) if operator is not None else vault.operator
    entry = _decision_entry(vault, decision_id)
    return _record(vault, [_Request(entry, value, why, who)], amend=amend, source=None)[0]


def _decision_entry(vault: Vault, decision_id: int) -> decision_log.Entry:
    """The logged decision to review; refuses an unknown id and an event."""
    if decision_id < 1:
        raise DecisionNotFoundError(f"decision {decision_id} is not in the decision log; ids start at 1")
    entry = vault.decision(decision_id)
    if entry.kind not in decision_log.DECISION_KINDS:
        raise NotADecisionError(
            f"log entry {decision_id} is an event ({entry.kind}), not a decision; give the id of a verify or audit "
            "decision (`sigvault log export` lists them)"
        )
    return entry


def _record(vault: Vault, requests: Sequence[_Request], *, amend: bool, source: Path | None) -> list[Review]:
    """Append one review event per request in one write transaction, after checking, under the log's lock,
    that no decision was reviewed meanwhile (unless ``amend``)."""
    with transaction(vault.engine, write=True) as conn:
        decision_log.head(conn, lock=True)  # serialise with every other appender before looking
        previous = latest_reviews(conn, {r.entry.person_id for r in requests})
        if not amend:
            for r in requests:
                done = previous.get(r.entry.id)
                if done is not None:
                    raise AlreadyReviewedError(_already(r, done, source))
        entries = []
        for r in requests:
            done = previous.get(r.entry.id)
            details = _details(r.entry)
            if done is not None:
                details["supersedes"] = done.id
            if source is not None:
                details |= {"imported_from": source.name, "line": r.line}
                if r.operator != vault.operator:
                    details["imported_by"] = vault.operator
            entries.append(
                decision_log.event(
                    "review",
                    r.entry.person_id,
                    operator=r.operator,
                    reason=r.reason,
                    details=details,
                    outcome=r.outcome,
                    threshold=r.entry.threshold,
                    model_id=r.entry.model_id,
                )
            )
        stored = decision_log.append(conn, entries)
    out = []
    for r, e in zip(requests, stored, strict=True):
        done = previous.get(r.entry.id)
        out.append(_review(e, done.decision if done is not None else None))
    return out


def _already(r: _Request, done: decision_log.Entry, source: Path | None) -> str:
    where = f"{source} line {r.line}: " if source is not None else ""
    by = f" by {done.operator}" if done.operator else ""
    return (
        f"{where}decision {r.entry.id} was already reviewed: {done.decision}{by} (review {done.id}); pass --amend "
        "to record a new outcome that supersedes it"
        + ("; nothing was imported" if source is not None else "")
    )


def _details(entry: decision_log.Entry) -> dict[str, Any]:
    """What the model said about the reviewed decision, kept in the review event."""
    own = entry.details or {}
    details: dict[str, Any] = {
        "decision_id": entry.id,
        "decision": entry.decision,
        "model_decision": own.get("model_decision") or entry.decision,
        "score": entry.score,
        "threshold": entry.threshold,
        "probability": entry.probability,
        "decided_at": entry.at.isoformat(),
        "kind": entry.kind,
    }
    for key in ("audit", "row", "item_id"):
        if own.get(key) is not None:
            details[key] = own[key]
    return details


def _review(entry: decision_log.Entry, superseded_outcome: str | None = None) -> Review:
    """A review event read back as a :class:`Review`."""
    d = entry.details or {}
    return Review(
        review_id=entry.id,
        decision_id=int(d["decision_id"]),
        person=entry.person_id,
        outcome=str(entry.decision),
        decision=str(d["decision"]),
        model_decision=str(d.get("model_decision") or d["decision"]),
        score=float(d["score"]),
        threshold=float(d["threshold"]),
        probability=float(d["probability"]),
        operator=entry.operator,
        reason=entry.reason,
        at=entry.at,
        decided_at=datetime.fromisoformat(d["decided_at"]) if d.get("decided_at") else None,
        audit=d.get("audit"),
        row=d.get("row"),
        item_id=d.get("item_id"),
        supersedes=d.get("supersedes"),
        superseded_outcome=superseded_outcome,
    )


# ---------------------------------------------------------------------------------------- queries

_COLUMNS = [Decision.c[f] for f in decision_log.Entry.__dataclass_fields__]


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def latest_reviews(conn: Connection, persons: Iterable[str]) -> dict[int, decision_log.Entry]:
    """Decision id -> its latest review event, over the reviews of ``persons`` (found by the indexed
    ``person_id``, so recording a review never scans the whole log)."""
    found: dict[int, decision_log.Entry] = {}
    for part in _chunks(sorted(set(persons))):
        stmt = (
            select(*_COLUMNS)
            .where(Decision.c.person_id.in_(part), Decision.c.kind == "review")
            .order_by(Decision.c.id)
        )
        for row in conn.execute(stmt):
            entry = decision_log.Entry(*row)
            found[int((entry.details or {})["decision_id"])] = entry
    return found


def _entries(conn: Connection, ids: Sequence[int]) -> dict[int, decision_log.Entry]:
    """The log entries with these ids (absent ids left out)."""
    found: dict[int, decision_log.Entry] = {}
    for part in _chunks(sorted(set(ids))):
        for row in conn.execute(select(*_COLUMNS).where(Decision.c.id.in_(part))):
            found[row.id] = decision_log.Entry(*row)
    return found


def iter_reviews(vault: Vault) -> Iterator[Review]:
    """Every review event in log order (superseded ones included)."""
    stmt = select(*_COLUMNS).where(Decision.c.kind == "review").order_by(Decision.c.id)
    with transaction(vault.engine) as conn:
        for row in conn.execution_options(yield_per=1000).execute(stmt):
            yield _review(decision_log.Entry(*row))


def audit_decision_ids(vault: Vault, audit_id: str, *, after: int, rows: int) -> np.ndarray:
    """int64 (rows,): the decision log id of each row of an audit (0 for a row that was not decided), found
    among the log entries after ``after`` (the log head when the audit started) by the audit id and row
    their details hold. What ``report.html`` shows a reviewer, so that the outcomes it exports name decisions."""
    import numpy as np

    ids = np.zeros(rows, dtype=np.int64)
    stmt = (
        select(Decision.c.id, Decision.c.details)
        .where(Decision.c.id > after, Decision.c.kind == "audit")
        .order_by(Decision.c.id)
    )
    with transaction(vault.engine) as conn:
        for entry_id, details in conn.execution_options(yield_per=1000).execute(stmt):
            if isinstance(details, dict) and details.get("audit") == audit_id:
                row = details.get("row")
                if isinstance(row, int) and 0 <= row < rows:
                    ids[row] = entry_id
    return ids


# ----------------------------------------------------------------------------------------- CSV import


def import_reviews(vault: Vault, path: Path, *, amend: bool = False) -> ImportResult:
    """Record every outcome of an outcomes CSV (as ``report.html`` exports it), all or nothing.

    The file: UTF-8 (a byte-order mark is allowed), a header naming ``decision_id`` and ``outcome``, optionally
    ``reason`` and ``reviewer``, no other column; one row per decision. An empty ``reason`` falls back to the
    global ``--reason``, an empty ``reviewer`` to the operator; the operator who imports is kept in the event's
    details when it differs from the reviewer.

    Raises:
        ReviewFileError: unreadable file, bad header or a bad row (file, line and value named); nothing is recorded.
        AlreadyReviewedError: a decision was already reviewed and ``amend`` is false; nothing is recorded.
    """
    path = Path(path)
    rows = list(_read_csv(path))
    if not rows:
        raise ReviewFileError(f"{path}: no outcomes in the file; export them from report.html first")
    seen: dict[int, int] = {}
    parsed: list[tuple[int, int, str, str | None, str | None]] = []
    for line, values in rows:
        decision_id = _cell_id(path, line, values.get("decision_id", ""))
        if decision_id in seen:
            raise ReviewFileError(
                f"{path} line {line}: decision {decision_id} is also on line {seen[decision_id]}; keep one outcome per "
                "decision (nothing was imported)"
            )
        seen[decision_id] = line
        try:
            outcome = outcome_value(values.get("outcome", ""))
            reason = _text("reason", values.get("reason"), REASON_MAX)
            reviewer = _text("reviewer", values.get("reviewer"), OPERATOR_MAX)
        except UsageError as exc:
            raise ReviewFileError(f"{path} line {line}: {exc} (nothing was imported)") from None
        parsed.append((line, decision_id, outcome, reason, reviewer))
    with transaction(vault.engine) as conn:
        entries = _entries(conn, [p[1] for p in parsed])
    requests = []
    for line, decision_id, outcome, reason, reviewer in parsed:
        entry = entries.get(decision_id)
        if entry is None:
            raise ReviewFileError(
                f"{path} line {line}: decision {decision_id} is not in the decision log; check the id, or the vault "
                "the report came from (nothing was imported)"
            )
        if entry.kind not in decision_log.DECISION_KINDS:
            raise ReviewFileError(
                f"{path} line {line}: log entry {decision_id} is an event ({entry.kind}), not a decision (nothing was "
                "imported)"
            )
        requests.append(_Request(entry, outcome, reason or vault.reason, reviewer or vault.operator, line))
    return ImportResult(path, _record(vault, requests, amend=amend, source=path))


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of each non-blank data row; the header checked first."""
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise ReviewFileError(f"{path}: {size} bytes is more than an outcomes file can be ({MAX_CSV_BYTES}); split it")
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise ReviewFileError(f"{path}: no such file; give the CSV exported from report.html") from None
    except IsADirectoryError:
        raise ReviewFileError(f"{path}: is a directory; give the CSV exported from report.html") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ReviewFileError(f"{path} line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise ReviewFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 1
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ReviewFileError(
                f"{path}: empty file; expected a header line naming {', '.join(CSV_COLUMNS)} (the last two optional)"
            )
        names = [h.strip().lower() for h in header]
        unknown = [h for h in names if h not in CSV_COLUMNS]
        missing = [c for c in REQUIRED_CSV_COLUMNS if c not in names]
        if unknown or missing or len(set(names)) != len(names):
            problem = (
                f"unknown column {unknown[0]!r}"
                if unknown
                else f"missing column {missing[0]!r}"
                if missing
                else "a column named twice"
            )
            raise ReviewFileError(
                f"{path} line 1: {problem}; the header names {', '.join(CSV_COLUMNS)} (reason and reviewer optional)"
            )
        while True:
            line = reader.line_num + 1  # where the row starts (a quoted field may span lines)
            values = next(reader, None)
            if values is None:
                break
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                raise ReviewFileError(
                    f"{path} line {line}: {len(values)} fields, the header has {len(names)}; quote a reason that "
                    "holds a comma (nothing was imported)"
                )
            yield line, dict(zip(names, values, strict=True))
    except csv.Error as exc:
        raise ReviewFileError(f"{path} line {line}: malformed CSV ({exc}) (nothing was imported)") from None


def _cell_id(path: Path, line: int, value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) < 1 or int(text) > 2**63 - 1:
        raise ReviewFileError(
            f"{path} line {line}: decision_id {value!r} is not a decision id (a whole number from 1); "
            "nothing was imported"
        )
    return int(text)


# ------------------------------------------------------------------------------------------- figures


@dataclass
class Band:
    """Reviewed decisions of one band and how the reviewers judged them."""

    band: str
    reviewed: int = 0
    genuine: int = 0
    forged: int = 0
    disagree: int | None = 0  # None for referred items: no verdict to disagree with
    probability_sum: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, review: Review, disagrees: bool | None) -> None:
        self.reviewed += 1
        self.genuine += review.outcome == "genuine"
        self.forged += review.outcome == "forged"
        self.probability_sum += review.probability
        if self.disagree is not None and disagrees is not None:
            self.disagree += disagrees

    def to_dict(self) -> dict[str, Any]:
        n = self.reviewed
        out: dict[str, Any] = {"band": self.band}
        if self.low is not None:
            out |= {"low": self.low, "high": self.high}
        return out | {
            "reviewed": n,
            "genuine": self.genuine,
            "forged": self.forged,
            "genuine_rate": self.genuine / n if n else None,
            "mean_probability": self.probability_sum / n if n else None,
            "disagree": self.disagree,
            "disagree_rate": self.disagree / n if n and self.disagree is not None else None,
        }


@dataclass
class ReviewStats:
    """How often the model and the reviewers disagree (:func:`review_stats`); ``to_dict()`` is what
    ``review stats --json`` prints and an audit's ``summary.json`` holds as ``reviews``."""

    since: str | None
    audit: str | None
    reviews: int = 0  # review events counted, superseded ones included
    by_decision: dict[str, Band] = field(
        default_factory=lambda: {d: Band(d, disagree=None if d == "refer" else 0) for d in DECISION_BANDS}
    )
    by_probability: list[Band] = field(
        default_factory=lambda: [
            Band(f"{lo:.1f}-{hi:.1f}", low=lo, high=hi) for lo, hi in itertools.pairwise(PROBABILITY_EDGES)
        ]
    )

    @property
    def reviewed(self) -> int:
        """Decisions reviewed (each counted once, by its latest review)."""
        return sum(b.reviewed for b in self.by_decision.values())

    @property
    def decided(self) -> Band:
        """Accepted and rejected items together: the model's verdicts a reviewer can disagree with."""
        both = Band("accept+reject")
        for name in ("accept", "reject"):
            b = self.by_decision[name]
            both.reviewed += b.reviewed
            both.genuine += b.genuine
            both.forged += b.forged
            both.probability_sum += b.probability_sum
            both.disagree = (both.disagree or 0) + (b.disagree or 0)
        return both

    def add(self, review: Review) -> None:
        band = self.by_decision.get(review.decision)
        if band is not None:
            band.add(review, review.agreement == "disagree" if review.decision != "refer" else None)
        leans_genuine = review.probability >= LEANS_GENUINE
        for b in self.by_probability:
            if review.probability < float(b.high or 0) or b is self.by_probability[-1]:
                b.add(review, leans_genuine != (review.outcome == "genuine"))
                break

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "audit": self.audit,
            "reviewed": self.reviewed,
            "reviews": self.reviews,
            "superseded": self.reviews - self.reviewed,
            "decided": self.decided.to_dict(),
            "by_decision": [self.by_decision[d].to_dict() for d in DECISION_BANDS],
            "by_probability": [b.to_dict() for b in self.by_probability],
        }


def parse_since(value: str) -> datetime:
    """A ``--since`` date (``YYYY-MM-DD``, midnight UTC) or ISO date and time (UTC unless it says otherwise).

    Raises:
        UsageError: not a date.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {value!r} is not a date; use YYYY-MM-DD (or an ISO date and time)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def audit_id_of(value: str) -> str:
    """An audit's id as given, or read from an audit's output folder (its ``.audit-state.json``).

    Raises:
        UsageError: a folder that holds no audit.
    """
    folder = Path(value)
    if not folder.is_dir():
        return value.strip()
    from sigvault.audit.files import STATE_FILE, AuditState

    state = folder / STATE_FILE
    if not state.exists():
        raise UsageError(f"{folder}: holds no audit ({STATE_FILE} is missing); give the audit's --out folder or its id")
    return AuditState.read(state).audit_id


def review_stats(vault: Vault, *, since: datetime | None = None, audit: str | None = None) -> ReviewStats:
    """Disagreement between the model and the reviewers over the reviewed decisions, each counted once by
    its latest review.

    Args:
        since: only decisions made at or after this time (whenever they were reviewed).
        audit: only the decisions of this audit (its id, ``summary.json``'s ``audit_id``).
    """
    stats = ReviewStats(since=since.isoformat() if since is not None else None, audit=audit)
    latest: dict[int, Review] = {}
    for review in iter_reviews(vault):
        if audit is not None and review.audit != audit:
            continue
        if since is not None and (review.decided_at is None or review.decided_at < since):
            continue
        stats.reviews += 1
        latest[review.decision_id] = review
    for review in latest.values():
        stats.add(review)
    return stats


def audit_review_figures(vault: Vault, audit_id: str) -> dict[str, Any] | None:
    """The figures of :func:`review_stats` for one audit's decisions, or None when none was reviewed
    (what an audit's ``summary.json`` holds as ``reviews``)."""
    stats = review_stats(vault, audit=audit_id)
    return stats.to_dict() if stats.reviews else None


def write_summary_figures(out_dir: Path, figures: dict[str, Any] | None) -> Path:
    """Put ``figures`` into ``out_dir/summary.json`` as ``reviews`` (atomically; the rest untouched).

    Raises:
        UsageError: the folder holds no ``summary.json`` (the audit never finished).
    """
    from sigvault.audit.files import SUMMARY_JSON
    from sigvault.durable import atomic_write

    path = Path(out_dir) / SUMMARY_JSON
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: missing; finish the audit first (`sigvault audit ... --resume`)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); rerun the audit with --resume to rewrite it") from None
    summary["reviews"] = figures
    atomic_write(path, (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode())
    return path
