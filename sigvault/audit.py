"""Batch audits (``sigvault audit``): read a manifest, decide every item as ``verify`` does, write results.

A back office checks thousands of signed items a night. :func:`run_audit` takes a manifest (CSV or JSON
Lines: ``item_id``, ``person``, ``image``, optional ``amount``, any other columns carried through), and
writes into an output folder:

- ``results.jsonl`` and ``results.csv``: one line per item in manifest order, the input columns followed
  by the decision fields (the keys of ``verify --json``; see :data:`OUTPUT_FIELDS`);
- ``summary.json``: counts per decision and per error kind, refer rate, throughput, model, policy;
- ``report.html``: one self-contained page, the review queue riskiest first (:mod:`sigvault.report`).

How it works, and why:

1. **Validate first.** One streaming pass checks the header, the required columns, empty and duplicate
   item ids and the amounts, and reports the first problem with its line number (:class:`ManifestError`)
   before anything is decided. Duplicates are found with a set of ids (tens of MB for a million rows);
   the line of the first occurrence is looked up again only when a duplicate is found.
2. **Same decision as verify.** Rows go to :meth:`Vault.verify_many` (the code ``verify`` runs:
   embedding in batches, scoring, logging with kind ``"audit"``) in chunks of ``batch_size`` rows
   aligned on absolute row numbers, so a chunk always holds the same rows and is embedded as the same
   batch, whether or not the run was interrupted. Reading, hashing and preprocessing the images
   (:func:`sigvault.vault.prepare`, the same function verify uses) is the CPU-heavy part that needs
   neither the model nor the database: with ``workers`` >= 2 it runs in that many worker processes
   (a ``ProcessPoolExecutor``; threads would serialise on the GIL), a few chunks ahead, while the calling
   thread embeds, scores, logs and writes chunk after chunk, strictly in manifest order. With
   ``workers`` = 1 everything happens in the calling thread.
3. **Amount-aware policy** (optional TOML, :func:`load_policy`): bands of amount that add a margin to the
   threshold, widen the refer band, or accept only above a probability. The band's rule is handed to
   ``verify_many`` as the item's decision rule, so the decision log records the final decision the
   audit reports; the model's own decision is kept as ``model_decision`` (in the results and in the log
   entry's details).
4. **Crash-safe, resumable.** Each chunk is appended to ``results.jsonl`` then ``results.csv`` and
   fsynced. ``resume=True`` keeps the complete lines of ``results.jsonl`` (a torn last line is cut off),
   rebuilds ``results.csv`` from them, takes the rows that were logged but not yet written back from the
   decision log (recognised by the audit id in the entry's details) instead of deciding them again, and
   decides the rest. The result files and the report then equal those of an uninterrupted run byte for
   byte; times and throughput appear only in ``summary.json``.
5. **Bounded memory.** Rows are streamed; at most ``2 * workers + 1`` chunks are in flight; the review
   queue keeps only the :data:`REPORT_CAP` riskiest items.

The audit talks to the vault only through its methods (``verify_many``, ``log_head``, ``log_entries``,
``reference_images``); it never queries the database itself.

The library never prints: progress goes to the ``progress`` callback, problems are raised as
:class:`~sigvault.errors.SigvaultError`. A row that cannot be decided is not a failure of the run: it gets
``decision = "error"`` and the summary's ``exit_code`` is 1 so the CLI can say some rows failed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import heapq
import io
import json
import math
import multiprocessing
import os
import re
import sys
import tomllib
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

from sigvault import scoring
from sigvault.errors import (
    ImageError,
    ImageTooLargeError,
    InvalidPersonIdError,
    ManifestError,
    ModelMismatchError,
    NoInkError,
    NotEnoughReferencesError,
    PersonNotFoundError,
    SigvaultError,
    UsageError,
)

if TYPE_CHECKING:
    from sigvault.db.decision_log import Entry
    from sigvault.imaging import ImageLimits, PreprocessSpec
    from sigvault.vault import Prepared, Vault, Verification

REQUIRED_COLUMNS = ("item_id", "person", "image")
DECISIONS = ("accept", "reject", "refer", "error")
REPORT_CAP = 2000  # items shown in report.html at most (the riskiest)
STATE_FILE = ".audit-state.json"
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"

#: Decision fields of a result record, after the input columns (``results.jsonl``). The keys of
#: ``verify --json`` except ``person`` (the manifest's column is kept), ``decision_id`` (the log position
#: differs between an interrupted and an uninterrupted run; the log entry carries the item id instead).
OUTPUT_FIELDS = (
    "decision",
    "model_decision",
    "capture_ratio",
    "score",
    "probability",
    "threshold",
    "threshold_method",
    "model",
    "best_reference",
    "references",
    "image_sha256",
    "source",
    "policy",
    "error_kind",
    "error",
)
#: The same, flattened for ``results.csv``.
CSV_OUTPUT_FIELDS = (
    "decision",
    "model_decision",
    "capture_ratio",
    "score",
    "probability",
    "threshold",
    "threshold_method",
    "model",
    "best_reference_id",
    "best_reference_sha256",
    "best_similarity",
    "n_references",
    "image_sha256",
    "source",
    "policy_band",
    "policy_sha256",
    "error_kind",
    "error",
)

#: Error kinds, most specific class first (``summary.json`` counts rows per kind).
ERROR_KINDS: tuple[tuple[type[SigvaultError], str], ...] = (
    (NoInkError, "no_ink"),
    (ImageTooLargeError, "image_too_large"),
    (ImageError, "unreadable_image"),
    (InvalidPersonIdError, "invalid_person"),
    (PersonNotFoundError, "unknown_person"),
    (NotEnoughReferencesError, "too_few_references"),
    (ModelMismatchError, "model_mismatch"),
)


def error_kind(exc: SigvaultError) -> str:
    for cls, kind in ERROR_KINDS:
        if isinstance(exc, cls):
            return kind
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__.rstrip("_")).lower()


# ------------------------------------------------------------------------------------------ manifest


@dataclass(frozen=True)
class ManifestInfo:
    """What the validation pass learnt about a manifest."""

    path: Path
    format: Literal["csv", "jsonl"]
    columns: tuple[str, ...]  # input columns in order (CSV header; for JSON Lines, keys in first-seen order)
    rows: int
    sha256: str


@dataclass(frozen=True)
class Row:
    """One manifest row. ``index`` is its 0-based position among data rows, ``line`` its first line."""

    index: int
    line: int
    item_id: str
    person: str
    image: str
    amount: float | None
    values: dict[str, Any]  # the input columns, untouched


def _format_of(path: Path) -> Literal["csv", "jsonl"]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(path, "rb") as fh:  # sniff: JSON Lines start with an object
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "jsonl" if head.startswith(b"{") else "csv"


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line, {column: value}) per data row; blank lines are skipped."""
    name = path.name
    with open(path, "rb") as fh:
        reader = csv.reader(_text_lines(fh, name), strict=True)
        try:
            header = next(reader, None)
            while header is not None and not header:
                header = next(reader, None)
        except csv.Error as exc:
            raise ManifestError(f"{name} line {reader.line_num}: bad header ({exc})") from None
        if header is None:
            raise ManifestError(f"{name}: empty file; expected a header line naming {', '.join(REQUIRED_COLUMNS)}")
        header_line = reader.line_num
        _check_columns(name, header_line, header)
        previous = reader.line_num
        while True:
            try:
                fields_ = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ManifestError(f"{name} line {previous + 1}: malformed CSV ({exc})") from None
            line, previous = previous + 1, reader.line_num
            if not fields_:
                continue
            if len(fields_) != len(header):
                raise ManifestError(
                    f"{name} line {line}: {len(fields_)} fields, but the header on line {header_line} has {len(header)}"
                )
            yield line, dict(zip(header, fields_, strict=True))


