"""Benchmark ``sigvault audit`` against calling ``verify`` one item at a time, in one run.

    python benchmarks/audit_bench.py                      # 200 items, real model, a few settings
    python benchmarks/audit_bench.py --items 400 --settings 1x32,2x32,2x64 --repeats 3
    python benchmarks/audit_bench.py --rows 1000000       # streaming memory with a million-row manifest
    python benchmarks/audit_bench.py --documents colour   # also the same items signed on whole cheques, --locate

Settings ``WxB``: W worker processes read and preprocess images (``sigvault.vault.prepare``) a few
chunks ahead while the main process embeds B rows per batch, scores, logs and writes (W=1: no worker
process, everything in the main thread). A per-item breakdown (decode, preprocess, embed in batches,
and the rest: score + log + write) is measured in the same run, so a rate below the target can be
explained rather than guessed.

Items are synthetic signatures (``sigvault.synth``: genuine variants and imitations), enrolled with the
shipped model (``sigvault/weights/model.onnx``; ``--fake`` or a missing model file: a small fake embedder,
and the output says so). Every setting ``WxB`` (workers x batch size) audits the same manifest into a
fresh folder; the figure is the median over ``--repeats`` of items/s, both for the decision phase
(decode, preprocess, embed, score, log, write) and end to end (plus validation and report), with the CPU
milliseconds per item of this process and of the worker processes (steadier than items/s on a shared
machine). Peak RSS is ``resource.getrusage`` of this process.

``--documents RENDERING`` (``bitonal``, ``grey`` or ``colour``, ``sigvault.cheques``) also signs every questioned
item on a synthetic cheque of that rendering (the payee, amount and words by other synthetic writers) and audits
that manifest with ``--locate`` under each setting, beside the cropped signatures: what finding the signature on
a whole cheque, and decoding the larger image, cost an audit.

``--rows N`` writes an N-row manifest over a few image files: a fraction ``--decided`` of the rows is
decided normally, the others name a missing file (decided as an error at once, without decoding), so all
N rows stream through validation, chunking, both result files and the bounded review queue in minutes;
RSS is sampled during the run to show it stays flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import model_dir  # noqa: E402

from sigvault.audit import run_audit  # noqa: E402
from sigvault.config import Settings, sqlite_url  # noqa: E402
from sigvault.imaging import PreprocessSpec  # noqa: E402
from sigvault.scoring import ScoringConfig  # noqa: E402
from sigvault.synth import SyntheticWriter  # noqa: E402
from sigvault.vault import Vault, upgrade_database  # noqa: E402


@dataclass
class FakeEmbedder:
    """Stand-in when the shipped model is absent: block means projected to 32 dimensions."""

    dim: int = 32
    spec: PreprocessSpec = field(default_factory=lambda: PreprocessSpec(canvas_height=64, canvas_width=128))
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    model_id: str = "fake-bench"
    cohort: np.ndarray | None = None  # cosine scoring: no cohort (sigvault.embedder.Embedder)
    cohort_id: str | None = None

    def __post_init__(self) -> None:
        self._proj = np.random.default_rng(0).standard_normal((8 * 16, self.dim)).astype(np.float32)

    def embed(self, canvases: np.ndarray) -> np.ndarray:
        n, h, w = canvases.shape
        pooled = canvases.reshape(n, 8, h // 8, 16, w // 16).mean(axis=(2, 4)).reshape(n, -1)
        out = (pooled - pooled.mean(axis=1, keepdims=True)) @ self._proj
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_cpu_s() -> float:
    """User + system CPU seconds of the terminated, waited-for child processes (audit workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_vault(root: Path, fake: bool) -> tuple[Vault, str]:
    settings = Settings(home=root / "home", database_url=sqlite_url(root / "home" / "sigvault.db"))
    upgrade_database(settings)
    chosen = model_dir()  # SIGVAULT_MODEL, as the product reads it; nothing else of the environment
    model = chosen or ROOT / "sigvault" / "weights" / "model.onnx"
    if fake or not model.exists():
        why = "--fake" if fake else f"{model} is absent"
        return Vault.open(settings, embedder=FakeEmbedder()), f"FAKE embedder ({why})"
    from sigvault.embedder import load_embedder

    embedder = load_embedder(chosen)
    return Vault.open(settings, embedder=embedder), f"{'model' if chosen else 'shipped model'} {embedder.model_id}"


def make_items(vault: Vault, root: Path, persons: int, items: int, refs: int) -> tuple[Path, list[tuple[str, Path]]]:
    """Enroll ``persons`` synthetic writers and write a manifest of ``items`` questioned signatures."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    writers = [SyntheticWriter(1000 + p) for p in range(persons)]
    for p, w in enumerate(writers):
        paths = []
        for j in range(refs):
            path = images / f"p{p}-ref{j}.png"
            w.genuine(j).save(path, format="PNG", compress_level=1)
            paths.append(path)
        vault.enroll(f"p{p}", paths)
    pairs = []
    lines = ["item_id,person,image,amount"]
    for i in range(items):
        p = i % persons
        path = images / f"q{i}.png"
        im = writers[p].forgery(i) if i % 5 == 0 else writers[p].genuine(100 + i)
        im.save(path, format="PNG", compress_level=1)
        pairs.append((f"p{p}", path))
        lines.append(f"ITEM-{i:07d},p{p},images/{path.name},{(i * 977) % 50000}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, pairs


def make_documents(root: Path, pairs: list[tuple[str, Path]], rendering: str) -> Path:
    """A manifest of the same items, each signed on a synthetic cheque of ``rendering`` (seeded by the item)."""
    from sigvault import cheques

    lines = ["item_id,person,image,amount"]
    for i, (person, path) in enumerate(pairs):
        with Image.open(path) as im:
            sig = np.asarray(im.convert("L"))
        hands = [np.asarray(SyntheticWriter(5000 + 3 * i + j).genuine(0)) for j in range(3)]
        doc = cheques.render(sig, hands, rendering, i)
        target = root / "images" / f"c{i}{doc.suffix}"
        target.write_bytes(doc.data)
        lines.append(f"ITEM-{i:07d},{person},images/{target.name},{(i * 977) % 50000}")
    manifest = root / f"manifest-{rendering}.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def breakdown(vault: Vault, pairs: list[tuple[str, Path]], batch: int) -> dict[str, float]:
    """Milliseconds per item of each stage, measured one stage at a time in this process."""
    from sigvault import imaging

    spec = vault.embedder.spec
    paths = [p for _, p in pairs]
    t = time.perf_counter()
    greys = [imaging.read_image(p) for p in paths]
    decode = (time.perf_counter() - t) / len(paths)
    t = time.perf_counter()
    canvases = [imaging.preprocess(g, spec) for g in greys]
    pre = (time.perf_counter() - t) / len(paths)
    stack = np.stack(canvases)
    vault.embedder.embed(stack[:batch])
    t = time.perf_counter()
    for start in range(0, len(stack), batch):
        vault.embedder.embed(stack[start : start + batch])
    embed = (time.perf_counter() - t) / len(paths)
    t = time.perf_counter()
    for c in canvases[:40]:
        vault.embedder.embed(c[None])
    embed1 = (time.perf_counter() - t) / min(40, len(canvases))
    return {"decode": 1000 * decode, "preprocess": 1000 * pre, "embed": 1000 * embed, "embed_b1": 1000 * embed1}


def bench_throughput(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sigvault-audit-bench-") as tmp:
        root = Path(tmp)
        vault, model = open_vault(root, args.fake)
        t = time.perf_counter()
        manifest, pairs = make_items(vault, root, args.persons, args.items, args.refs)
        print(f"model: {model}")
        print(
            f"setup: {args.persons} persons x {args.refs} references, {args.items} items ({time.perf_counter() - t:.1f} s)"
        )
        rows = []
        # verify, one item at a time, in-process (warm: one call first)
        vault.verify(*pairs[0])
        rates, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            for person, path in pairs:
                vault.verify(person, path)
            rates.append(len(pairs) / (time.perf_counter() - t))
            cpu.append(1000 * (time.process_time() - c) / len(pairs))
        rate = statistics.median(rates)
        rows.append(("verify, one at a time", rate, rate, statistics.median(cpu), 0.0))
        runs = [("audit", manifest, None)]
        if args.documents:
            from sigvault.documents import DocumentOptions

            runs.append((f"on {args.documents} cheques", make_documents(root, pairs, args.documents), DocumentOptions(locate=True)))
        for name, this_manifest, documents in runs:
            for setting in args.settings.split(","):
                workers, batch = (int(x) for x in setting.lower().split("x"))
                decide, e2e, main_cpu, worker_cpu = [], [], [], []
                for r in range(args.repeats):
                    c, children = time.process_time(), children_cpu_s()
                    out = root / f"out-{len(rows)}-{r}"
                    summary = run_audit(
                        vault, this_manifest, out, workers=workers, batch_size=batch, documents=documents
                    )
                    main_cpu.append(1000 * (time.process_time() - c) / summary.rows)
                    worker_cpu.append(1000 * (children_cpu_s() - children) / summary.rows)  # reaped at the pool's end
                    decide.append(summary.items_per_s)
                    e2e.append(summary.rows / summary.elapsed_s)
                rows.append(
                    (
                        f"{name} workers={workers} batch={batch}",
                        statistics.median(decide),
                        statistics.median(e2e),
                        statistics.median(main_cpu),
                        statistics.median(worker_cpu),
                    )
                )
        print(
            f"\n{'':40}{'items/s (decide)':>18}{'items/s (end to end)':>22}{'CPU ms/item: main':>20}{'workers':>9}"
            f"   median of {args.repeats}"
        )
        for label, a, b, main_ms, workers_ms in rows:
            print(f"{label:40}{a:18.1f}{b:22.1f}{main_ms:20.2f}{workers_ms:9.2f}")
        batch = max(int(s.lower().split("x")[1]) for s in args.settings.split(","))
        parts = breakdown(vault, pairs, batch)
        serial = [r for r in rows if r[0].startswith("audit workers=1 ")]
        print(f"\nper item, one stage at a time in this process (embed batch {batch}, {vault.embedder.model_id}):")
        print(
            f"  decode {parts['decode']:.2f} ms, preprocess {parts['preprocess']:.2f} ms, "
            f"embed {parts['embed']:.2f} ms (batch 1: {parts['embed_b1']:.2f} ms)"
        )
        if serial:
            total = 1000 / serial[0][1]
            rest = total - parts["decode"] - parts["preprocess"] - parts["embed"]
            print(f"  score + log + write (audit workers=1, per item, minus the above): {rest:.2f} ms")
        cpu = parts["decode"] + parts["preprocess"] + parts["embed"]
        print(
            f"  decode + preprocess + embed = {cpu:.2f} ms of CPU per item: at most ~{2000 / cpu:.0f} items/s on 2 "
            "idle cores if every stage ran in parallel perfectly (the embedder itself uses 2 threads)"
        )
        print(f"\npeak RSS {peak_rss_mb():.0f} MB")
        vault.close()


def bench_rows(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sigvault-audit-rows-") as tmp:
        root = Path(tmp)
        vault, model = open_vault(root, args.fake)
        _, pairs = make_items(vault, root, 4, 8, args.refs)
        manifest = root / "million.csv"
        every = max(1, round(1 / args.decided)) if args.decided > 0 else 0
        t = time.perf_counter()
        with open(manifest, "w") as fh:
            fh.write("item_id,person,image,amount,branch\n")
            for i in range(args.rows):
                person, path = pairs[(i // every if every else i) % len(pairs)]
                image = f"images/{path.name}" if every and i % every == 0 else "images/missing.png"
                fh.write(f"ITEM-{i:08d},{person},{image},{(i * 977) % 50000}.00,branch-{i % 97}\n")
        print(f"model: {model}")
        print(
            f"manifest: {args.rows:,} rows, {manifest.stat().st_size / 2**20:.0f} MB ({time.perf_counter() - t:.1f} s); "
            f"1 row in {every or 'none'} decided, the others name a missing file"
        )
        samples: list[tuple[int, float]] = []
        last = [0.0]

        def progress(p: object) -> None:
            now = time.perf_counter()
            if now - last[0] > 5:
                last[0] = now
                samples.append((p.done, current_rss_mb()))  # type: ignore[attr-defined]

        base = current_rss_mb()
        summary = run_audit(
            vault, manifest, root / "out", workers=args.workers, batch_size=args.batch, progress=progress
        )
        print(
            f"audit: {summary.rows:,} rows in {summary.elapsed_s:.0f} s ({summary.rows / summary.elapsed_s:,.0f} rows/s), "
            f"counts {json.dumps(summary.counts)}"
        )
        print(
            f"report: {summary.report_items} items in {summary.report_pages} page(s), first page "
            f"{(root / 'out' / 'report.html').stat().st_size / 2**20:.1f} MB"
        )
        print(
            "RSS while streaming (rows done: MB): "
            + ", ".join(f"{d:,}: {m:.0f}" for d, m in samples[:: max(1, len(samples) // 10)])
        )
        print(f"RSS before the audit {base:.0f} MB, peak RSS {peak_rss_mb():.0f} MB")
        vault.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--persons", type=int, default=20)
    parser.add_argument("--refs", type=int, default=4)
    parser.add_argument("--settings", default="1x32,2x32,2x64,3x32", help="comma-separated WORKERSxBATCH")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fake", action="store_true", help="use the fake embedder even if the model exists")
    parser.add_argument("--rows", type=int, default=0, help="streaming-memory mode with this many rows")
    parser.add_argument("--documents", choices=("bitonal", "grey", "colour"), default=None,
                        help="also audit the items signed on whole cheques of this rendering, with --locate")
    parser.add_argument("--decided", type=float, default=0.001, help="--rows: fraction of rows really decided")
    parser.add_argument("--workers", type=int, default=2, help="--rows: workers")
    parser.add_argument("--batch", type=int, default=32, help="--rows: batch size")
    args = parser.parse_args()
    if args.rows:
        bench_rows(args)
    else:
        bench_throughput(args)


if __name__ == "__main__":
    main()
