"""Run an audit: decide every row of a validated manifest, chunk after chunk, and write the results.

Rows go to :meth:`Vault.verify_many` (the code ``verify`` runs: embedding in batches, scoring, logging with
kind ``"audit"``) in chunks of ``batch_size`` rows aligned on absolute row numbers, so a chunk always holds
the same rows and is embedded as the same batch, whether or not the run was interrupted. Reading, hashing and
preprocessing the images (:func:`sigvault.vault.prepare`, the same function verify uses) is the CPU-heavy part
that needs neither the model nor the database: with ``workers`` >= 2 it runs in that many worker processes (a
``ProcessPoolExecutor``; threads would serialise on the GIL), a few chunks ahead, while the calling thread
embeds, scores, logs and writes chunk after chunk, strictly in manifest order. With ``workers`` = 1 everything
happens in the calling thread. At most ``2 * workers + 1`` chunks are in flight.

What an audit does around the deciding is shared with the cluster runner (:mod:`sigvault.audit.cluster`):
:func:`open_audit` (validate, lock the output folder, start or repair the files), :class:`RecordWriter` (append
records in manifest order, tally, progress), :func:`decide_chunk` (one aligned chunk through ``verify_many``)
and :func:`finish_audit` (the report pages and ``summary.json``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, BinaryIO

from sigvault import scoring
from sigvault.audit.files import (
    RESULTS_CSV,
    RESULTS_JSONL,
    SUMMARY_JSON,
    AuditState,
    now,
    prepare_outputs,
    report_page_name,
)
from sigvault.audit.manifest import ManifestInfo, Row, image_path, iter_rows, validate_manifest
from sigvault.audit.policy import Policy, load_policy, policy_field, policy_rule
from sigvault.audit.records import csv_row, csv_text, decided_record, error_kind, error_record, json_line
from sigvault.audit.summary import (
    DECISIONS,
    REPORT_PAGE_SIZE,
    AuditProgress,
    AuditSummary,
    Tally,
    read_records,
    review_queue,
)
from sigvault.durable import append_durably, atomic_write, open_private, private_dir
from sigvault.errors import SigvaultError, UsageError
from sigvault.review import audit_review_figures

if TYPE_CHECKING:
    from sigvault.db.decision_log import Entry
    from sigvault.documents import DocumentOptions
    from sigvault.imaging import ImageLimits, PreprocessSpec
    from sigvault.vault import LogOnce, Prepared, Vault

ProgressCallback = Callable[[AuditProgress], None]


@dataclass(frozen=True)
class Chunk:
    """``batch_size`` rows aligned on absolute row numbers: one embedding batch and one transaction."""

    start: int
    rows: list[Row]
    recovered: dict[int, Entry]  # row index -> decision log entry (resume only)


@dataclass(frozen=True)
class AuditJob:
    """What deciding a chunk needs besides the vault. Picklable: a cluster worker gets it with each partition."""

    info: ManifestInfo
    state: AuditState
    policy: Policy | None
    model_id: str
    # whole documents: the layouts file the rows' ``layout`` names, and whether to locate the signature on rows
    # that give neither a region nor a layout (``audit --locate``); None: every image is a signature box
    documents: DocumentOptions | None = None

    @property
    def batch_size(self) -> int:
        return self.state.batch_size  # a resumed audit keeps the batch size it started with

    def zone(self, row: Row) -> DocumentOptions | None:
        """Where the signature is on this row's image, as ``verify --region/--layout/--locate`` would take it
        (None: the image is used whole)."""
        docs = self.documents
        if row.region is None and row.layout is None and (docs is None or not docs.locate):
            return None
        from sigvault.documents import DocumentOptions

        layouts = docs.layouts if docs is not None else None
        return DocumentOptions(row.region, row.layout, layouts, locate=docs is not None and docs.locate)


@dataclass
class AuditRun:
    """An audit under way (:func:`open_audit`): the job, and what the output folder holds."""

    vault: Vault
    job: AuditJob
    out_dir: Path
    done: int  # rows already written when this run started (a resume)
    recovered: dict[int, Entry]  # rows logged but not written by the interrupted run, by row index
    tally: Tally
    started: str
    t0: float = field(default_factory=perf_counter)

    @property
    def info(self) -> ManifestInfo:
        return self.job.info

    @property
    def state(self) -> AuditState:
        return self.job.state

    @property
    def batch_size(self) -> int:
        return self.job.batch_size


def check_sizes(batch_size: int, report_page_size: int) -> None:
    """Refuse sizes below 1 (UsageError)."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if report_page_size < 1:
        raise UsageError(f"report_page_size must be at least 1, got {report_page_size}")


