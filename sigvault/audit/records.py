"""The audit's result records: one dict per manifest row, written as a line of ``results.jsonl`` and flattened
to a line of ``results.csv``.

A record holds the row's input columns, untouched, followed by the decision fields (:data:`OUTPUT_FIELDS`,
the keys of ``verify --json``). The CSV line is always made from the JSON text, so a resumed audit that
rebuilds ``results.csv`` from ``results.jsonl`` writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sigvault import scoring
from sigvault.audit.policy import policy_field
from sigvault.errors import (
    ImageError,
    ImageTooLargeError,
    InvalidPersonIdError,
    ModelMismatchError,
    NoInkError,
    NotEnoughReferencesError,
    PersonNotFoundError,
    SigvaultError,
)

if TYPE_CHECKING:
    from sigvault.audit.manifest import Row
    from sigvault.audit.policy import Policy
    from sigvault.results import Verification

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
    "zone",  # the zone of a whole document compared (the row's region or layout, or located), else None
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
    "zone",  # X,Y,W,H in the image's pixels
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
        applied = policy_field(policy, band, v.threshold)
    if v.referred is not None:  # too few references or an implausible threshold: as verify_many logged it
        decision = "refer"
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
        "zone": v.region,
        "policy": applied,
        "error_kind": None,
        "error": None,
    }


def error_record(row: Row, source: str, kind: str, message: str, model: str, policy: Policy | None) -> dict[str, Any]:
    applied = policy_field(policy, policy.band_for(row.amount), None) if policy is not None else None
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
        "zone": None,
        "policy": applied,
        "error_kind": kind,
        "error": message,
    }



def csv_value(value: Any) -> str:
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
        "zone": ",".join(str(record["zone"][k]) for k in "xywh") if record.get("zone") else None,
    }
    return [csv_value(record.get(c)) for c in columns] + [csv_value(flat.get(c)) for c in CSV_OUTPUT_FIELDS]


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def csv_text(rows: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def csv_header(columns: Sequence[str]) -> bytes:
    return csv_text([[*columns, *CSV_OUTPUT_FIELDS]])

