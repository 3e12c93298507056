"""What an audit adds up to: the progress reported after each chunk, the tally of decisions and the review
queue (the riskiest items, for ``report.html``), and the summary ``summary.json`` holds."""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigvault import scoring
from sigvault.audit.files import REPORT_HTML, RESULTS_CSV, RESULTS_JSONL, SUMMARY_JSON

#: The decisions an audit row can get: the model's, and "error" for a row that could not be decided.
DECISIONS = (*scoring.DECISIONS, "error")
REPORT_CAP = 2000  # items shown in report.html at most (the riskiest)
#: The review queue's order, riskiest group first; accepted items are not queued.
REVIEW_ORDER = ("reject", "refer", "error")


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
class Tally:
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


_GROUP = {d: i for i, d in enumerate((*REVIEW_ORDER, "accept"))}


def risk_key(record: dict[str, Any], index: int) -> tuple[float, float]:
    """Riskiest first: rejects, refers, errors; within each, the lowest probability first (then row order)."""
    p = record["probability"]
    return (_GROUP[record["decision"]], 0.0 if p is None else float(p))
