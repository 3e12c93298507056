"""Run ``sigvault audit`` on a Dask distributed cluster: ``--cluster tcp://scheduler:8786`` or ``--cluster local:N``.

The same audit as :func:`~sigvault.audit.run.run_audit`, with the deciding spread over Dask workers that share
one PostgreSQL vault (a SQLite vault is refused: workers on other machines cannot share its file). The client
(this module) validates the manifest, owns the output folder and writes every file; the workers
(:mod:`sigvault.audit.cluster_worker`) decide. Dask is an optional dependency (``pip install
'sigvault[cluster]'``), imported only here, when an audit runs on a cluster.

How it works:

1. **Partitions.** The client streams the manifest (:func:`~sigvault.audit.run.chunks`) and groups its chunks
   (``batch_size`` rows aligned on absolute row numbers, so every embedding batch is the one a single-machine
   run makes) into partitions of ``partition_size`` rows, each submitted as one Dask task carrying its rows.
   At most ``in_flight`` partitions are submitted and not yet written (default: twice the workers, plus two),
   so the client holds a bounded number of rows whatever the manifest's length.
2. **Workers.** A worker plugin opens the vault once per worker process (engine and model); each task reads
   and preprocesses its images (paths on a shared file system, or URLs through fsspec: ``s3://``, ``http://``,
   ``file://`` when their fsspec backend is installed), decides them through ``Vault.verify_many`` as a
   single-machine audit does, and sends the records back. A bad row is an ``error`` record, never a failed task.
3. **Order.** Results come back in any order; the client writes a partition only when every partition before
   it is written, so ``results.jsonl`` and ``results.csv`` are in manifest order, and the report and
   ``summary.json`` are made from them exactly as on one machine (:func:`~sigvault.audit.run.finish_audit`).

**Every decision logged exactly once.** The decision log is one hash chain; each ``verify_many`` batch appends
its entries in one transaction under the lock on the chain's head row, so many workers append concurrently and
the chain stays linear (``sigvault log verify``). Each audit entry carries the audit id and its row number in
its details. A task may run more than once: Dask reruns a task whose worker died (SIGKILL, a lost machine), and
that worker may have committed some of the partition's batches before dying, or all of them before the result
reached the client. So each batch, after taking the head lock and before appending, looks up which of its rows
this audit has already logged (:class:`~sigvault.vault.LogOnce`: entries after the audit's starting head, through
the index on ``person_id``), appends only the others, and takes the already-logged rows' results from their
stored entries. The check and the append happen under the same lock, so two runs of one partition (a worker the
scheduler believed dead still finishing) cannot both append a row. No schema change is needed: the row's own
entry is its marker.

**Faults.** A worker killed mid-partition: Dask's scheduler reassigns the task to another worker (and the
nanny restarts the dead one), and the rerun logs only the rows not yet logged. A task that raises (the database
unreachable for a moment) is retried ``TASK_RETRIES`` times. An interrupted client (Ctrl-C, SIGKILL, a lost
connection) leaves the output folder resumable as on one machine: ``--resume`` keeps the partitions written,
takes the rows that were logged but not written back from the decision log, and submits the rest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sigvault.audit.run import (
    AuditRun,
    Chunk,
    ProgressCallback,
    check_sizes,
    chunks,
    finish_audit,
    open_audit,
    record_writer,
)
from sigvault.audit.summary import REPORT_PAGE_SIZE, AuditSummary
from sigvault.errors import SigvaultError, UsageError

if TYPE_CHECKING:
    from distributed import Client

    from sigvault.audit.cluster_worker import PartitionResult, PartitionTask
    from sigvault.config import Settings
    from sigvault.documents import DocumentOptions

PARTITION_SIZE = 256  # rows per partition (one Dask task): 8 batches of 32, a few seconds of a worker's time
TASK_RETRIES = 2  # reruns of a task that raised (a worker that died is handled by the scheduler, not counted here)
CONNECT_TIMEOUT_S = 30
INSTALL_HINT = "pip install 'sigvault[cluster]'"

_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$")


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster``: a scheduler's address, or a local cluster of ``local_workers`` processes."""

    text: str
    address: str | None = None
    local_workers: int | None = None


