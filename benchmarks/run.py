"""Speed figures of the product on this machine (``make bench``). Prints medians measured in one run.

    python benchmarks/run.py                 # model, preprocessing, vault and CLI figures
    python benchmarks/run.py --large 1000000 # also verify in a vault of 1,000,000 references
    SIGVAULT_MODEL=DIR python benchmarks/run.py   # another model (every benchmark here honours it)

Inputs are synthetic signatures from ``sigvault.synth`` (no dataset scan), with paper noise, saved as PNG
and decoded from bytes every time, at two sizes of a 300-dpi scan: 1800x800 pixels (a 6 x 2.7 inch crop,
the pessimistic case: most of the time goes into inflating its PNG) and 900x300 (a 3 x 1 inch signature box,
the size of a cheque's signature line; the scans in ``shared/datasets`` are smaller still, <= 768 px).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sigvault import imaging  # noqa: E402
from sigvault.config import Settings  # noqa: E402
from sigvault.embedder import load_embedder  # noqa: E402
from sigvault.synth import SyntheticWriter  # noqa: E402


def ms(values: list[float]) -> str:
    return f"p50 {1000 * statistics.median(values):.2f} ms (p90 {1000 * np.percentile(values, 90):.2f}, n={len(values)})"


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def scan_png(writer: int, i: int, forged: bool = False, size: tuple[int, int] = (1800, 800)) -> bytes:
    w = SyntheticWriter(writer)
    im = (w.forgery(i) if forged else w.genuine(i)).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.float32) + np.random.default_rng(i).normal(0, 3, (size[1], size[0]))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


SIZES = {"": (1800, 800), "_box": (900, 300)}  # figure-name suffix -> scan size


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def model_dir() -> Path | None:
    """The model to measure: ``SIGVAULT_MODEL`` if set, as the product reads it, else the shipped one. Only
    that variable is read: the benchmarks' vaults ignore the rest of the environment (a database URL there
    must not be written to)."""
    value = os.environ.get("SIGVAULT_MODEL")
    return Path(value) if value else None


def bench_settings(home: Path) -> Settings:
    """Settings of a benchmark's vault in ``home``: the embedded default and :func:`model_dir`."""
    return Settings.resolve(home=home, env={}, model=model_dir())


def bench_model(figures: dict) -> None:
    emb1 = load_embedder(model_dir(), threads=1)
    emb2 = load_embedder(model_dir(), threads=2)
    scans = [scan_png(w, i) for w in range(4) for i in range(5)]
    spec = emb1.spec
    for s in scans[:3]:
        imaging.load_canvas(s, spec)
    t_read = timed(lambda: [imaging.read_image(s) for s in scans], 3)
    greys = [imaging.read_image(s) for s in scans]
    t_pre = []
    for g in greys * 3:
        t = time.perf_counter()
        imaging.preprocess(g, spec)
        t_pre.append(time.perf_counter() - t)
    t_shrink = []
    for g in greys * 3:
        t = time.perf_counter()
        imaging._shrink(g, spec.work_max_side)
        t_shrink.append(time.perf_counter() - t)
    inks = [imaging._locate_ink(g, spec, "scan", "benchmark") for g in greys]
    t_stroke = []
    for ink in inks * 3:
        y0, y1, x0, x1 = ink.box
        t = time.perf_counter()
        imaging._stroke_width(ink.work[y0:y1, x0:x1], ink.mask)
        t_stroke.append(time.perf_counter() - t)
    canvases = np.stack([imaging.preprocess(g, spec) for g in greys])
    print(f"decode 1800x800 PNG: p50 {1000 * statistics.median(t_read) / len(scans):.2f} ms per image")
    print(f"preprocess 1800x800 scan: {ms(t_pre)}")
    print(f"  of which the shrink to {spec.work_max_side} px (PIL BOX, the largest stage): {ms(t_shrink)}")
    print(f"  of which the strokes' width (imaging.InkCapture.stroke, for the capture guard): {ms(t_stroke)}")
    figures["preprocess_ms_p50"] = 1000 * statistics.median(t_pre)
    for name, e in (("1 thread", emb1), ("2 threads", emb2)):
        e.embed(canvases[:1])
        t = timed(lambda e=e: e.embed(canvases[:1]), 40)
        print(f"embed batch 1, {name}: {ms(t)}")
        figures[f"embed_b1_ms_p50_{name[0]}t"] = 1000 * statistics.median(t)
    batch = np.concatenate([canvases] * 4)[:64]
    t = timed(lambda: emb2.embed(batch), 5)
    print(f"embed batch 64, 2 threads: {64 / statistics.median(t):.0f} signatures/s")
    figures["embed_batched_per_s"] = 64 / statistics.median(t)

    def pipeline(pngs: list[bytes]) -> None:
        with ThreadPoolExecutor(2) as pool:
            cs = list(pool.map(lambda b: imaging.load_canvas(b, spec), pngs))
        emb2.embed(np.stack(cs))

    box = [scan_png(w, i, size=SIZES["_box"]) for w in range(4) for i in range(5)]
    for suffix, work in (("", scans * 4), ("_box", box * 4)):
        t = timed(lambda work=work: pipeline(work), 3)
        rate = len(work) / statistics.median(t)
        print(f"decode + preprocess + embed, batched ({len(work)} {size_label(SIZES[suffix])} scans, 2 threads): {rate:.0f} signatures/s")
        figures[f"pipeline_per_s{suffix}"] = rate
    print(f"model: {emb1.model_id}, {Path(emb1.path).stat().st_size / 1e6:.1f} MB, "
          f"{emb1.card['architecture'].get('parameters', '?')} parameters")


