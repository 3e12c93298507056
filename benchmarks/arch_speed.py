"""CPU speed of candidate backbones, and of the runtimes that could ship the network (needs `.[train]`).

    python benchmarks/arch_speed.py                      # the table in the README (Model, architecture)
    python benchmarks/arch_speed.py --archs efficientnet_lite0 --repeats 50

For each timm architecture (built by ``training.model.build_model``, one input channel, the shipped
embedding head) on the product's canvas (1 x 128 x 256): parameters, ONNX size, and the median time of one
embedding at batch 1 on **one thread** under onnxruntime (what the product runs), TorchScript (traced,
frozen) and eager torch, plus the rate at batch 64 on two threads under onnxruntime. Runtimes are timed
interleaved, round by round, so a load change on the machine hits all of them alike. Also the time to
import each runtime in a new process (median of 5), which a cold ``sigvault verify`` pays.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCHS = ("efficientnet_lite0", "mobilenetv3_small_100", "mobilenetv3_large_100", "resnet18")


def _import_seconds(module: str, runs: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(runs)]
    return statistics.median(times)


def measure(arch: str, repeats: int) -> dict[str, float]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from training.export import onnx_graph
    from training.model import build_model

    model = build_model(arch, 256, False, 0.2).eval()
    x1 = torch.rand(1, 1, 128, 256)
    graph = onnx_graph(model, 128, 256)

    def session(threads: int) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])

    s1, s2 = session(1), session(2)
    with torch.no_grad():
        script = torch.jit.freeze(torch.jit.trace(model, x1))
    a1 = x1.numpy()
    a64 = np.random.default_rng(0).random((64, 1, 128, 256), dtype=np.float32)

    def onnx1() -> None:
        s1.run(None, {"canvas": a1})

    def ts1() -> None:
        torch.set_num_threads(1)
        with torch.no_grad():
            script(x1)

    def eager1() -> None:
        torch.set_num_threads(1)
        with torch.no_grad():
            model(x1)

    runs = {"onnx": onnx1, "torchscript": ts1, "eager": eager1}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for f in runs.values():  # warm-up
        for _ in range(3):
            f()
    for _ in range(repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    s2.run(None, {"canvas": a64})
    batch = []
    for _ in range(max(3, repeats // 10)):
        t = time.perf_counter()
        s2.run(None, {"canvas": a64})
        batch.append(time.perf_counter() - t)
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "onnx_mb": len(graph) / 1e6,
        **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in times.items()},
        "onnx_b64_per_s": 64 / statistics.median(batch),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    print("| backbone | parameters | ONNX size | onnxruntime, batch 1, 1 thread | TorchScript | eager torch "
          "| onnxruntime, batch 64, 2 threads |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        r = measure(arch, args.repeats)
        print(f"| {arch} | {r['params_m']:.2f} M | {r['onnx_mb']:.1f} MB | {r['onnx_ms']:.1f} ms | "
              f"{r['torchscript_ms']:.1f} ms | {r['eager_ms']:.1f} ms | {r['onnx_b64_per_s']:.0f} /s |", flush=True)
    print()
    print("| import in a new process (median of 5) | seconds |\n|---|---|")
    for module in ("onnxruntime", "torch"):
        print(f"| `import {module}` | {_import_seconds(module):.2f} |")


if __name__ == "__main__":
    main()