def _check_columns(name: str, line: int, header: Sequence[str]) -> None:
    seen: set[str] = set()
    for position, column in enumerate(header, start=1):
        if column.strip() == "":
            raise ManifestError(f"{name} line {line}: column {position} of the header has no name")
        if column in seen:
            raise ManifestError(f"{name} line {line}: column {column!r} appears twice in the header")
        seen.add(column)
    for column in REQUIRED_COLUMNS:
        if column not in seen:
            raise ManifestError(
                f"{name} line {line}: missing column {column!r}; the header must name "
                f"{', '.join(REQUIRED_COLUMNS)} (got {', '.join(header)})"
            )
    _check_clash(name, line, header)


def _check_clash(name: str, line: int, columns: Sequence[str]) -> None:
    for column in columns:
        if column in OUTPUT_FIELDS or column in CSV_OUTPUT_FIELDS:
            raise ManifestError(
                f"{name} line {line}: column {column!r} clashes with an output field of the audit; rename it"
            )


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    name = path.name
    with open(path, "rb") as fh:
        for line, text in enumerate(_text_lines(fh, name), start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{name} line {line}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise ManifestError(f"{name} line {line}: expected a JSON object, got {type(record).__name__}")
            try:  # "\udcff" escapes decode to lone surrogates, which no output file can hold
                json.dumps(record, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ManifestError(
                    f"{name} line {line}: not valid Unicode text (lone surrogate "
                    f"{exc.object[exc.start : exc.end]!r}); fix the manifest"
                ) from None
            yield line, record


def _text_lines(fh: io.BufferedReader, name: str) -> Iterator[str]:
    """Decode a file line by line (UTF-8, an initial BOM dropped) so a bad byte is reported with its line."""
    for number, raw in enumerate(fh, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"{name} line {number}: not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line); "
                "save the manifest as UTF-8"
            ) from None
        yield text[1:] if number == 1 and text.startswith("\ufeff") else text


def _records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return _csv_records(path) if fmt == "csv" else _jsonl_records(path)


_AMOUNT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _parse_amount(name: str, line: int, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise ManifestError(f"{name} line {line}: amount {value!r} is not a number")
    if isinstance(value, int | float):
        amount = float(value)
    elif isinstance(value, str) and _AMOUNT.match(value.strip()):
        amount = float(value.strip())
    else:
        raise ManifestError(f"{name} line {line}: amount {value!r} is not a number (write e.g. 1250.00)")
    if not math.isfinite(amount):
        raise ManifestError(f"{name} line {line}: amount {value!r} is not a finite number")
    return amount


def _row(name: str, index: int, line: int, record: dict[str, Any], *, jsonl: bool) -> Row:
    """Check one record's required values (the structure, not whether it can be decided)."""
    if jsonl:
        for key in REQUIRED_COLUMNS:
            if key not in record:
                raise ManifestError(f"{name} line {line}: missing key {key!r}")
        _check_clash(name, line, list(record))
    item_id = record["item_id"]
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str):
        raise ManifestError(f"{name} line {line}: item_id must be a string, got {json.dumps(item_id)}")
    if item_id.strip() == "":
        raise ManifestError(f"{name} line {line}: empty item_id")
    for key in ("person", "image"):
        value = record[key]
        if value is not None and not isinstance(value, str):
            raise ManifestError(f"{name} line {line}: {key} must be a string, got {json.dumps(value)}")
    amount = _parse_amount(name, line, record.get("amount"))
    return Row(index, line, item_id, record["person"] or "", record["image"] or "", amount, record)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def validate_manifest(manifest: Path | str) -> ManifestInfo:
    """Check the whole manifest in one streaming pass, before any work starts.

    Raises:
        ManifestError: the first problem, with its line number, e.g.
            ``manifest.csv line 17: duplicate item_id 'A-12' (first on line 3)``.
    """
    path = Path(manifest)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file" if not path.exists() else f"{path}: is not a file")
    fmt = _format_of(path)
    name = path.name
    seen: set[str] = set()
    columns: dict[str, None] = {}
    rows = 0
    for line, record in _records(path, fmt):
        row = _row(name, rows, line, record, jsonl=fmt == "jsonl")
        if row.item_id in seen:
            first = next(r.line for r in _iter_rows(path, fmt) if r.item_id == row.item_id)
            raise ManifestError(f"{name} line {line}: duplicate item_id {row.item_id!r} (first on line {first})")
        seen.add(row.item_id)
        if fmt == "jsonl" or not columns:
            columns.update(dict.fromkeys(record))
        rows += 1
    if fmt == "csv" and not columns:  # a header and no rows
        with open(path, "rb") as fh:
            header = next((h for h in csv.reader(_text_lines(fh, name)) if h), [])
        columns.update(dict.fromkeys(header))
    return ManifestInfo(path, fmt, tuple(columns), rows, _sha256_file(path))


def _iter_rows(path: Path, fmt: str) -> Iterator[Row]:
    for index, (line, record) in enumerate(_records(path, fmt)):
        yield _row(path.name, index, line, record, jsonl=fmt == "jsonl")


def iter_rows(info: ManifestInfo) -> Iterator[Row]:
    """The rows of a validated manifest, streamed."""
    return _iter_rows(info.path, info.format)


# -------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Band:
    """A range of amounts and how strictly items in it are decided.

    ``max_amount`` is exclusive (None: no upper bound). ``threshold_margin`` is added to the person's
    threshold; ``refer_band`` widens the refer band around it (never narrower than the model's);
    ``min_accept_probability``: an accept below this calibrated probability becomes a refer.
    """

    name: str
    max_amount: float | None = None
    threshold_margin: float = 0.0
    refer_band: float | None = None
    min_accept_probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Policy:
    """An amount-aware decision policy, read from TOML (see :func:`load_policy`)."""

    name: str
    bands: tuple[Band, ...]
    missing_amount: str  # the band for rows without an amount
    path: str
    text: str
    sha256: str

    def band_for(self, amount: float | None) -> Band:
        if amount is None:
            return next(b for b in self.bands if b.name == self.missing_amount)
        for band in self.bands:
            if band.max_amount is None or amount < band.max_amount:
                return band
        raise AssertionError("the last band has no upper bound")  # checked by load_policy

    def decide(self, band: Band, score: float, threshold: float, probability: float, cfg: scoring.ScoringConfig) -> str:
        """The decision under ``band``: :func:`scoring.decide` with the band's threshold and refer band."""
        width = cfg.refer_band if band.refer_band is None else max(cfg.refer_band, band.refer_band)
        decision = scoring.decide(score, threshold + band.threshold_margin, dataclasses.replace(cfg, refer_band=width))
        if (
            decision == "accept"
            and band.min_accept_probability is not None
            and probability < band.min_accept_probability
        ):
            return "refer"
        return decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "missing_amount": self.missing_amount,
            "bands": [b.to_dict() for b in self.bands],
            "text": self.text,
        }


_BAND_KEYS = {f.name for f in dataclasses.fields(Band)}


def load_policy(path: Path | str) -> Policy:
    """Read a policy file. Example (amounts in the manifest's currency)::

        name = "cheques 2026"
        missing_amount = "large"       # band for rows without an amount (default: the last band)

        [[band]]                        # below 1,000: the model's own decision
        name = "small"
        max_amount = 1000

        [[band]]                        # 1,000 to 10,000: stricter threshold, wider refer band
        name = "medium"
        max_amount = 10000
        threshold_margin = 0.02
        refer_band = 0.05

        [[band]]                        # 10,000 and above: auto-accept only above 99 % confidence
        name = "large"
        threshold_margin = 0.04
        min_accept_probability = 0.99

    Bands are listed by increasing ``max_amount`` (exclusive); only the last has none and it covers every
    larger amount. A policy can only make decisions stricter (margins and widths are never negative).

    Raises:
        UsageError: the file is missing, not TOML, or breaks one of these rules (the message names it).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from None
    where = path.name
    try:
        text = data.decode("utf-8")
        doc = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{where}: not a valid TOML policy ({exc})") from None
    unknown = sorted(set(doc) - {"name", "missing_amount", "band"})
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed: name, missing_amount, [[band]]")
    raw_bands = doc.get("band")
    if not isinstance(raw_bands, list) or not raw_bands:
        raise UsageError(f"{where}: no [[band]] table; a policy needs at least one band")
    bands: list[Band] = []
    for i, raw in enumerate(raw_bands, start=1):
        label = f"{where}: band {i}"
        bad = sorted(set(raw) - _BAND_KEYS)
        if bad:
            raise UsageError(f"{label}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(_BAND_KEYS))}")
        name = raw.get("name", f"band {i}")
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"{label}: name must be a non-empty string")
        label = f"{where}: band {i} ({name!r})"
        values: dict[str, Any] = {"name": name}
        for key in ("max_amount", "threshold_margin", "refer_band", "min_accept_probability"):
            if key not in raw:
                continue
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise UsageError(f"{label}: {key} must be a number, got {value!r}")
            if key in ("threshold_margin", "refer_band") and value < 0:
                raise UsageError(f"{label}: {key} must be >= 0 (a policy can only make decisions stricter)")
            if key == "min_accept_probability" and not 0 <= value <= 1:
                raise UsageError(f"{label}: min_accept_probability must be between 0 and 1, got {value}")
            values[key] = float(value)
        bands.append(Band(**values))
    names = [b.name for b in bands]
    for i, band in enumerate(bands):
        if names.count(band.name) > 1:
            raise UsageError(f"{where}: two bands are named {band.name!r}")
        last = i == len(bands) - 1
        if band.max_amount is None and not last:
            raise UsageError(f"{where}: band {i + 1} ({band.name!r}) has no max_amount; only the last band may omit it")
        if last and band.max_amount is not None:
            raise UsageError(
                f"{where}: the last band ({band.name!r}) must have no max_amount, so that every amount falls in a band"
            )
        previous = bands[i - 1].max_amount if i else None
        if band.max_amount is not None and previous is not None and band.max_amount <= previous:
            raise UsageError(f"{where}: band {i + 1} ({band.name!r}): max_amount must be above the previous band's")
    missing = doc.get("missing_amount", bands[-1].name)
    if missing not in names:
        raise UsageError(f"{where}: missing_amount {missing!r} names no band (bands: {', '.join(names)})")
    title = doc.get("name", path.stem)
    if not isinstance(title, str):
        raise UsageError(f"{where}: name must be a string")
    return Policy(title, tuple(bands), missing, str(path), text, hashlib.sha256(data).hexdigest())


# ------------------------------------------------------------------------------------------- records


def _jsonable(x: float | None) -> float | None:
    return None if x is None else float(x)


def decided_record(row: Row, v: Verification, policy: Policy | None, cfg: scoring.ScoringConfig) -> dict[str, Any]:
    """The result record of a decided row: input columns, then :data:`OUTPUT_FIELDS`."""
    best = v.best_reference
    model_decision: str = v.model_decision if v.model_decision is not None else v.decision
    decision = model_decision
    applied = None
    if policy is not None:  # the same rule verify_many applied (recomputed: it is a pure function)
        band = policy.band_for(row.amount)
        decision = policy.decide(band, v.score, v.threshold, v.probability, cfg)
        if v.capture_ratio is not None:
            decision = scoring.capture_guard(decision, v.score, v.threshold, v.capture_ratio, cfg)
        applied = _policy_field(policy, band, v.threshold)
    return {
        **row.values,
        "decision": decision,
        "model_decision": model_decision,
        "capture_ratio": v.capture_ratio,
        "score": v.score,
        "probability": v.probability,
        "threshold": v.threshold,
        "threshold_method": v.threshold_method,
        "model": v.model,
        "best_reference": {"reference_id": best.reference_id, "sha256": best.sha256, "similarity": best.similarity},
        "references": [
            {"reference_id": r.reference_id, "sha256": r.sha256, "similarity": r.similarity} for r in v.references
        ],
        "image_sha256": v.image_sha256,
        "source": v.source,
        "policy": applied,
        "error_kind": None,
        "error": None,
    }


def error_record(row: Row, source: str, kind: str, message: str, model: str, policy: Policy | None) -> dict[str, Any]:
    applied = _policy_field(policy, policy.band_for(row.amount), None) if policy is not None else None
    return {
        **row.values,
        "decision": "error",
        "model_decision": None,
        "capture_ratio": None,
        "score": None,
        "probability": None,
        "threshold": None,
        "threshold_method": None,
        "model": model,
        "best_reference": None,
        "references": [],
        "image_sha256": None,
        "source": source,
        "policy": applied,
        "error_kind": kind,
        "error": message,
    }


def _policy_field(policy: Policy, band: Band, threshold: float | None) -> dict[str, Any]:
    return {
        "sha256": policy.sha256,
        "band": band.name,
        "threshold_margin": band.threshold_margin,
        "refer_band": band.refer_band,
        "min_accept_probability": band.min_accept_probability,
        "effective_threshold": None if threshold is None else threshold + band.threshold_margin,
    }


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def csv_row(record: dict[str, Any], columns: Sequence[str]) -> list[str]:
    """A record (as read back from ``results.jsonl``) flattened to the CSV columns."""
    best = record["best_reference"] or {}
    policy = record["policy"] or {}
    flat = {
        **{k: record[k] for k in CSV_OUTPUT_FIELDS if k in record},
        "best_reference_id": best.get("reference_id"),
        "best_reference_sha256": best.get("sha256"),
        "best_similarity": best.get("similarity"),
        "n_references": len(record["references"]),
        "policy_band": policy.get("band"),
        "policy_sha256": policy.get("sha256"),
    }
    return [_csv_value(record.get(c)) for c in columns] + [_csv_value(flat.get(c)) for c in CSV_OUTPUT_FIELDS]


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


# -------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class AuditProgress:
    """Passed to the progress callback after each chunk is written."""

    done: int  # rows written, including those done before a resume
    total: int
    errors: int
    resumed: int  # rows that were already done when this run started


@dataclass(frozen=True)
class AuditSummary:
    """The outcome of :func:`run_audit`; ``to_dict()`` is what ``summary.json`` holds."""

    out_dir: Path
    manifest: Path
    manifest_sha256: str
    audit_id: str
    rows: int
    counts: dict[str, int]
    error_kinds: dict[str, int]
    refer_rate: float
    review_rate: float
    decided_this_run: int
    resumed_rows: int
    recovered_from_log: int
    elapsed_s: float
    decide_s: float
    items_per_s: float
    workers: int
    batch_size: int
    model: str
    policy: dict[str, Any] | None
    report_items: int
    report_truncated: bool
    first_started: str
    started: str
    finished: str
    # rows whose scan is captured at another resolution than the person's references (scoring.capture_mismatch)
    capture_mismatch: int = 0

    @property
    def failed_rows(self) -> int:
        return self.counts["error"]

    @property
    def exit_code(self) -> int:
        """0 when every row was decided, 1 when some rows got ``decision = "error"``."""
        return 1 if self.failed_rows else 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["manifest"] = str(self.manifest)
        out["failed_rows"] = self.failed_rows
        out["exit_code"] = self.exit_code
        out["outputs"] = [RESULTS_JSONL, RESULTS_CSV, SUMMARY_JSON, REPORT_HTML]
        return out


@dataclass
class _Tally:
    """Counts and the review queue (the ``cap`` riskiest items), fed with every record in order."""

    cap: int
    counts: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    heap: list[tuple[float, float, int, dict[str, Any]]] = field(default_factory=list)
    rows: int = 0
    capture_mismatch: int = 0

    def add(self, index: int, record: dict[str, Any]) -> None:
        self.rows += 1
        decision = record["decision"]
        self.counts[decision] += 1
        self.capture_mismatch += record.get("capture_ratio") is not None
        if decision == "error":
            self.kinds[record["error_kind"]] += 1
        if decision == "accept" or self.cap <= 0:
            return
        key = risk_key(record, index)
        entry = (-key[0], -key[1], -index, record)  # max-heap on risk key: the root is the least risky kept
        if len(self.heap) < self.cap:
            heapq.heappush(self.heap, entry)
        elif entry[:3] > self.heap[0][:3]:
            heapq.heapreplace(self.heap, entry)

    def queue(self) -> list[tuple[int, dict[str, Any]]]:
        """(row index, record) of the kept items, riskiest first."""
        return [(-e[2], e[3]) for e in sorted(self.heap, key=lambda e: (-e[0], -e[1], -e[2]))]


_GROUP = {"reject": 0, "refer": 1, "error": 2, "accept": 3}


def risk_key(record: dict[str, Any], index: int) -> tuple[float, float]:
    """Riskiest first: rejects, refers, errors; within each, the lowest probability first (then row order)."""
    p = record["probability"]
    return (_GROUP[record["decision"]], 0.0 if p is None else float(p))


# ---------------------------------------------------------------------------------------------- files


def _fsync_append(fh: io.BufferedWriter, data: bytes) -> None:
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _csv_text(rows: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _csv_header(columns: Sequence[str]) -> bytes:
    return _csv_text([[*columns, *CSV_OUTPUT_FIELDS]])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _State:
    """``.audit-state.json``: what a resumed run must agree with."""

    audit_id: str
    manifest: str
    manifest_sha256: str
    policy_sha256: str | None
    model: str
    batch_size: int
    log_after: int  # decision log head when the audit started; its entries come after
    columns: list[str]
    first_started: str

    @classmethod
    def read(cls, path: Path) -> _State:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(
                f"{path}: unreadable audit state ({exc}); start the audit again in an empty --out"
            ) from None


# ------------------------------------------------------------------------------------------- the audit


ProgressCallback = Callable[[AuditProgress], None]


@dataclass(frozen=True)
class _Chunk:
    start: int
    rows: list[Row]
    recovered: dict[int, Entry]  # row index -> decision log entry (resume only)


def run_audit(
    vault: Vault,
    manifest: Path,
    out_dir: Path,
    *,
    workers: int = 1,
    batch_size: int = 32,
    policy: Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    report_cap: int = REPORT_CAP,
) -> AuditSummary:
    """Decide every item of ``manifest`` as ``verify`` would and write the results into ``out_dir``.

    Args:
        vault: an open vault; decisions are logged in its decision log with kind ``"audit"``.
        manifest: CSV or JSON Lines (chosen by suffix ``.csv`` / ``.jsonl``, else sniffed).
        out_dir: created if needed; must hold no other audit unless ``resume``.
        workers: processes that read and preprocess images ahead of the embedding (1: none, all in the
            calling thread; 2 suits a 2-core machine).
        batch_size: rows per chunk: one embedding batch and one transaction. A resumed audit keeps the
            batch size it started with (so its chunks, and hence its numbers, stay the same).
        policy: an amount-aware policy file (:func:`load_policy`).
        resume: finish an interrupted audit in ``out_dir`` (nothing to resume: start afresh).
        progress: called after each written chunk, in the calling thread.
        report_cap: items shown in ``report.html`` at most.

    Returns:
        The summary; ``summary.exit_code`` is 1 when some rows could not be decided.

    Raises:
        ManifestError: the manifest is malformed (before anything is decided).
        UsageError: bad arguments or policy, ``out_dir`` holds another audit, or a resume that does
            not match how the audit started (manifest, policy or model changed).
        SigvaultError: the database failed; the outputs stay resumable.
    """
    t0 = perf_counter()
    started = _now()
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    manifest = Path(manifest).absolute()
    out_dir = Path(out_dir)
    info = validate_manifest(manifest)
    pol = load_policy(policy) if policy is not None else None
    model_id = vault.model_id  # loads the model now, before any thread needs it
    cfg = vault.embedder.scoring

    out_dir.mkdir(parents=True, exist_ok=True)
    from sigvault.index import file_lock

    with file_lock(out_dir / ".audit"):
        state, done_rows, tally, recovered = _prepare_outputs(
            vault, info, out_dir, pol, model_id, batch_size, resume, report_cap, started
        )
        batch_size = state.batch_size
        columns = state.columns
        t_decide = perf_counter()
        decided = _decide_all(
            vault,
            info,
            out_dir,
            state,
            pol,
            cfg,
            model_id,
            columns,
            done_rows,
            recovered,
            tally,
            workers,
            batch_size,
            progress,
        )
        decide_s = perf_counter() - t_decide

        from sigvault import report

        queue = tally.queue()
        needing_review = tally.counts["reject"] + tally.counts["refer"] + tally.counts["error"]
        summary_head = {
            "manifest": info.path.name,
            "rows": info.rows,
            "counts": {d: tally.counts[d] for d in DECISIONS},
            "error_kinds": dict(sorted(tally.kinds.items())),
            "model": model_id,
            "policy": None
            if pol is None
            else {"name": pol.name, "sha256": pol.sha256, "bands": [b.to_dict() for b in pol.bands]},
            "needing_review": needing_review,
            "capture_mismatch": tally.capture_mismatch,
            "cap": report_cap,
            "refer_band": cfg.refer_band,
        }
        html = report.render_report(summary_head, queue, reference_images=vault.reference_images, limits=vault.limits)
        _atomic_write(out_dir / REPORT_HTML, html.encode("utf-8"))

        rows = info.rows
        summary = AuditSummary(
            out_dir=out_dir,
            manifest=info.path,
            manifest_sha256=info.sha256,
            audit_id=state.audit_id,
            rows=rows,
            counts={d: tally.counts[d] for d in DECISIONS},
            error_kinds=dict(sorted(tally.kinds.items())),
            refer_rate=tally.counts["refer"] / rows if rows else 0.0,
            review_rate=needing_review / rows if rows else 0.0,
            decided_this_run=decided[1],
            resumed_rows=done_rows,
            recovered_from_log=decided[2],
            elapsed_s=round(perf_counter() - t0, 3),
            decide_s=round(decide_s, 3),
            items_per_s=round(decided[0] / decide_s, 2)
            if decide_s > 0 and decided[0]
            else 0.0,  # rows written per second
            workers=workers,
            batch_size=batch_size,
            model=model_id,
            policy=pol.to_dict() if pol is not None else None,
            report_items=len(queue),
            report_truncated=needing_review > len(queue),
            first_started=state.first_started,
            started=started,
            finished=_now(),
            capture_mismatch=tally.capture_mismatch,
        )
        _atomic_write(
            out_dir / SUMMARY_JSON, (json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()
        )
    return summary


def _prepare_outputs(
    vault: Vault,
    info: ManifestInfo,
    out_dir: Path,
    pol: Policy | None,
    model_id: str,
    batch_size: int,
    resume: bool,
    report_cap: int,
    started: str,
) -> tuple[_State, int, _Tally, dict[int, Entry]]:
    """Start fresh output files, or check and repair those of an interrupted audit.

    Returns (state, rows already written, tally of those rows, logged-but-unwritten entries by row index).
    """
    state_path = out_dir / STATE_FILE
    jsonl_path, csv_path = out_dir / RESULTS_JSONL, out_dir / RESULTS_CSV
    tally = _Tally(report_cap)
    if not resume or not state_path.exists():
        existing = [p.name for p in (state_path, jsonl_path, csv_path) if p.exists()]
        if existing:
            raise UsageError(
                f"{out_dir} already holds an audit ({existing[0]}); pass --resume to finish it, or choose another --out"
            )
        log_after = vault.log_head()
        state = _State(
            audit_id=uuid.uuid4().hex,
            manifest=str(info.path),
            manifest_sha256=info.sha256,
            policy_sha256=pol.sha256 if pol else None,
            model=model_id,
            batch_size=batch_size,
            log_after=log_after,
            columns=list(info.columns),
            first_started=started,
        )
        # the state first: a kill before the result files exist leaves a folder `--resume` can finish
        # (a resume recreates missing result files)
        _atomic_write(state_path, json.dumps(dataclasses.asdict(state), indent=2).encode())
        _atomic_write(jsonl_path, b"")
        _atomic_write(csv_path, _csv_header(state.columns))
        return state, 0, tally, {}

    state = _State.read(state_path)
    mismatch = [
        (what, was, now)
        for what, was, now in (
            ("manifest", state.manifest_sha256, info.sha256),
            ("policy", state.policy_sha256, pol.sha256 if pol else None),
            ("model", state.model, model_id),
        )
        if was != now
    ]
    if mismatch:
        what, was, now = mismatch[0]
        raise UsageError(
            f"cannot resume the audit in {out_dir}: the {what} changed since it started ({was} -> {now}); "
            f"resume with the same {what}, or start again in another --out"
        )
    # Keep the complete, consistent lines of results.jsonl; rebuild results.csv from them.
    if not jsonl_path.exists():
        _atomic_write(jsonl_path, b"")
    rows = iter_rows(info)
    done = 0
    keep = 0
    csv_tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(jsonl_path, "rb") as src, open(csv_tmp, "wb") as dst:
        dst.write(_csv_header(state.columns))
        for raw in src:
            if not raw.endswith(b"\n"):
                break  # torn last line
            try:
                record = json.loads(raw)
            except ValueError:
                break
            row = next(rows, None)
            if row is None or not isinstance(record, dict) or str(record.get("item_id")) != row.item_id:
                raise UsageError(
                    f"{jsonl_path} line {done + 1} does not match row {done + 1} of {info.path.name}; "
                    "start the audit again in an empty --out"
                )
            tally.add(done, record)
            dst.write(_csv_text([csv_row(record, state.columns)]))
            done += 1
            keep += len(raw)
        dst.flush()
        os.fsync(dst.fileno())
    with open(jsonl_path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(csv_tmp, csv_path)
    recovered = _logged_rows(vault, state, done)
    return state, done, tally, recovered


def _logged_rows(vault: Vault, state: _State, done: int) -> dict[int, Entry]:
    """Decision log entries of this audit for rows at or after ``done`` (decided but not yet written)."""
    found: dict[int, Entry] = {}
    for entry in vault.log_entries(after=state.log_after):
        details = entry.details or {}
        if entry.kind == "audit" and details.get("audit") == state.audit_id and details.get("row", -1) >= done:
            found[int(details["row"])] = entry
    return found


def _image_path(info: ManifestInfo, image: str) -> str:
    path = Path(image)
    return str(path if path.is_absolute() else info.path.parent / path)


def prepare_many(
    jobs: Sequence[tuple[str, str]], spec: PreprocessSpec, limits: ImageLimits
) -> list[Prepared | SigvaultError]:
    """:func:`sigvault.vault.prepare` for each (path, name), an error in place of a failure. Module-level
    and free of the vault, so that a worker process can run it."""
    from sigvault.vault import prepare

    out: list[Prepared | SigvaultError] = []
    for source, name in jobs:
        try:
            out.append(prepare(source, name, spec, limits))
        except SigvaultError as exc:
            out.append(exc)
    return out


def _to_prepare(info: ManifestInfo, chunk: _Chunk) -> list[tuple[str, str]]:
    """(path, name) of the rows of a chunk whose image must be read (not recovered, not blank)."""
    return [
        (_image_path(info, row.image), _image_path(info, row.image))
        for row in chunk.rows
        if row.index not in chunk.recovered and row.image.strip()
    ]


def _policy_rule(policy: Policy, band: Band, cfg: scoring.ScoringConfig) -> Callable[[float, float, float], str]:
    def rule(score: float, threshold: float, probability: float) -> str:
        return policy.decide(band, score, threshold, probability, cfg)

    return rule


def _worker_init(parent: int) -> None:
    """Runs in each worker: exit as soon as the parent is gone (after a SIGKILL it cannot say so)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="sigvault-parent-watch", daemon=True).start()


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for :func:`prepare_many`.

    Linux: ``fork``. The workers only run Pillow and numpy on the arguments they are sent (never the
    model, the database or the index), and fork needs no ``if __name__ == "__main__"`` guard in the
    caller's script: with ``spawn`` an unguarded script is re-executed by every worker (which here would
    start the audit again and wait forever on its lock). Elsewhere (macOS, Windows): ``spawn``.
    """
    import warnings

    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork in a threaded process; see above
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )
        if method == "fork":
            pool.submit(int).result()  # start the workers now, inside the filter
    return pool


def _decide_chunk(
    vault: Vault,
    info: ManifestInfo,
    state: _State,
    chunk: _Chunk,
    prepared: list[Prepared | SigvaultError] | None,
    pol: Policy | None,
    cfg: scoring.ScoringConfig,
    model_id: str,
    batch_size: int,
) -> tuple[list[dict[str, Any]], int, int]:
    """Decide one chunk. ``prepared``: the outcome of :func:`prepare_many` for :func:`_to_prepare`'s rows
    (None: read them here). Returns (records in row order, rows decided, rows recovered)."""
    from sigvault.vault import Verification, VerifyItem

    records: list[dict[str, Any] | None] = [None] * len(chunk.rows)
    todo: list[tuple[int, Row, str]] = []
    recovered = 0
    for i, row in enumerate(chunk.rows):
        source = _image_path(info, row.image) if row.image.strip() else ""
        entry = chunk.recovered.get(row.index)
        if entry is not None:
            records[i] = decided_record(row, Verification.from_entry(entry, source), pol, cfg)
            recovered += 1
        elif not row.image.strip():
            records[i] = error_record(
                row, "", "missing_image", f"{info.path.name} line {row.line}: no image given", model_id, pol
            )
        else:
            todo.append((i, row, source))
    if prepared is not None and len(prepared) != len(todo):
        raise AssertionError("prepared items do not match the chunk")  # pragma: no cover
    items = []
    for k, (_, row, source) in enumerate(todo):
        details: dict[str, Any] = {"audit": state.audit_id, "row": row.index, "line": row.line, "item_id": row.item_id}
        rule = None
        if pol is not None:
            band = pol.band_for(row.amount)
            details["policy"] = _policy_field(pol, band, None) | {"name": pol.name}
            rule = _policy_rule(pol, band, cfg)
        items.append(
            VerifyItem(
                row.person,
                Path(source),
                name=source,
                details=details,
                prepared=prepared[k] if prepared is not None else None,
                decide=rule,
            )
        )
    results = vault.verify_many(items, kind="audit", batch_size=batch_size) if items else []
    for (i, row, source), result in zip(todo, results, strict=True):
        if isinstance(result, SigvaultError):
            records[i] = error_record(row, source, error_kind(result), str(result), model_id, pol)
        else:
            records[i] = decided_record(row, result, pol, cfg)
    decided = sum(1 for r in results if not isinstance(r, SigvaultError))
    return records, decided, recovered  # type: ignore[return-value]


def _chunks(rows: Iterator[Row], start: int, batch_size: int, recovered: dict[int, Entry]) -> Iterator[_Chunk]:
    """Chunks aligned on multiples of ``batch_size`` (the first may be shorter when resuming)."""
    current: list[Row] = []
    for row in rows:
        if row.index < start:
            continue
        current.append(row)
        if (row.index + 1) % batch_size == 0:
            yield _Chunk(
                current[0].index, current, {r.index: recovered[r.index] for r in current if r.index in recovered}
            )
            current = []
    if current:
        yield _Chunk(current[0].index, current, {r.index: recovered[r.index] for r in current if r.index in recovered})


def _decide_all(
    vault: Vault,
    info: ManifestInfo,
    out_dir: Path,
    state: _State,
    pol: Policy | None,
    cfg: scoring.ScoringConfig,
    model_id: str,
    columns: Sequence[str],
    done: int,
    recovered: dict[int, Entry],
    tally: _Tally,
    workers: int,
    batch_size: int,
    progress: ProgressCallback | None,
) -> tuple[int, int, int]:
    """Decide the rows from ``done`` on, writing each chunk in order.

    Returns (rows written, rows decided by the model, rows recovered from the decision log)."""
    resumed = done
    decided_total = recovered_total = 0
    if progress is not None:
        progress(AuditProgress(done, info.rows, tally.counts["error"], resumed))
    if done >= info.rows:
        return 0, 0, 0
    pending: deque[tuple[_Chunk, Future[list[Prepared | SigvaultError]] | None]] = deque()
    spec, limits = vault.embedder.spec, vault.limits
    pool = _process_pool(workers) if workers > 1 else None
    with open(out_dir / RESULTS_JSONL, "ab") as jsonl, open(out_dir / RESULTS_CSV, "ab") as csvf:

        def decide_and_write(chunk: _Chunk, future: Future[list[Prepared | SigvaultError]] | None) -> None:
            nonlocal done, decided_total, recovered_total
            prepared = future.result() if future is not None else None
            records, decided, rec = _decide_chunk(vault, info, state, chunk, prepared, pol, cfg, model_id, batch_size)
            lines = [_json_line(r) for r in records]
            _fsync_append(jsonl, "".join(lines).encode("utf-8"))
            # The CSV is made from the JSON text, exactly as a resume rebuilds it.
            _fsync_append(csvf, _csv_text([csv_row(json.loads(line), columns) for line in lines]))
            for offset, record in enumerate(records):
                tally.add(chunk.start + offset, record)
            done += len(records)
            decided_total += decided
            recovered_total += rec
            if progress is not None:
                progress(AuditProgress(done, info.rows, tally.counts["error"], resumed))

        try:
            for chunk in _chunks(iter_rows(info), done, batch_size, recovered):
                jobs = _to_prepare(info, chunk)
                future = pool.submit(prepare_many, jobs, spec, limits) if pool is not None and jobs else None
                pending.append((chunk, future))
                # keep the workers a few chunks ahead of the embedding; decide in manifest order
                while len(pending) > (2 * workers + 1 if pool is not None else 0):
                    decide_and_write(*pending.popleft())
            while pending:
                decide_and_write(*pending.popleft())
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    return done - resumed, decided_total, recovered_total
