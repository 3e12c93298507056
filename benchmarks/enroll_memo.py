"""Enrolment two ways, interleaved in one run: with and without the SVM fit memo, or with and without the
model's reference views.

    python benchmarks/enroll_memo.py                   # the memo: 40 enrol calls of 5 synthetic 900x300 scans
    python benchmarks/enroll_memo.py --persons 60 --size 1800x800
    python benchmarks/enroll_memo.py --compare views   # the model's views (turned and blurred) against none

``--compare memo``: calls alternate between the memo (``sigvault.scoring.SvmFits``, what ``Vault.enroll``
does) and none. ``--compare views``: calls alternate between two vaults, one with the model as shipped and
one with the same model (same onnxruntime session) whose scoring has no views; with views each reference is
preprocessed and embedded once more per view (:func:`sigvault.imaging.preprocess_views`) and its SVM fits
hold that many more positives. Both ways see the same machine load; prints the median time per call,
images/s of each and their ratio. Honours ``SIGVAULT_MODEL``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import bench_settings, model_dir, scan_png  # noqa: E402

from sigvault import scoring  # noqa: E402
from sigvault.embedder import load_embedder  # noqa: E402
from sigvault.vault import Vault  # noqa: E402


def _home(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"sigvault-{prefix}-"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=40)
    ap.add_argument("--size", default="900x300", help="scan size WxH")
    ap.add_argument("--compare", choices=("memo", "views"), default="memo")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    sets = [[scan_png(400 + p, i, size=(w, h)) for i in range(5)] for p in range(args.persons)]
    shipped = load_embedder(model_dir())
    if args.compare == "memo":
        names = ("with the memo", "without")
        vault = Vault.open(bench_settings(_home("memo")), embedder=shipped)
        plain = copy.copy(vault)
        plain._svm_fits = lambda: None  # type: ignore[method-assign]
        vaults = (vault, plain)
    else:
        names = (f"with views ({scoring.describe_views(shipped.scoring.views)})", "without views")
        no_views = copy.copy(shipped)  # the same onnxruntime session
        object.__setattr__(no_views, "scoring", dataclasses.replace(shipped.scoring, view_angles=(), view_blurs=()))
        vaults = (
            Vault.open(bench_settings(_home("views")), embedder=shipped),
            Vault.open(bench_settings(_home("plain")), embedder=no_views),
        )
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for v in vaults:
            v.enroll(f"warmup-{id(v)}", [scan_png(999, i, size=(w, h)) for i in range(2)])
        for k, images in enumerate(sets):
            t = time.perf_counter()
            vaults[k % 2].enroll(f"person-{k:03d}", images)
            times[names[k % 2]].append(time.perf_counter() - t)
    finally:
        for v in vaults:
            v.close()
    print(f"model: {shipped.model_id}")
    for name, ts in times.items():
        p50 = statistics.median(ts)
        print(f"enroll {name}: p50 {1000 * p50:.1f} ms per call of 5 {args.size} scans = {5 / p50:.1f} images/s (n={len(ts)})")
    print(f"ratio: {statistics.median(times[names[0]]) / statistics.median(times[names[1]]):.2f}")


if __name__ == "__main__":
    main()
