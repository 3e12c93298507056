"""Memory and speed of the embedder by inner batch size (``OnnxEmbedder.batch_size``), one process per size.

    python benchmarks/embed_batch.py                 # sizes 1 8 16 32 64, 256 canvases, 2 threads
    SIGVAULT_MODEL=DIR python benchmarks/embed_batch.py --sizes 8 64

onnxruntime keeps the activations of the largest batch it has run in its memory arena, so the peak RSS of
a process that embeds grows with the batch, while throughput stops growing after a few images per batch.
Each size runs in a fresh process (peak RSS is per process): it loads the model, embeds the same canvases
in batches of that size once to warm up, then ``--rounds`` times; prints the process's peak RSS and the
median signatures/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def one(size: int, n: int, rounds: int) -> dict:
    from run import model_dir

    from sigvault.embedder import load_embedder

    emb = load_embedder(model_dir(), threads=2)
    emb.batch_size = size
    x = np.random.default_rng(0).random((n, emb.spec.canvas_height, emb.spec.canvas_width)).astype(np.float32)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emb.embed(x)
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        emb.embed(x)
        rates.append(n / (time.perf_counter() - t))
    return {"size": size, "model": emb.model_id, "rss_loaded_mb": loaded,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "per_s": statistics.median(rates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    ap.add_argument("--canvases", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.canvases, args.rounds)))
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.canvases} canvases, median of {args.rounds}")
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--canvases", str(args.canvases),
                              "--rounds", str(args.rounds)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"batch {size:3d}: {r['per_s']:6.0f} signatures/s, peak RSS {r['peak_rss_mb']:5.0f} MB "
              f"(after loading the model {r['rss_loaded_mb']:.0f} MB)  [{r['model']}]", flush=True)


if __name__ == "__main__":
    main()
