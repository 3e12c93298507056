"""Batch audits (``sigvault audit``): read a manifest, decide every item as ``verify`` does, write results.

A back office checks thousands of signed items a night. :func:`run_audit` takes a manifest (CSV or JSON
Lines: ``item_id``, ``person``, ``image``, optional ``amount``, any other columns carried through), and
writes into an output folder:

- ``results.jsonl`` and ``results.csv``: one line per item in manifest order, the input columns followed
  by the decision fields (the keys of ``verify --json``; see :data:`OUTPUT_FIELDS`);
- ``summary.json``: counts per decision and per error kind, refer rate, throughput, model, policy;
- ``report.html`` (and ``report-2.html``, ... for a long queue): self-contained pages of the review queue,
  every item not accepted, referred first, then rejects, then errors (:mod:`sigvault.report`).

The package, one job per module (imports point down the list):

- :mod:`~sigvault.audit.cluster`: :func:`run_cluster_audit`, the same audit on a Dask cluster (``--cluster``),
  whose workers run :mod:`~sigvault.audit.cluster_worker` (Dask is imported only there);
- :mod:`~sigvault.audit.run`: :func:`run_audit`, chunking and the worker processes that read images ahead;
- :mod:`~sigvault.audit.files`: the output folder, crash-safe and resumable (``--resume``);
- :mod:`~sigvault.audit.summary`: progress, the tally, the review queue and its order, ``summary.json``;
- :mod:`~sigvault.audit.manifest`: validate the manifest in one streaming pass, then stream its rows;
- :mod:`~sigvault.audit.records`: a row's result record and its CSV form;
- :mod:`~sigvault.audit.policy`: amount-aware policies (optional TOML, :func:`load_policy`).

How it works, and why:

1. **Validate first.** The whole manifest is checked before anything is decided; the first problem is
   reported with its line number (:class:`~sigvault.errors.ManifestError`).
2. **Same decision as verify.** Rows go to :meth:`Vault.verify_many` in chunks of ``batch_size`` rows
   aligned on absolute row numbers; images are read and preprocessed by :func:`sigvault.vault.prepare`
   (in ``workers`` processes when ``workers`` >= 2), the calling thread decides and writes in order.
3. **Amount-aware policy.** A band's rule is handed to ``verify_many`` as the item's decision rule, so the
   decision log records the final decision the audit reports; the model's own decision is kept as
   ``model_decision`` (in the results and in the log entry's details).
4. **Crash-safe, resumable.** A resumed audit's result files and report equal those of an uninterrupted
   run byte for byte; times and throughput appear only in ``summary.json``.
5. **Bounded memory.** Rows are streamed; at most ``2 * workers + 1`` chunks are in flight; the review
   queue is built from ``results.jsonl`` as row numbers and file offsets, and the report written a page of
   :data:`REPORT_PAGE_SIZE` items at a time.

The audit talks to the vault only through its methods (``verify_many``, ``log_head``, ``log_entries``,
``reference_images``); it never queries the database itself.

The library never prints: progress goes to the ``progress`` callback, problems are raised as
:class:`~sigvault.errors.SigvaultError`. A row that cannot be decided is not a failure of the run: it gets
``decision = "error"`` and the summary's ``exit_code`` is 1 so the CLI can say some rows failed.
"""

from sigvault.audit.cluster import run_cluster_audit
from sigvault.audit.files import REPORT_HTML, RESULTS_CSV, RESULTS_JSONL, STATE_FILE, SUMMARY_JSON, report_page_name
from sigvault.audit.manifest import REQUIRED_COLUMNS, ManifestInfo, Row, iter_rows, validate_manifest
from sigvault.audit.policy import Band, Policy, load_policy
from sigvault.audit.records import (
    CSV_OUTPUT_FIELDS,
    ERROR_KINDS,
    OUTPUT_FIELDS,
    csv_row,
    decided_record,
    error_kind,
    error_record,
)
from sigvault.audit.run import ProgressCallback, prepare_many, run_audit
from sigvault.audit.summary import (
    DECISIONS,
    REPORT_PAGE_SIZE,
    REVIEW_ORDER,
    AuditProgress,
    AuditSummary,
    review_queue,
    risk_key,
)

__all__ = [
    "CSV_OUTPUT_FIELDS",
    "DECISIONS",
    "ERROR_KINDS",
    "OUTPUT_FIELDS",
    "REPORT_HTML",
    "REPORT_PAGE_SIZE",
    "REQUIRED_COLUMNS",
    "RESULTS_CSV",
    "RESULTS_JSONL",
    "REVIEW_ORDER",
    "STATE_FILE",
    "SUMMARY_JSON",
    "AuditProgress",
    "AuditSummary",
    "Band",
    "ManifestInfo",
    "Policy",
    "ProgressCallback",
    "Row",
    "csv_row",
    "decided_record",
    "error_kind",
    "error_record",
    "iter_rows",
    "load_policy",
    "prepare_many",
    "report_page_name",
    "review_queue",
    "risk_key",
    "run_audit",
    "run_cluster_audit",
    "validate_manifest",
]
