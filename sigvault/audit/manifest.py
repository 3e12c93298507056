"""The audit's manifest: read a CSV or JSON Lines file, validate it in one streaming pass, stream its rows.

One pass checks the header, the required columns, empty and duplicate item ids and the amounts, and reports
the first problem with its line number (:class:`~sigvault.errors.ManifestError`) before anything is decided.
Duplicates are found with a set of ids (tens of MB for a million rows); the line of the first occurrence is
looked up again only when a duplicate is found.

An optional ``page`` column chooses the page of a multi-page TIFF (from 1; empty: the image has one page), as
``verify --page N`` does. Optional ``region`` (``X,Y,W,H`` in pixels or percentages, as ``verify --region``) and
``layout`` (a layout's name in the audit's layouts file, as ``verify --layout``) columns say where the signature
is on a whole cheque or form; a row gives one or the other, or neither (the image is a signature box, or
``audit --locate`` finds the signature on it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sigvault.audit.records import CSV_OUTPUT_FIELDS, OUTPUT_FIELDS
from sigvault.errors import ManifestError

REQUIRED_COLUMNS = ("item_id", "person", "image")


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
    page: int | None = None  # the optional ``page`` column: the page of a multi-page TIFF, from 1
    region: str | None = None  # the optional ``region`` column: the signature's zone on a whole document
    layout: str | None = None  # the optional ``layout`` column: a layout naming that zone


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


def _parse_page(name: str, line: int, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    page = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise ManifestError(f"{name} line {line}: page {value!r} is not a page number; write 1 for the first page")
    return page


def _parse_zone(name: str, line: int, region: Any, layout: Any) -> tuple[str | None, str | None]:
    """The ``region`` and ``layout`` values of a row (empty: None), checked for form: a region that
    :func:`sigvault.documents.parse_region` cannot read, or both given, is the manifest's fault. Whether the region
    lies inside the image, or the layout exists, is known only when the row is decided (an error row then)."""
    from sigvault.documents import parse_region
    from sigvault.errors import UsageError

    values = []
    for key, value in (("region", region), ("layout", layout)):
        if value is not None and not isinstance(value, str):
            raise ManifestError(f"{name} line {line}: {key} must be a string, got {json.dumps(value)}")
        values.append(value.strip() if value is not None and value.strip() else None)
    region, layout = values
    if region is not None and layout is not None:
        raise ManifestError(f"{name} line {line}: give a region or a layout, not both (region {region!r}, layout {layout!r})")
    if region is not None:
        try:
            parse_region(region, 10**6, 10**6, what="region")  # the form only: the image's size is not known yet
        except UsageError as exc:
            raise ManifestError(f"{name} line {line}: {exc}") from None
    return region, layout


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
    page = _parse_page(name, line, record.get("page"))
    region, layout = _parse_zone(name, line, record.get("region"), record.get("layout"))
    return Row(index, line, item_id, record["person"] or "", record["image"] or "", amount, record, page, region, layout)


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


def image_path(info: ManifestInfo, image: str) -> str:
    """A row's image path: a URL (``s3://...``, read through fsspec) or an absolute path as given, or a path
    relative to the manifest's folder."""
    from sigvault.imaging import is_url

    if is_url(image):
        return image
    path = Path(image)
    return str(path if path.is_absolute() else info.path.parent / path)