def _documents(vault: Vault, documents: DocumentOptions | None) -> DocumentOptions:
    """The audit's document options with the layouts file resolved (default ``<home>/layouts.toml``), read once
    now when it was named or exists, so that a malformed file stops the audit before anything is decided."""
    from sigvault.documents import DocumentOptions, load_layouts

    layouts = documents.layouts if documents is not None and documents.layouts is not None else vault.home / "layouts.toml"
    if (documents is not None and documents.layouts is not None) or layouts.exists():
        load_layouts(layouts)
    return DocumentOptions(layouts=layouts.absolute(), locate=documents is not None and documents.locate)


@contextmanager
def open_audit(
    vault: Vault,
    manifest: Path,
    out_dir: Path,
    *,
    batch_size: int,
    policy: Path | None,
    resume: bool,
    documents: DocumentOptions | None = None,
) -> Iterator[AuditRun]:
    """Validate the manifest and the policy, lock ``out_dir`` and start (or check and repair, with ``resume``)
    its files; the lock is held until the block ends. ``documents``: see :attr:`AuditJob.documents` (its
    ``layouts`` None: ``<home>/layouts.toml``)."""
    started = now()
    t0 = perf_counter()
    manifest = Path(manifest).absolute()
    out_dir = Path(out_dir)
    info = validate_manifest(manifest)
    pol = load_policy(policy) if policy is not None else None
    docs = _documents(vault, documents)
    model_id = vault.model_id  # loads the model now, before any thread needs it
    private_dir(out_dir)  # 0700, its files 0600: results and report name persons and show their signatures
    from sigvault.index import file_lock

    with file_lock(out_dir / ".audit"):
        tally = Tally()
        state, done, recovered = prepare_outputs(vault, info, out_dir, pol, model_id, batch_size, resume, tally, started)
        yield AuditRun(vault, AuditJob(info, state, pol, model_id, docs), out_dir, done, recovered, tally, started, t0)


class RecordWriter:
    """Appends records to ``results.jsonl`` and ``results.csv`` in manifest order, durably, and tallies them.

    The CSV is made from the JSON text, exactly as a resume rebuilds it."""

    def __init__(self, run: AuditRun, jsonl: BinaryIO, csvf: BinaryIO) -> None:
        self.run, self._jsonl, self._csv = run, jsonl, csvf
        self.done = run.done  # rows written, those of earlier runs included

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.write_lines([json_line(r) for r in records])

    def write_lines(self, lines: Sequence[str]) -> None:
        """Records already serialised by :func:`~sigvault.audit.records.json_line` (e.g. by a cluster worker)."""
        append_durably(self._jsonl, "".join(lines).encode("utf-8"))
        records = [json.loads(line) for line in lines]
        append_durably(self._csv, csv_text([csv_row(r, self.run.state.columns) for r in records]))
        for record in records:
            self.run.tally.add(record)
        self.done += len(records)

    def progress(self, **extra: Any) -> AuditProgress:
        run = self.run
        return AuditProgress(self.done, run.info.rows, run.tally.counts["error"], run.done, **extra)


@contextmanager
def record_writer(run: AuditRun) -> Iterator[RecordWriter]:
    with open_private(run.out_dir / RESULTS_JSONL) as jsonl, open_private(run.out_dir / RESULTS_CSV) as csvf:
        yield RecordWriter(run, jsonl, csvf)


