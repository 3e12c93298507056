"""Speed of finding the signature on a whole cheque (``sigvault.locate.locate_signature``). Prints medians.

    python benchmarks/locate_bench.py               # 30 cheques per rendering, 5 timed runs of each
    python benchmarks/locate_bench.py --cheques 60

The cheques are drawn by ``sigvault.cheques.render`` around the project's synthetic signatures (``sigvault.synth``,
no dataset scan): 1200 x 550 pixels, a personal cheque at 200 dpi, as bitonal G4 TIFF, grey JPEG (100-200 dpi,
so 600 to 1200 pixels wide) and colour JPEG. The image is decoded once, outside the timing: the figure is
the locator's own time per document, the issue's target being 20 ms at 200 dpi. Each rendering is timed with
OpenCV's default thread pool and again with one thread (``cv2.setNumThreads(1)``), since on a machine whose cores
are busy with other work OpenCV's threads wait on each other; the ratio of the two medians is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sigvault import cheques  # noqa: E402
from sigvault.errors import NoSignatureFoundError  # noqa: E402
from sigvault.imaging import read_image  # noqa: E402
from sigvault.locate import locate_signature  # noqa: E402
from sigvault.synth import SyntheticWriter  # noqa: E402


def documents(rendering: str, count: int) -> list[np.ndarray]:
    """``count`` decoded cheques of one rendering, each signed by another synthetic writer (seeded)."""
    out = []
    for k in range(count):
        sig = np.asarray(SyntheticWriter(k).genuine(0))
        others = [np.asarray(SyntheticWriter(1000 + 3 * k + j).genuine(0)) for j in range(3)]
        out.append(read_image(cheques.render(sig, others, rendering, k).data))
    return out


def per_document_ms(docs: list[np.ndarray], runs: int) -> float:
    """Median over documents of each document's fastest of ``runs`` timed calls, in ms."""
    times = []
    for grey in docs:
        best = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            with contextlib.suppress(NoSignatureFoundError):  # a refusal costs the same work
                locate_signature(grey)
            best = min(best, time.perf_counter() - t0)
        times.append(best)
    return 1000 * statistics.median(times)


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cheques", type=int, default=30, help="cheques per rendering")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per cheque (the fastest counts)")
    args = ap.parse_args()
    default_threads = cv2.getNumThreads()
    print(f"locate_signature, {args.cheques} synthetic cheques per rendering, fastest of {args.runs} calls each")
    print(f"| rendering | size | median ms, OpenCV threads ({default_threads}) | median ms, 1 thread | ratio |")
    print("|---|---|---|---|---|")
    for rendering in cheques.RENDERINGS:
        docs = documents(rendering, args.cheques)
        locate_signature(docs[0])  # imports and first-call set-up outside the timing
        cv2.setNumThreads(default_threads)
        pooled = per_document_ms(docs, args.runs)
        cv2.setNumThreads(1)
        single = per_document_ms(docs, args.runs)
        cv2.setNumThreads(default_threads)
        sizes = sorted({f"{d.shape[1]}x{d.shape[0]}" for d in docs})
        size = sizes[0] if len(sizes) == 1 else f"{sizes[0]} .. {sizes[-1]}"
        print(f"| {rendering} | {size} | {pooled:.1f} | {single:.1f} | {pooled / single:.2f} |", flush=True)


if __name__ == "__main__":
    main()