def parse_cluster(text: str) -> ClusterSpec:
    """``tcp://host:port`` (any Dask scheduler address) or ``local:N``.

    Raises:
        UsageError: anything else.
    """
    local = _LOCAL.match(text)
    if local:
        workers = int(local.group(1))
        if workers < 1:
            raise UsageError(f"--cluster {text}: a local cluster needs at least 1 worker, e.g. local:2")
        return ClusterSpec(text, local_workers=workers)
    if _ADDRESS.match(text):
        return ClusterSpec(text, address=text)
    raise UsageError(
        f"--cluster {text!r} is neither a scheduler address (tcp://scheduler:8786) nor local:N (N worker processes)"
    )


def _refuse_sqlite(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(settings.database_url).get_backend_name()
    except Exception:  # a malformed URL is reported by the engine, as for every command
        return
    if backend == "sqlite":
        raise UsageError(
            "--cluster needs a PostgreSQL vault shared by the workers (SIGVAULT_DATABASE_URL=postgresql+psycopg://...); "
            "workers on other machines cannot share the SQLite file of this vault; nothing was audited"
        )


def _distributed() -> Any:
    """The ``distributed`` module, or a UsageError naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise UsageError(f"--cluster needs Dask distributed, which is not installed; {INSTALL_HINT}") from None
    return distributed


@contextmanager
def connect(spec: ClusterSpec) -> Iterator[Client]:
    """A Dask client of the scheduler at ``spec.address``, or of a local cluster started (and stopped) here:
    ``local_workers`` processes of one thread each (a worker's model runs on its one thread)."""
    distributed = _distributed()
    if spec.local_workers is not None:
        with (
            distributed.LocalCluster(
                n_workers=spec.local_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(spec.address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise SigvaultError(
            f"cannot reach the Dask scheduler at {spec.address} ({exc}); start it (`dask scheduler`) or fix --cluster"
        ) from None
    with client:
        yield client


def run_cluster_audit(
    settings: Settings,
    manifest: Path,
    out_dir: Path,
    *,
    cluster: str,
    batch_size: int = 32,
    partition_size: int = PARTITION_SIZE,
    policy: Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    report_page_size: int = REPORT_PAGE_SIZE,
    in_flight: int | None = None,
    documents: DocumentOptions | None = None,
) -> AuditSummary:
    """Decide every item of ``manifest`` on the Dask cluster ``cluster`` and write the results into ``out_dir``:
    the files, decisions and decision log entries of :func:`~sigvault.audit.run.run_audit` on the same vault.

    Args:
        settings: the vault's settings; the workers open the same database and model with them.
        cluster: ``tcp://host:port`` of a Dask scheduler, or ``local:N`` for N local worker processes.
        batch_size: rows per embedding batch and transaction (as :func:`run_audit`; a resume keeps the first).
        partition_size: rows per Dask task, a multiple of the batch size.
        in_flight: partitions submitted and not yet written, at most (default twice the workers, plus two).
        The others: as :func:`~sigvault.audit.run.run_audit`.

    Raises:
        UsageError: a SQLite vault, Dask not installed, a bad ``--cluster``, sizes or manifest (nothing stored).
        SigvaultError: the scheduler cannot be reached, or a partition failed after its retries; the rows
            written so far are kept and ``--resume`` finishes the audit.
    """
    spec = parse_cluster(cluster)
    check_sizes(batch_size, report_page_size)
    if partition_size < batch_size or partition_size % batch_size:
        raise UsageError(f"--partition-size {partition_size} must be a multiple of --batch-size {batch_size}")
    if in_flight is not None and in_flight < 1:
        raise UsageError(f"in_flight must be at least 1, got {in_flight}")
    _refuse_sqlite(settings)
    _distributed()  # the missing extra is reported before anything is written
    from sigvault.audit.cluster_worker import PLUGIN_NAME, AuditWorker
    from sigvault.vault import Vault

    with (
        Vault.open(settings) as vault,
        open_audit(
            vault, manifest, out_dir, batch_size=batch_size, policy=policy, resume=resume, documents=documents
        ) as run,
    ):
        if partition_size % run.batch_size:  # a resumed audit keeps its batch size: whole chunks per partition
            partition_size = -(-partition_size // run.batch_size) * run.batch_size
        with connect(spec) as client:
            client.register_plugin(AuditWorker(settings), name=PLUGIN_NAME)
            t_decide = perf_counter()
            written, decided, recovered, workers, cpu_s = _decide_on_cluster(
                client, run, partition_size, in_flight, progress
            )
            decide_s = perf_counter() - t_decide
        return finish_audit(
            run,
            written=written,
            decided=decided,
            recovered=recovered,
            decide_s=decide_s,
            workers=workers,
            report_page_size=report_page_size,
            cluster=spec.text,
            worker_cpu_s=round(cpu_s, 3),
        )


def partitions(run: AuditRun, partition_size: int) -> Iterator[tuple[int, list[Chunk]]]:
    """(partition number, its chunks) for the rows not yet written, streamed; partition ``n`` holds rows
    ``[n * partition_size, (n + 1) * partition_size)`` (the first may be shorter when resuming)."""
    current: list[Chunk] = []
    number = -1
    for chunk in chunks(run):
        n = chunk.start // partition_size
        if current and n != number:
            yield number, current
            current = []
        number = n
        current.append(chunk)
    if current:
        yield number, current


def _workers(client: Client) -> int:
    return len(client.scheduler_info().get("workers", {}))


def _decide_on_cluster(
    client: Client,
    run: AuditRun,
    partition_size: int,
    in_flight: int | None,
    progress: ProgressCallback | None,
) -> tuple[int, int, int, int, float]:
    """Submit the partitions, at most ``in_flight`` ahead of the writing, and write their records in manifest
    order. Returns (rows written, decided, recovered from the log, distinct workers that decided, the workers'
    CPU seconds in the tasks)."""
    from distributed import as_completed

    from sigvault.audit.cluster_worker import PartitionTask, audit_partition

    limit = in_flight or 2 * max(_workers(client), 1) + 2
    total_partitions = -(-run.info.rows // partition_size)
    submitted: dict[int, tuple[Any, PartitionTask]] = {}  # partition number -> (future, task), until written
    ready: dict[int, PartitionResult] = {}
    used: set[str] = set()
    decided = recovered = 0
    cpu_s = 0.0
    done_at_start = run.done
    t0 = perf_counter()
    finished = as_completed()
    token = f"{run.state.audit_id[:12]}-{perf_counter():.6f}"  # task keys unique to this run of the client

    with record_writer(run) as writer:

        def report() -> None:
            if progress is None:
                return
            elapsed = perf_counter() - t0
            rate = (writer.done - done_at_start) / elapsed if elapsed > 0 else 0.0
            progress(
                writer.progress(
                    partitions_done=-(-writer.done // partition_size),
                    partitions=total_partitions,
                    workers=_workers(client),
                    rows_per_s=round(rate, 1),
                )
            )

        def collect_one() -> None:
            nonlocal decided, recovered, cpu_s
            future = next(finished)
            number = next(n for n, (f, _) in submitted.items() if f is future)
            try:
                result = future.result()
            except SigvaultError as exc:
                raise SigvaultError(f"{submitted[number][1].describe()} failed on the cluster: {exc}") from None
            except Exception as exc:  # KilledWorker, a lost scheduler, ...: the engine gave up on this partition
                raise SigvaultError(
                    f"{submitted[number][1].describe()} failed on the cluster ({type(exc).__name__}: {exc}); "
                    "the rows written so far are kept: finish the audit with --resume"
                ) from None
            ready[number] = result
            while submitted and min(submitted) in ready:  # the next partition in manifest order is back
                n = min(submitted)
                result = ready.pop(n)
                writer.write_lines(result.lines)
                decided += result.decided
                recovered += result.recovered
                cpu_s += result.cpu_s
                used.add(result.worker)
                del submitted[n]
                report()

        report()
        for number, part in partitions(run, partition_size):
            payload = PartitionTask(number, part, run.job)
            future = client.submit(audit_partition, payload, key=f"sigvault-audit-{token}-{number}", pure=False, retries=TASK_RETRIES)
            finished.add(future)
            submitted[number] = (future, payload)
            while len(submitted) >= limit:
                collect_one()
        while submitted:
            collect_one()
        return writer.done - done_at_start, decided, recovered, len(used), cpu_s
