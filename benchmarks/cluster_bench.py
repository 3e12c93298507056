"""Benchmark ``sigvault audit --cluster`` beside the single-process audit, in one run, on loopback only.

    python benchmarks/cluster_bench.py                       # 480 items, real model, 3 repeats; 1,000,000-row client
    python benchmarks/cluster_bench.py --items 240 --repeats 1 --rows 100000   # quicker

What it measures, each figure the median over ``--repeats``:

1. **Rows per second deciding** (``summary.json``'s ``items_per_s``: rows written / deciding time, validation
   and report left out) and **CPU milliseconds per row** (``summary.json``'s ``worker_cpu_s`` on a cluster, which
   is steadier than a rate on a machine shared with other jobs) of the same manifest of ``--items`` synthetic signatures (``sigvault.synth``) on the same
   PostgreSQL vault, with the shipped model: the single-process audit (1 process, and 2 processes reading
   images ahead), then a Dask ``LocalCluster`` of 1 and of 2 worker processes of one thread each, reached over
   tcp as a remote scheduler would be. A worker core's rate, 1000 / its CPU ms per row, sizes a cluster.
2. **Scheduling overhead per partition**: the wall time per task of ``--tasks`` no-op Dask tasks submitted and
   collected the way the audit does (bounded in flight), on the 2-worker cluster.
3. **Client memory on a ``--rows``-row manifest**: a separate client process runs the cluster audit of a manifest
   whose rows reference a few small generated images (1 row in 1,000, the others name a missing file, which a
   worker turns into an error row without decoding anything), so every row streams through validation,
   partitioning, the workers, both result files and the report in minutes; the client's peak RSS
   (``VmHWM``) and its rate are printed. The scheduler and the workers are other processes.

The vault is a PostgreSQL database of its own on ``--pg`` (default 127.0.0.1:5432), dropped at the end. The
machine's load average is printed with the figures: another job on the cores slows every setting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from audit_bench import make_items  # noqa: E402

from sigvault.audit import run_audit, run_cluster_audit  # noqa: E402
from sigvault.config import Settings  # noqa: E402
from sigvault.vault import Vault, upgrade_database  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


@contextmanager
def pg_database(server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"sigvault_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A LocalCluster of ``workers`` processes of 1 thread, and a client of it (the scheduler runs here)."""
    from distributed import Client, LocalCluster

    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env) as c,
        Client(c) as client,
    ):
        yield client


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (the audit's reading processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_rates(settings: Settings, manifest: Path, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Per way of running the audit, medians over the repeats: rows per second deciding, and CPU milliseconds per
    row (this process and its reading processes; on a cluster, the workers' CPU in the tasks, then the client's)."""
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    runs = 0

    def out() -> Path:
        nonlocal runs
        runs += 1
        return root / f"out-{runs}"

    with Vault.open(settings) as vault:
        for workers in (1, 2):
            label = f"single process, {workers} process{'es' if workers > 1 else ''} reading images"
            for _ in range(args.repeats):
                c0 = cpu_s()
                summary = run_audit(vault, manifest, out(), workers=workers, batch_size=args.batch)
                rates.setdefault(label, []).append(summary.items_per_s)
                cpu.setdefault(label, []).append((1000 * (cpu_s() - c0) / summary.rows, 0.0))
    overhead = 0.0
    for workers in (1, 2):
        with local_cluster(workers) as client:
            address = client.scheduler.address
            label = f"Dask cluster, {workers} worker{'s' if workers > 1 else ''} (1 thread each)"
            for _ in range(args.repeats):
                c0 = cpu_s()
                summary = run_cluster_audit(
                    settings, manifest, out(), cluster=address, batch_size=args.batch, partition_size=args.partition
                )
                rates.setdefault(label, []).append(summary.items_per_s)
                assert summary.worker_cpu_s is not None
                worker_ms = 1000 * summary.worker_cpu_s / summary.rows
                cpu.setdefault(label, []).append((worker_ms, 1000 * (cpu_s() - c0) / summary.rows))
            if workers == 2:
                overhead = bench_overhead(client, args.tasks)
    return {
        "rates": {k: median(v) for k, v in rates.items()},
        "cpu": {k: (median([a for a, _ in v]), median([b for _, b in v])) for k, v in cpu.items()},
        "overhead": overhead,
    }


def _noop(n: int) -> int:
    return n


def bench_overhead(client: Any, tasks: int) -> float:
    """Milliseconds of wall time per no-op task, submitted and collected as the audit does (bounded in flight)."""
    from distributed import as_completed

    limit = 2 * len(client.scheduler_info()["workers"]) + 2
    pending = as_completed()
    in_flight = 0
    t0 = time.perf_counter()
    for n in range(tasks):
        pending.add(client.submit(_noop, n, pure=False))
        in_flight += 1
        while in_flight >= limit:
            next(pending).result()
            in_flight -= 1
    for future in pending:
        future.result()
    return (time.perf_counter() - t0) * 1000 / tasks


CLIENT = """
import json, sys
from pathlib import Path
from sigvault.audit import run_cluster_audit
from sigvault.config import Settings

settings = Settings(home=Path(sys.argv[1]), database_url=sys.argv[2])
summary = run_cluster_audit(settings, Path(sys.argv[3]), Path(sys.argv[4]), cluster=sys.argv[5], partition_size=int(sys.argv[6]))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": summary.rows, "elapsed_s": summary.elapsed_s, "decide_s": summary.decide_s,
                  "counts": summary.counts, "report_pages": summary.report_pages, "peak_rss_mb": hwm / 1024}))
