"""Datasets in the project layout, writer-disjoint splits, a canvas cache and the batch sampler.

Layout: ``<root>/<dataset>/<writer>/{genuine,forged}/*``. A writer key is ``"<dataset>/<writer>"``.
Images are preprocessed once with the product's own ``sigvault.imaging.load_canvas`` and cached (outside
the repository) keyed by the preprocessing spec fingerprint; augmentation happens on the canvases.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sigvault.imaging import PreprocessSpec, load_canvas

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}


@dataclass(frozen=True)
class Sample:
    writer: str  # "<dataset>/<writer>"
    forged: bool
    path: Path


def scan_dataset(root: Path, dataset: str) -> list[Sample]:
    """Every image of one dataset folder, in a stable order."""
    out: list[Sample] = []
    base = root / dataset
    for wdir in sorted(p for p in base.iterdir() if p.is_dir()):
        for kind in ("genuine", "forged"):
            kdir = wdir / kind
            if not kdir.is_dir():
                continue
            for f in sorted(kdir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    out.append(Sample(f"{dataset}/{wdir.name}", kind == "forged", f))
    return out


@dataclass
class CanvasSet:
    """Preprocessed canvases (n, H, W) float16 with their writer keys and forged flags; ``coarse``, when made
    (:func:`coarse_canvases`), the same images as a coarser capture would give them, row for row."""

    canvases: np.ndarray
    writers: np.ndarray  # (n,) str
    forged: np.ndarray  # (n,) bool
    coarse: np.ndarray | None = None  # (n, H, W) float16
    captured: np.ndarray | None = None  # (copies, n, H, W) float16: each scan through random captures (capture_canvases)

    def subset(self, writers: set[str]) -> CanvasSet:
        keep = np.isin(self.writers, sorted(writers))
        coarse = None if self.coarse is None else self.coarse[keep]
        captured = None if self.captured is None else self.captured[:, keep]
        return CanvasSet(self.canvases[keep], self.writers[keep], self.forged[keep], coarse, captured)


def _files_key(samples: list[Sample], spec: PreprocessSpec, extra: str = "") -> str:
    """Cache key of canvases made from ``samples`` (paths and sizes) with ``spec``, and ``extra`` settings."""
    files = "\n".join(f"{s.path}|{s.path.stat().st_size}" for s in samples)
    return hashlib.sha256((files + spec.fingerprint() + extra).encode()).hexdigest()[:16]


def _save_npz(cache: Path, **arrays: np.ndarray) -> None:
    """Write a cache file whole or not at all (a temporary file renamed over it)."""
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(cache)


def load_canvases(samples: list[Sample], spec: PreprocessSpec, cache_dir: Path) -> CanvasSet:
    """Preprocess every sample (cached by file list + spec)."""
    cache = cache_dir / f"canvases-{_files_key(samples, spec)}.npz"
    if cache.exists():
        z = np.load(cache)
        return CanvasSet(z["canvases"], z["writers"], z["forged"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((len(samples), spec.canvas_height, spec.canvas_width), dtype=np.float16)
    for i, s in enumerate(samples):
        arr[i] = load_canvas(s.path, spec)
        if i % 500 == 0:
            log.info("preprocessed %d/%d", i, len(samples))
    writers = np.array([s.writer for s in samples])
    forged = np.array([s.forged for s in samples])
    _save_npz(cache, canvases=arr, writers=writers, forged=forged)
    return CanvasSet(arr, writers, forged)


COARSE_SEED = 1234  # the draw of each scan's coarse-capture factor


def coarse_factors(n: int, low: float, high: float) -> np.ndarray:
    """Each scan's shrink factor for its coarse capture: log-uniform in [low, high], a fixed seeded draw."""
    rng = np.random.default_rng(COARSE_SEED)
    return np.exp(rng.uniform(np.log(low), np.log(high), size=n))


def coarse_canvas(grey: np.ndarray, factor: float, spec: PreprocessSpec, name: str) -> np.ndarray | None:
    """The canvas of a scan captured ``factor`` times as coarsely (each side shrunk by area averaging, as a
    sensor of larger pixels integrates the light), or None if the coarse scan holds no ink the
    preprocessing accepts (a thin pen averaged away)."""
    from PIL import Image

    from sigvault.errors import NoInkError
    from sigvault.imaging import preprocess

    h, w = grey.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX), dtype=np.uint8)
    try:
        return preprocess(small, spec, name=name)
    except NoInkError:
        return None


