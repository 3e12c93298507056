"""Enrolment with and without the SVM fit memo (``sigvault.scoring.SvmFits``), interleaved in one run.

    python benchmarks/enroll_memo.py              # 40 enrol calls of 5 synthetic 900x300 scans
    python benchmarks/enroll_memo.py --persons 60 --size 1800x800

Calls alternate between the memo (what ``Vault.enroll`` does) and none, so both see the same machine load;
prints the median time per call and images/s of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import bench_settings, scan_png  # noqa: E402

from sigvault.vault import Vault  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=40)
    ap.add_argument("--size", default="900x300", help="scan size WxH")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    sets = [[scan_png(400 + p, i, size=(w, h)) for i in range(5)] for p in range(args.persons)]
    times: dict[str, list[float]] = {"with the memo": [], "without": []}
    with Vault.open(bench_settings(Path(tempfile.mkdtemp(prefix="sigvault-memo-")))) as vault:
        vault.enroll("warmup", [scan_png(999, i) for i in range(2)])
        memo = vault._svm_fits
        for k, images in enumerate(sets):
            mode = "with the memo" if k % 2 == 0 else "without"
            vault._svm_fits = memo if k % 2 == 0 else (lambda: None)  # type: ignore[method-assign]
            t = time.perf_counter()
            vault.enroll(f"person-{k:03d}", images)
            times[mode].append(time.perf_counter() - t)
        print(f"model: {vault.embedder.model_id}")
    for mode, ts in times.items():
        p50 = statistics.median(ts)
        print(f"enroll {mode}: p50 {1000 * p50:.1f} ms per call of 5 {args.size} scans = {5 / p50:.1f} images/s (n={len(ts)})")


if __name__ == "__main__":
    main()