"""


def bench_client_memory(settings: Settings, root: Path, pairs: list[tuple[str, Path]], args: argparse.Namespace) -> dict[str, Any]:
    """The client's peak RSS and rate on a ``--rows``-row manifest, the client in a process of its own."""
    manifest = root / "million.csv"
    with open(manifest, "w") as fh:
        fh.write("item_id,person,image,amount,branch\n")
        for i in range(args.rows):
            person, path = pairs[(i // 1000) % len(pairs)]
            image = f"images/{path.name}" if i % 1000 == 0 else "images/missing.png"
            fh.write(f"ITEM-{i:08d},{person},{image},{(i * 977) % 50000}.00,branch-{i % 97}\n")
    script = root / "client.py"
    script.write_text(CLIENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with local_cluster(2) as client:
        done = subprocess.run(
            [sys.executable, str(script), str(settings.home), settings.database_url, str(manifest), str(root / "million"),
             client.scheduler.address, str(args.rows_partition)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["manifest_mb"] = round(manifest.stat().st_size / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=480)
    parser.add_argument("--persons", type=int, default=20)
    parser.add_argument("--refs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--partition", type=int, default=64, help="rows per partition of the rate runs")
    parser.add_argument("--repeats", type=int, default=3, help="0: skip the rates (only the client's memory)")
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks timed for the scheduling overhead")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the client-memory manifest (0: skip)")
    parser.add_argument("--rows-partition", type=int, default=256, help="rows per partition of the client-memory run")
    parser.add_argument("--pg", default=os.environ.get("SIGVAULT_BENCH_PG", PG), help="PostgreSQL server URL")
    args = parser.parse_args()

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sigvault-cluster-bench-") as tmp, pg_database(args.pg) as url:
        root = Path(tmp)
        settings = Settings(home=root / "home", database_url=url)
        upgrade_database(settings)
        with Vault.open(settings) as vault:
            manifest, pairs = make_items(vault, root, args.persons, args.items, args.refs)
            model = vault.model_id
        print(f"model {model}; {args.items} items of {args.persons} persons; batches of {args.batch}, partitions of "
              f"{args.partition} rows; median of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
        if args.repeats:
            found = bench_rates(settings, manifest, root, args)
            print("\n| how | rows/s deciding | CPU ms per row |\n|---|---|---|")
            for label, rate in found["rates"].items():
                worker_ms, client_ms = found["cpu"][label]
                cost = f"{worker_ms:.1f} (workers) + {client_ms:.1f} (client)" if "cluster" in label else f"{worker_ms:.1f}"
                print(f"| {label} | {rate} | {cost} |")
            print(f"\nscheduling overhead: {found['overhead']:.2f} ms of wall time per no-op task ({args.tasks} tasks, 2 workers)")
            per_core = 1000 / found["cpu"]["Dask cluster, 1 worker (1 thread each)"][0]
            needed = 5_000_000 / (4 * 3600)
            print(
                f"one worker core decides {per_core:.0f} rows per CPU second; 5,000,000 items in 4 hours = {needed:.0f} "
                f"rows/s = {needed / per_core:.1f} worker cores kept busy"
            )
        if args.rows:
            mem = bench_client_memory(settings, root, pairs, args)
            print(
                f"\nclient, {mem['rows']:,}-row manifest ({mem['manifest_mb']} MB; 1 row in 1,000 decided, the others "
                f"name a missing file), partitions of {args.rows_partition}, 2 workers: peak RSS {mem['peak_rss_mb']:.0f} MB, "
                f"{mem['elapsed_s']:.0f} s end to end ({mem['rows'] / mem['decide_s']:,.0f} rows/s deciding, "
                f"{1000 * mem['decide_s'] / -(-mem['rows'] // args.rows_partition):.1f} ms per partition), "
                f"{mem['report_pages']} report pages, counts {json.dumps(mem['counts'])}"
            )
    print(f"\n({time.perf_counter() - t_start:.0f} s; this process's peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
