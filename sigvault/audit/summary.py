"""What an audit adds up to: the progress reported after each chunk, the tally of decisions, the review
queue (every item not accepted, in the order a reviewer works, for the pages of ``report.html``), and the
summary ``summary.json`` holds.

The review queue's order is a choice, made for the reviewer: **referred items first** (the model could not
decide them: they are the reviewer's main work, and the item waits for a person either way), **then rejects**
(the model's decision stands unless a reviewer overturns it), **then errors** (rows that need a new scan or a
fixed manifest rather than a signature review). Within each group the lowest calibrated probability of a
genuine signature comes first (the likeliest forgery), then manifest order.
"""

from __future__ import annotations

import dataclasses
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sigvault import scoring
from sigvault.audit.files import REPORT_HTML, RESULTS_CSV, RESULTS_JSONL, SUMMARY_JSON

if TYPE_CHECKING:
    import numpy as np

#: The decisions an audit row can get: the model's, and "error" for a row that could not be decided.
DECISIONS = (*scoring.DECISIONS, "error")
REPORT_PAGE_SIZE = 2000  # items per page of the report (report.html, report-2.html, ...)
#: The review queue's order, the reviewer's first group first; accepted items are not queued.
REVIEW_ORDER = ("refer", "reject", "error")


@dataclass(frozen=True)
class AuditProgress:
    """Passed to the progress callback after each chunk is written."""

    done: int  # rows written, including those done before a resume
    total: int
    errors: int
    resumed: int  # rows that were already done when this run started
    # on a cluster (sigvault.audit.cluster): partitions written of all, workers connected, rows written per second
    partitions_done: int | None = None
    partitions: int | None = None
    workers: int | None = None
    rows_per_s: float | None = None


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
    report_items: int  # every item not accepted: all are in the report
    report_pages: int  # report.html, then report-2.html, ... (REPORT_PAGE_SIZE items each)
    first_started: str
    started: str
    finished: str
    # rows whose scan is captured at another resolution than the person's references (scoring.capture_mismatch)
    capture_mismatch: int = 0
    # reviewers' outcomes on this audit's decisions so far (sigvault.review.ReviewStats.to_dict()), None when
    # none was reviewed; recomputed whenever summary.json is written (`--resume` of a finished audit rewrites it)
    reviews: dict[str, Any] | None = None
    cluster: str | None = None  # the Dask cluster the audit ran on (--cluster), None on this machine alone
    # CPU seconds the cluster's workers spent deciding this run's partitions: rows / worker_cpu_s is the rate of
    # one core, what a cluster is sized with (docs/cluster.md)
    worker_cpu_s: float | None = None

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
    """Counts of decisions and error kinds, fed with every record in order."""

    counts: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    capture_mismatch: int = 0

    def add(self, record: dict[str, Any]) -> None:
        self.rows += 1
        decision = record["decision"]
        self.counts[decision] += 1
        self.capture_mismatch += record.get("capture_ratio") is not None
        if decision == "error":
            self.kinds[record["error_kind"]] += 1

    @property
    def needing_review(self) -> int:
        return sum(self.counts[d] for d in REVIEW_ORDER)


_GROUP = {d: i for i, d in enumerate((*REVIEW_ORDER, "accept"))}


def risk_key(record: dict[str, Any], index: int) -> tuple[int, float, int]:
    """The review order (see the module docstring): referred, rejects, errors; within each the lowest
    probability first, then row order."""
    p = record["probability"]
    return (_GROUP[record["decision"]], 0.0 if p is None else float(p), index)


def review_queue(results_jsonl: Path) -> np.ndarray:
    """int64 (n, 2): (row index, byte offset of its line in ``results.jsonl``) of every item not accepted,
    in review order.

    Read from the results file itself in one streaming pass, so the report of a resumed audit is that of an
    uninterrupted one. Memory: about 40 bytes per queued item (a 1,000,000-row audit that accepts nothing
    needs some 40 MB), never the records themselves.
    """
    import numpy as np

    groups, probs, rows, offsets = array("b"), array("d"), array("q"), array("q")
    offset = 0
    with open(results_jsonl, "rb") as fh:
        for index, line in enumerate(fh):
            record = json.loads(line)
            if record["decision"] != "accept":
                group, probability, _ = risk_key(record, index)
                groups.append(group)
                probs.append(probability)
                rows.append(index)
                offsets.append(offset)
            offset += len(line)
    g, pr, r, o = (np.frombuffer(a, dtype=a.typecode) for a in (groups, probs, rows, offsets))
    order = np.lexsort((r, pr, g))
    return np.stack([r[order], o[order]], axis=1).astype(np.int64).reshape(-1, 2)


def read_records(results_jsonl: Path, queue: np.ndarray) -> list[tuple[int, dict[str, Any]]]:
    """(row index, record) of the queued items (rows of :func:`review_queue`), read at their offsets."""
    out = []
    with open(results_jsonl, "rb") as fh:
        for index, offset in queue.tolist():
            fh.seek(offset)
            out.append((index, json.loads(fh.readline())))
    return out