def bench_vault(figures: dict) -> None:
    from sigvault.vault import Vault

    home = Path(tempfile.mkdtemp(prefix="sigvault-bench-"))
    settings = bench_settings(home)
    persons = 20
    cold_question: tuple[str, bytes] | None = None  # for the cold command: a 1800x800 scan
    with Vault.open(settings) as vault:
        vault.enroll("warmup", [scan_png(999, i) for i in range(2)])
        for n, (suffix, size) in enumerate(SIZES.items()):
            label = size_label(size)
            first = 100 * (n + 1)  # writers 100.. for the first size, 200.. for the second
            enroll_sets = {f"person-{first + p:03d}": [scan_png(first + p, i, size=size) for i in range(5)]
                           for p in range(persons)}
            questioned = [(f"person-{first + p:03d}", scan_png(first + p, 10 + k, size=size))
                          for p in range(persons) for k in range(3)]
            t = time.perf_counter()
            for person, images in enroll_sets.items():
                vault.enroll(person, images)
            dt = time.perf_counter() - t
            rate = persons * 5 / dt
            print(f"enroll, {label} scans: {rate:.1f} images/s ({persons} persons x 5 scans, one enroll call per person)")
            figures[f"enroll_per_s{suffix}"] = rate
            vault.verify(*questioned[0])
            cold_question = cold_question or questioned[0]
            t_v = []
            for person, data in questioned:
                t = time.perf_counter()
                vault.verify(person, data)
                t_v.append(time.perf_counter() - t)
            print(f"verify in-process, warm, {label} scan (decode + preprocess + embed + score + log): {ms(t_v)}")
            figures[f"verify_warm_ms_p50{suffix}"] = 1000 * statistics.median(t_v)
        t_i = timed(lambda: vault.identify(questioned[0][1], top=5), 20)
        print(f"identify top 5 among {2 * persons * 5 + 2} references: {ms(t_i)}")
    # command-line figures
    assert cold_question is not None
    q = home / "questioned.png"
    q.write_bytes(cold_question[1])
    exe = [sys.executable, "-m", "sigvault"]
    env = dict(os.environ, SIGVAULT_HOME=str(home))
    env.pop("SIGVAULT_DATABASE_URL", None)
    t_help = timed(lambda: subprocess.run([*exe, "--help"], capture_output=True, env=env, check=True), 5)
    print(f"`sigvault --help` wall: {ms(t_help)}")
    figures["help_s_p50"] = statistics.median(t_help)
    t_cold = timed(lambda: subprocess.run([*exe, "verify", cold_question[0], str(q)], capture_output=True, env=env, check=True), 5)
    print(f"cold `sigvault verify` wall (new process): {ms(t_cold)}")
    figures["cold_verify_s_p50"] = statistics.median(t_cold)


def bench_large(n_refs: int, figures: dict) -> None:
    """A vault of n_refs references (5 per person) inserted in bulk; verify must not scan them all."""
    from sqlalchemy import insert

    from sigvault.db import models
    from sigvault.db.models import utcnow
    from sigvault.scoring import person_threshold
    from sigvault.vault import Vault

    home = Path(tempfile.mkdtemp(prefix="sigvault-bench-large-"))
    settings = bench_settings(home)
    with Vault.open(settings) as vault:
        emb = vault.embedder
        model_id, dim, cfg = emb.model_id, emb.dim, emb.scoring
        vault.enroll("real-person", [scan_png(7, i) for i in range(5)])
        rng = np.random.default_rng(0)
        persons = n_refs // 5
        t0 = time.perf_counter()
        now = utcnow()
        chunk = 20_000
        with vault.engine.begin() as conn:
            for start in range(0, persons, chunk):
                ids = range(start, min(persons, start + chunk))
                conn.execute(insert(models.Person), [{"id": 10 + p, "person_id": f"bulk-{p:07d}", "created_at": now} for p in ids])
                vecs = rng.standard_normal((len(ids) * 5, dim)).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                conn.execute(insert(models.Reference), [
                    {"person_pk": 10 + p, "sha256": f"{p:058d}{k:06d}", "source_name": None, "model_id": model_id,
                     "embedding": vecs[j * 5 + k].astype("<f4").tobytes(), "created_at": now}
                    for j, p in enumerate(ids) for k in range(5)])
                thr = person_threshold(vecs[:5], cfg, emb.cohort)
                conn.execute(insert(models.Threshold), [
                    {"person_pk": 10 + p, "value": thr.value, "method": thr.method, "n_references": 5, "details": {},
                     "model_id": model_id, "is_override": False, "set_at": now} for p in ids])
        print(f"large vault: inserted {persons * 5} references of {persons} persons in {time.perf_counter() - t0:.0f} s")
        for suffix, size in SIZES.items():
            data = scan_png(7, 20, size=size)
            vault.verify("real-person", data)
            t_v = timed(lambda data=data: vault.verify("real-person", data), 30)
            print(f"verify with {persons * 5 + 5} references in the vault, warm, {size_label(size)} scan: {ms(t_v)}")
            figures[f"verify_large_ms_p50{suffix}"] = 1000 * statistics.median(t_v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", type=int, default=0, help="also measure verify in a vault of this many references")
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = ap.parse_args()
    figures: dict = {"cpus": os.cpu_count()}
    bench_model(figures)
    bench_vault(figures)
    if args.large:
        bench_large(args.large, figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