def finish_audit(
    run: AuditRun,
    *,
    written: int,
    decided: int,
    recovered: int,
    decide_s: float,
    workers: int,
    report_page_size: int,
    cluster: str | None = None,
    worker_cpu_s: float | None = None,
) -> AuditSummary:
    """Write the report pages and ``summary.json``; return the summary. ``written``: rows written by this
    run, ``decided``: by the model, ``recovered``: taken back from the decision log."""
    info, tally, pol, model_id = run.info, run.tally, run.job.policy, run.job.model_id
    pages = _write_report(
        run.vault, info, run.out_dir, tally, pol, model_id, run.vault.embedder.scoring, report_page_size, run.state
    )
    rows = info.rows
    summary = AuditSummary(
        out_dir=run.out_dir,
        manifest=info.path,
        manifest_sha256=info.sha256,
        audit_id=run.state.audit_id,
        rows=rows,
        counts={d: tally.counts[d] for d in DECISIONS},
        error_kinds=dict(sorted(tally.kinds.items())),
        refer_rate=tally.counts["refer"] / rows if rows else 0.0,
        review_rate=tally.needing_review / rows if rows else 0.0,
        decided_this_run=decided,
        resumed_rows=run.done,
        recovered_from_log=recovered,
        elapsed_s=round(perf_counter() - run.t0, 3),
        decide_s=round(decide_s, 3),
        items_per_s=round(written / decide_s, 2) if decide_s > 0 and written else 0.0,  # rows written per second
        workers=workers,
        batch_size=run.batch_size,
        model=model_id,
        policy=pol.to_dict() if pol is not None else None,
        report_items=tally.needing_review,
        report_pages=pages,
        first_started=run.state.first_started,
        started=run.started,
        finished=now(),
        capture_mismatch=tally.capture_mismatch,
        cluster=cluster,
        worker_cpu_s=worker_cpu_s,
        reviews=audit_review_figures(run.vault, run.state.audit_id),
    )
    atomic_write(run.out_dir / SUMMARY_JSON, (json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n").encode())
    return summary


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
    report_page_size: int = REPORT_PAGE_SIZE,
    documents: DocumentOptions | None = None,
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
        report_page_size: items per page of the report. Every item not accepted is in the report, in review
            order (:mod:`sigvault.audit.summary`): ``report.html``, then ``report-2.html``, ... when there are more.
        documents: whole documents (cheques, forms): ``locate`` finds the signature on the rows that give no
            ``region`` or ``layout``; ``layouts`` is the file the ``layout`` column names (default
            ``<home>/layouts.toml``). The zone compared is in each result's ``zone`` and the decision's details.

    Returns:
        The summary; ``summary.exit_code`` is 1 when some rows could not be decided.

    Raises:
        ManifestError: the manifest is malformed (before anything is decided).
        UsageError: bad arguments or policy, ``out_dir`` holds another audit, or a resume that does
            not match how the audit started (manifest, policy or model changed).
        SigvaultError: the database failed; the outputs stay resumable.
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    check_sizes(batch_size, report_page_size)
    with open_audit(
        vault, manifest, out_dir, batch_size=batch_size, policy=policy, resume=resume, documents=documents
    ) as run:
        t_decide = perf_counter()
        written, decided, recovered = _decide_all(run, workers, progress)
        return finish_audit(
            run,
            written=written,
            decided=decided,
            recovered=recovered,
            decide_s=perf_counter() - t_decide,
            workers=workers,
            report_page_size=report_page_size,
        )


def _write_report(
    vault: Vault,
    info: ManifestInfo,
    out_dir: Path,
    tally: Tally,
    pol: Policy | None,
    model_id: str,
    cfg: scoring.ScoringConfig,
    page_size: int,
    state: AuditState,
) -> int:
    """Write the report: every item not accepted, in review order, ``page_size`` items per page
    (``report.html``, ``report-2.html``, ...); pages left over from an earlier run are removed. Each decided
    item carries its ``decision_id`` in the log (for the reviewer's outcomes, :mod:`sigvault.review`).
    Returns the number of pages."""
    from sigvault import report
    from sigvault.review import audit_decision_ids

    queue = review_queue(out_dir / RESULTS_JSONL)
    ids = audit_decision_ids(vault, state.audit_id, after=state.log_after, rows=info.rows)
    pages = max(1, -(-len(queue) // page_size))
    head = {
        "manifest": info.path.name,
        "rows": info.rows,
        "counts": {d: tally.counts[d] for d in DECISIONS},
        "error_kinds": dict(sorted(tally.kinds.items())),
        "model": model_id,
        "policy": None
        if pol is None
        else {"name": pol.name, "sha256": pol.sha256, "bands": [b.to_dict() for b in pol.bands]},
        "needing_review": tally.needing_review,
        "capture_mismatch": tally.capture_mismatch,
        "refer_band": cfg.refer_band,
        "page_size": page_size,
        "pages": pages,
    }
    for page in range(1, pages + 1):
        items = read_records(out_dir / RESULTS_JSONL, queue[(page - 1) * page_size : page * page_size])
        items = [(i, r | {"decision_id": int(ids[i])} if ids[i] else r) for i, r in items]
        html = report.render_report(
            head | {"page": page}, items, reference_images=vault.reference_images, limits=vault.limits
        )
        atomic_write(out_dir / report_page_name(page), html.encode("utf-8"))
    stale = pages + 1
    while (out_dir / report_page_name(stale)).exists():
        (out_dir / report_page_name(stale)).unlink()
        stale += 1
    return pages


#: What :func:`prepare_many` reads: (path, name, page, signature zone of a whole document).
PrepareJob = tuple[str, str, "int | None", "DocumentOptions | None"]


def prepare_many(jobs: Sequence[PrepareJob], spec: PreprocessSpec, limits: ImageLimits) -> list[Prepared | SigvaultError]:
    """:func:`sigvault.vault.prepare` for each (path, name, page, zone), an error in place of a failure.
    Module-level and free of the vault, so that a worker process can run it."""
    from sigvault.vault import prepare

    out: list[Prepared | SigvaultError] = []
    for source, name, page, zone in jobs:
        try:
            out.append(prepare(source, name, spec, limits, page=page, zone=zone))
        except SigvaultError as exc:
            out.append(exc)
    return out


def to_prepare(job: AuditJob, chunk: Chunk) -> list[PrepareJob]:
    """(path, name, page, zone) of the rows of a chunk whose image must be read (not recovered, not blank)."""
    return [
        (image_path(job.info, row.image), image_path(job.info, row.image), row.page, job.zone(row))
        for row in chunk.rows
        if row.index not in chunk.recovered and row.image.strip()
    ]


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


def decide_chunk(
    vault: Vault,
    job: AuditJob,
    chunk: Chunk,
    prepared: list[Prepared | SigvaultError] | None,
    *,
    once: LogOnce | None = None,
) -> tuple[list[dict[str, Any]], int, int]:
    """Decide one chunk. ``prepared``: the outcome of :func:`prepare_many` for :func:`to_prepare`'s rows
    (None: read them here). ``once``: log each row at most once (:class:`~sigvault.vault.LogOnce`; the cluster's
    retried partitions). Returns (records in row order, rows decided, rows recovered)."""
    from sigvault.results import Verification
    from sigvault.vault import VerifyItem

    info, pol, cfg, model_id = job.info, job.policy, vault.embedder.scoring, job.model_id
    records: list[dict[str, Any] | None] = [None] * len(chunk.rows)
    todo: list[tuple[int, Row, str]] = []
    recovered = 0
    for i, row in enumerate(chunk.rows):
        source = image_path(info, row.image) if row.image.strip() else ""
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
        details: dict[str, Any] = {"audit": job.state.audit_id, "row": row.index, "line": row.line, "item_id": row.item_id}
        ready = prepared[k] if prepared is not None else None
        zone = job.zone(row)
        if row.page is not None:
            details["page"] = row.page
        if ready is None and (row.page is not None or zone is not None):
            # read here, as in a worker: the vault reads whole files only
            ready = prepare_many([(source, source, row.page, zone)], vault.embedder.spec, vault.limits)[0]
        if ready is not None and not isinstance(ready, SigvaultError) and ready.region is not None:
            details["region"] = ready.region
        rule = None
        if pol is not None:
            band = pol.band_for(row.amount)
            details["policy"] = policy_field(pol, band, None) | {"name": pol.name}
            rule = policy_rule(pol, band, cfg)
        items.append(
            VerifyItem(
                row.person,
                source,  # a path or a URL (sigvault.imaging.is_url)
                name=source,
                details=details,
                prepared=ready,
                decide=rule,
            )
        )
    results = vault.verify_many(items, kind="audit", batch_size=job.batch_size, once=once) if items else []
    for (i, row, source), result in zip(todo, results, strict=True):
        if isinstance(result, SigvaultError):
            records[i] = error_record(row, source, error_kind(result), str(result), model_id, pol)
        else:
            records[i] = decided_record(row, result, pol, cfg)
    decided = sum(1 for r in results if not isinstance(r, SigvaultError))
    return records, decided, recovered  # type: ignore[return-value]


def chunks(run: AuditRun) -> Iterator[Chunk]:
    """The chunks of the rows not yet written, streamed: aligned on multiples of the batch size (the first may
    be shorter when resuming)."""
    start, size, recovered = run.done, run.batch_size, run.recovered
    current: list[Row] = []
    for row in iter_rows(run.info):
        if row.index < start:
            continue
        current.append(row)
        if (row.index + 1) % size == 0:
            yield Chunk(current[0].index, current, {r.index: recovered[r.index] for r in current if r.index in recovered})
            current = []
    if current:
        yield Chunk(current[0].index, current, {r.index: recovered[r.index] for r in current if r.index in recovered})


def _decide_all(run: AuditRun, workers: int, progress: ProgressCallback | None) -> tuple[int, int, int]:
    """Decide the rows not yet written, writing each chunk in order.

    Returns (rows written, rows decided by the model, rows recovered from the decision log)."""
    decided_total = recovered_total = 0
    pending: deque[tuple[Chunk, Future[list[Prepared | SigvaultError]] | None]] = deque()
    spec, limits = run.vault.embedder.spec, run.vault.limits
    with record_writer(run) as writer:
        if progress is not None:
            progress(writer.progress())
        if run.done >= run.info.rows:
            return 0, 0, 0
        pool = _process_pool(workers) if workers > 1 else None

        def decide_and_write(chunk: Chunk, future: Future[list[Prepared | SigvaultError]] | None) -> None:
            nonlocal decided_total, recovered_total
            prepared = future.result() if future is not None else None
            records, decided, rec = decide_chunk(run.vault, run.job, chunk, prepared)
            writer.write(records)
            decided_total += decided
            recovered_total += rec
            if progress is not None:
                progress(writer.progress())

        try:
            for chunk in chunks(run):
                jobs = to_prepare(run.job, chunk)
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
        return writer.done - run.done, decided_total, recovered_total
