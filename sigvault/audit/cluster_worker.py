"""The worker side of a cluster audit (:mod:`sigvault.audit.cluster`): what runs inside each Dask worker.

Imported only when an audit runs with ``--cluster`` (it imports ``distributed`` at the top, because the worker
plugin must subclass Dask's ``WorkerPlugin``), and by the workers themselves when they unpickle a task.

- :class:`AuditWorker`, a Dask worker plugin: when it is registered (and on every worker that joins later, or
  that the nanny restarts after a crash), ``setup`` opens the vault once per worker process: the database
  engine, and the model with as many onnxruntime threads as the worker has task threads. ``verify`` scores a
  questioned signature against the person's references read from SQL and never searches the FAISS index, so
  a worker opens no index file (the cache under ``SIGVAULT_HOME`` is ``identify``'s and ``index check``'s).
- :func:`audit_partition`, the task: reads and preprocesses the partition's images (a path on a shared file
  system or a URL through fsspec, :func:`sigvault.vault.prepare`), decides chunk after chunk with
  :func:`~sigvault.audit.run.decide_chunk` (``Vault.verify_many`` with :class:`~sigvault.vault.LogOnce`, so a
  retried partition logs nothing twice) and returns the records as ``results.jsonl`` lines. A bad row (a
  missing image, an unknown person) is an error record, never a failed task.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter, process_time
from typing import TYPE_CHECKING

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from sigvault.audit.records import json_line
from sigvault.audit.run import AuditJob, Chunk, decide_chunk, prepare_many, to_prepare
from sigvault.errors import SigvaultError

if TYPE_CHECKING:
    from distributed import Worker

    from sigvault.config import Settings
    from sigvault.vault import Vault

PLUGIN_NAME = "sigvault-audit"


@dataclass(frozen=True)
class PartitionTask:
    """One partition of the manifest: whole chunks (aligned on the batch size), and the job they belong to."""

    number: int  # partition number: its rows are [number * partition_size, (number + 1) * partition_size)
    chunks: list[Chunk]
    job: AuditJob

    @property
    def rows(self) -> int:
        return sum(len(c.rows) for c in self.chunks)

    def describe(self) -> str:
        first, last = self.chunks[0].rows[0], self.chunks[-1].rows[-1]
        return f"partition {self.number} (manifest lines {first.line}-{last.line})"


@dataclass(frozen=True)
class PartitionResult:
    """What a worker sends back: the partition's ``results.jsonl`` lines in row order, and how they came."""

    number: int
    lines: list[str]
    decided: int  # rows decided by the model (found in the log after a retry included)
    recovered: int  # rows taken back from the decision log of an interrupted run (--resume)
    worker: str  # the worker's address
    seconds: float  # time spent in the task
    cpu_s: float  # CPU time of the worker process meanwhile (its one task thread, and the rest of the process)


class AuditWorker(WorkerPlugin):
    """Opens the vault once per worker process (engine and model) and closes it when the worker stops."""

    idempotent = False  # a new audit's registration replaces the plugin: settings or model may have changed

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._vault: Vault | None = None
        self._failure: str | None = None

    def setup(self, worker: Worker) -> None:
        from sigvault.embedder import load_embedder
        from sigvault.vault import Vault

        try:
            embedder = load_embedder(self.settings.model, threads=worker.state.nthreads)
            self._vault = Vault.open(self.settings, embedder=embedder)
        except SigvaultError as exc:  # kept for the first task to raise, naming the worker
            self._failure = f"worker {worker.address} cannot open the vault: {exc}"

    def teardown(self, worker: Worker) -> None:
        if self._vault is not None:
            self._vault.close()
            self._vault = None

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            raise SigvaultError(self._failure or "the sigvault worker plugin is not set up")
        return self._vault


def worker_vault() -> tuple[Vault, str]:
    """The vault the plugin opened in this worker process, and the worker's address."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, AuditWorker):
        raise SigvaultError(f"worker {worker.address} has no sigvault plugin; run the audit with `sigvault audit --cluster`")
    return plugin.vault, worker.address


def audit_partition(task: PartitionTask) -> PartitionResult:
    """Decide one partition on this worker (the Dask task). Every decision is logged exactly once, however
    often the task is run (a worker killed after committing some chunks; see :mod:`sigvault.audit.cluster`).

    Raises:
        SigvaultError: the worker's model is not the client's, or the database failed (the engine retries).
    """
    from sigvault.vault import LogOnce

    t0, cpu0 = perf_counter(), process_time()
    vault, address = worker_vault()
    job = task.job
    if vault.model_id != job.model_id:
        raise SigvaultError(
            f"worker {address} loaded model {vault.model_id}, the audit uses {job.model_id}; install the same "
            "sigvault and SIGVAULT_MODEL on every worker"
        )
    once = LogOnce(after=job.state.log_after, scope={"audit": job.state.audit_id}, key="row")
    lines: list[str] = []
    decided = recovered = 0
    for chunk in task.chunks:
        prepared = prepare_many(to_prepare(job, chunk), vault.embedder.spec, vault.limits)
        records, d, r = decide_chunk(vault, job, chunk, prepared, once=once)
        lines.extend(json_line(record) for record in records)
        decided += d
        recovered += r
    return PartitionResult(
        task.number, lines, decided, recovered, address, perf_counter() - t0, process_time() - cpu0
    )
