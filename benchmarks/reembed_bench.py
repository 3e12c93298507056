"""`Vault.reembed` after a model change: the whole run and the time it holds the write lock.

    python benchmarks/reembed_bench.py                 # 20 persons x 5 synthetic 900x300 scans, 3 runs
    python benchmarks/reembed_bench.py --persons 100 --size 1800x800

Enrols the persons once with the loaded model (``SIGVAULT_MODEL`` honoured), then, for each run, marks every
stored vector as another model's (so that ``reembed`` redoes everything: every image read, preprocessed and
embedded with its reference views, every threshold refitted) and times ``reembed``, and within it the write
transactions (``sigvault.db.engine.transaction(..., write=True)``: on SQLite the time other writers, a
``verify`` logging its decision among them, wait). Prints the median of the runs, then the peak of the memory
Python and numpy allocate during one more ``reembed`` (``tracemalloc``, in a run of its own: tracing slows it).
Run it at two vault sizes to see what grows with the vault: the difference of the peaks over the difference of
the references.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import bench_settings, scan_png  # noqa: E402
from sqlalchemy import text  # noqa: E402

from sigvault import reembed as reembed_module  # noqa: E402
from sigvault.vault import Vault  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=20)
    ap.add_argument("--size", default="900x300", help="WxH of the synthetic scans")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    home = Path(tempfile.mkdtemp(prefix="sigvault-reembed-"))
    writes: list[float] = []
    real = reembed_module.transaction

    @contextlib.contextmanager
    def timed(engine, *, write: bool = False) -> Iterator:  # noqa: ANN001
        t = time.perf_counter()
        with real(engine, write=write) as conn:
            yield conn
        if write:
            writes.append(time.perf_counter() - t)

    totals, locked = [], []
    with Vault.open(bench_settings(home)) as vault:
        for p in range(args.persons):
            vault.enroll(f"person-{p:03d}", [scan_png(300 + p, i, size=(w, h)) for i in range(5)])
        for _ in range(args.runs):
            with vault.engine.begin() as conn:
                conn.execute(text("UPDATE refs SET model_id = 'another-model'"))
            writes.clear()
            reembed_module.transaction = timed  # type: ignore[assignment]
            try:
                t = time.perf_counter()
                result = vault.reembed()
                totals.append(time.perf_counter() - t)
            finally:
                reembed_module.transaction = real
            locked.append(sum(writes))
        with vault.engine.begin() as conn:
            conn.execute(text("UPDATE refs SET model_id = 'another-model'"))
        tracemalloc.start()
        vault.reembed()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    n = result.n_references
    print(
        f"reembed {n} references ({args.persons} persons, {args.size} scans), median of {args.runs}: "
        f"{statistics.median(totals):.2f} s in all, {statistics.median(locked):.2f} s holding the write lock; "
        f"peak memory allocated during reembed {peak / 2**20:.2f} MB"
    )


if __name__ == "__main__":
    main()