def coarse_canvases(
    samples: list[Sample], data: CanvasSet, spec: PreprocessSpec, cache_dir: Path, low: float, high: float
) -> CanvasSet:
    """``data`` (the canvases of ``samples``, row for row) with its ``coarse`` canvases: each scan shrunk by its
    :func:`coarse_factors` factor then preprocessed, as a coarser scanner (or a smaller signature box) would
    give it: enlarged into the canvas, softer and thicker strokes. Where the coarse scan has no usable ink the
    scan's own canvas stands in. Cached like the canvases, keyed by the files, spec and factors."""
    from sigvault.imaging import read_image

    factors = coarse_factors(len(samples), low, high)
    cache = cache_dir / f"coarse-{_files_key(samples, spec, f'|{low}|{high}|{COARSE_SEED}')}.npz"
    if cache.exists():
        return CanvasSet(data.canvases, data.writers, data.forged, np.load(cache)["coarse"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr = data.canvases.copy()
    missing = 0
    for i, (s, f) in enumerate(zip(samples, factors, strict=True)):
        c = coarse_canvas(read_image(s.path), float(f), spec, str(s.path))
        if c is None:
            missing += 1
        else:
            arr[i] = c
        if i % 500 == 0:
            log.info("coarse captures %d/%d", i, len(samples))
    log.info("coarse captures: %d of %d scans kept their own canvas (no ink left at their factor)", missing, len(samples))
    _save_npz(cache, coarse=arr)
    return CanvasSet(data.canvases, data.writers, data.forged, arr)


CAPTURE_SEED = 4321  # the draw of each scan's captures


def capture_canvases(
    samples: list[Sample], data: CanvasSet, spec: PreprocessSpec, cache_dir: Path, kinds: list[str], copies: int
) -> CanvasSet:
    """``data`` (the canvases of ``samples``, row for row) with ``copies`` captured canvases of each scan: the scan
    through a capture of ``sigvault.captures`` drawn among ``kinds`` (seeded per scan and copy), then the
    product's preprocessing, as a back office would receive it (tinted paper, a printed line, dust, blur and
    JPEG, skew, another resolution, or all of these). Where the captured scan is refused as inkless the scan's
    own canvas stands in. Cached like the canvases, keyed by the files, spec, kinds and copies."""
    from sigvault import captures
    from sigvault.errors import NoInkError
    from sigvault.imaging import preprocess, read_image

    unknown = sorted(set(kinds) - set(captures.CAPTURES))
    if unknown:
        raise SystemExit(f"[data] captures: unknown {unknown}; choose among {', '.join(captures.CAPTURES)}")
    cache = cache_dir / f"captured-{_files_key(samples, spec, f'|{sorted(kinds)}|{copies}|{CAPTURE_SEED}')}.npz"
    if cache.exists():
        return CanvasSet(data.canvases, data.writers, data.forged, data.coarse, np.load(cache)["captured"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr = np.repeat(data.canvases[None], copies, axis=0)
    refused = 0
    rng = np.random.default_rng(CAPTURE_SEED)
    draws = rng.integers(0, len(kinds), size=(copies, len(samples)))
    for i, s in enumerate(samples):
        grey = read_image(s.path)
        for c in range(copies):
            kind = kinds[int(draws[c, i])]
            try:
                arr[c, i] = preprocess(captures.apply(kind, grey, CAPTURE_SEED + c * len(samples) + i), spec, name=str(s.path))
            except NoInkError:
                refused += 1
        if i % 500 == 0:
            log.info("captured copies %d/%d", i, len(samples))
    log.info("captured copies: %d of %d refused as inkless (the scan's own canvas stands in)", refused, copies * len(samples))
    _save_npz(cache, captured=arr)
    return CanvasSet(data.canvases, data.writers, data.forged, data.coarse, arr)


SYNTH_SEED0 = 100_000  # synthetic training writers: seeds SYNTH_SEED0 .. SYNTH_SEED0 + n - 1 (the demo and tests use others)


def synthetic_canvases(n_writers: int, genuine: int, forged: int, spec: PreprocessSpec, cache_dir: Path) -> CanvasSet:
    """``n_writers`` synthetic writers (``sigvault.synth``), each with ``genuine`` signatures and ``forged``
    imitations of varied skill, through the product's preprocessing; cached like the scans.

    Their writer keys are ``synthetic/<k>``. Genuine and forged images share one capture per writer, so the
    only difference a network can learn from them is the signature itself."""
    import inspect

    from sigvault import synth
    from sigvault.imaging import preprocess

    src = inspect.getsource(synth).encode()
    key = hashlib.sha256(f"{n_writers}|{genuine}|{forged}|{SYNTH_SEED0}|{spec.fingerprint()}".encode() + src)
    cache = cache_dir / f"synthetic-{key.hexdigest()[:16]}.npz"
    if cache.exists():
        z = np.load(cache)
        return CanvasSet(z["canvases"], z["writers"], z["forged"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((n_writers * (genuine + forged), spec.canvas_height, spec.canvas_width), dtype=np.float16)
    writers, is_forged = [], []
    rng = np.random.default_rng(SYNTH_SEED0)
    i = 0
    for k in range(n_writers):
        w = synth.SyntheticWriter(SYNTH_SEED0 + k)
        images = [(w.genuine(j), False) for j in range(genuine)]
        images += [(w.forgery(j, skill=float(rng.uniform(0.4, 0.95))), True) for j in range(forged)]
        for im, f in images:
            arr[i] = preprocess(np.asarray(im, dtype=np.uint8), spec, name=f"synthetic/{k:04d}")
            writers.append(f"synthetic/{k:04d}")
            is_forged.append(f)
            i += 1
        if k % 20 == 0:
            log.info("drew synthetic writer %d/%d", k, n_writers)
    out = CanvasSet(arr, np.array(writers), np.array(is_forged))
    _save_npz(cache, canvases=out.canvases, writers=out.writers, forged=out.forged)
    return out


def concat(a: CanvasSet, b: CanvasSet) -> CanvasSet:
    """``a`` then ``b``; a set without coarse canvases stands in with its own canvases if the other has them."""
    coarse = None
    if a.coarse is not None or b.coarse is not None:
        coarse = np.concatenate([a.canvases if a.coarse is None else a.coarse, b.canvases if b.coarse is None else b.coarse])
    captured = None
    if a.captured is not None or b.captured is not None:
        copies = (a.captured if a.captured is not None else b.captured).shape[0]  # type: ignore[union-attr]

        def own(x: CanvasSet) -> np.ndarray:
            return np.repeat(x.canvases[None], copies, axis=0) if x.captured is None else x.captured

        captured = np.concatenate([own(a), own(b)], axis=1)
    return CanvasSet(
        np.concatenate([a.canvases, b.canvases]),
        np.concatenate([a.writers, b.writers]),
        np.concatenate([a.forged, b.forged]),
        coarse,
        captured,
    )


class BatchSampler:
    """P writers x (K genuine + M forged) per batch, drawn with a seeded generator.

    Labels: writer class c for its genuine signatures and ``C + c`` for the skilled forgeries of it, so a
    classification loss pushes forgeries away from the writer they imitate (hard negatives).
    """

    def __init__(self, data: CanvasSet, writers_per_batch: int, genuine: int, forged: int, seed: int) -> None:
        self.data = data
        self.classes = sorted(set(data.writers.tolist()))
        self.index = {w: i for i, w in enumerate(self.classes)}
        self.genuine = {w: np.flatnonzero((data.writers == w) & ~data.forged) for w in self.classes}
        self.forgeries = {w: np.flatnonzero((data.writers == w) & data.forged) for w in self.classes}
        self.p, self.k, self.m = writers_per_batch, genuine, forged
        self.rng = np.random.default_rng(seed)

    @property
    def num_classes(self) -> int:
        return 2 * len(self.classes)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (indices (B,), labels (B,), is_forged (B,))."""
        ws = self.rng.choice(len(self.classes), size=self.p, replace=False)
        idx, labels, forged = [], [], []
        n_cls = len(self.classes)
        for c in ws:
            w = self.classes[c]
            g = self.genuine[w]
            take = self.rng.choice(g, size=self.k, replace=g.size < self.k)
            idx.extend(take)
            labels.extend([c] * self.k)
            forged.extend([False] * self.k)
            f = self.forgeries[w]
            if f.size and self.m:
                take = self.rng.choice(f, size=self.m, replace=f.size < self.m)
                idx.extend(take)
                labels.extend([n_cls + c] * self.m)
                forged.extend([True] * self.m)
        return np.array(idx), np.array(labels), np.array(forged)
