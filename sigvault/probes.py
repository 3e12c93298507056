"""Capture-bias probes: can genuine and forged images be told apart WITHOUT comparing them with references?

Signature datasets are often captured in two sessions (genuine signatures one day, forgeries another, with
another scanner, paper or pen). Then a skilled forgery can be recognised by its paper or its file format,
and every skilled-forgery figure measures the capture, not the signatures. Each probe here looks at the
questioned image alone and reports how well it separates genuine from forged items (ROC AUC):

- raw-image statistics, computed from the decoded grey scan before preprocessing (:func:`image_stats`):
  paper grey level, paper noise, ink darkness, stroke width, image size and aspect;
- the file itself: format and colour mode, resolution (dpi) stored in the file (categorical);
- the model's own embedding, without any reference: a logistic-regression probe trained on half of the
  writers and scored on the other half (and the other way round), so the score is writer-disjoint.

For a statistic the direction is unknown in advance, so its AUC is ``max(auc, 1 - auc)`` and the direction
is reported. A probe is *flagged* when its AUC reaches :data:`AUC_WARN` (0.65) and the sample is large
enough for that to be more than chance: the AUC lies at least :data:`CHANCE_Z` (3) standard errors of a
chance AUC above 0.5. With about ten probes, each read in its better direction, this keeps the chance of a
false alarm on a cleanly captured set near 5 %; on a few hundred images the 0.65 level alone decides. ``sigvault evaluate`` then warns that its skilled-forgery figures are not trustworthy on
this data and names the cue.

Pure numpy / scipy; scikit-learn is imported lazily by :func:`embedding_probe`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sigvault import imaging, metrics

AUC_WARN = 0.65
"""A probe whose AUC reaches this (and is clearly above chance for the sample size) triggers a warning."""

CHANCE_Z = 3.0
"""...and lies this many standard errors of a chance AUC (0.5) above 0.5, so a small sample does not cry wolf."""


@dataclass(frozen=True)
class ImageStats:
    """Reference-free statistics of one raw scan (grey levels 0 = black, 255 = white)."""

    paper_grey: float  # median grey level of the background (away from the ink)
    paper_noise: float  # scanner noise of the background: std of neighbour differences / sqrt(2)
    ink_grey: float  # median grey level of the ink
    stroke_width: float  # pixels: 2 * ink area / ink boundary length
    pixels: int  # width * height
    aspect: float  # width / height
    file_kind: str  # "PNG L", "JPEG RGB", ...
    dpi: str  # resolution stored in the file ("300", "unknown")


@dataclass(frozen=True)
class ProbeResult:
    """How well one reference-free cue separates genuine from forged items."""

    key: str  # "paper_grey", "embedding", ...
    cue: str  # plain words: "paper grey level"
    auc: float | None  # None: the probe could not run (see ``note``)
    direction: str  # "higher in forgeries" | "lower in forgeries" | category rates | ""
    n_genuine: int
    n_forged: int
    flagged: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NUMERIC_CUES: dict[str, tuple[str, str, str]] = {
    # key: (cue in plain words, word for "higher", word for "lower")
    "paper_grey": ("paper grey level", "paper lighter in forgeries", "paper darker in forgeries"),
    "paper_noise": ("paper noise", "noisier paper in forgeries", "cleaner paper in forgeries"),
    "ink_grey": ("ink darkness", "lighter ink in forgeries", "darker ink in forgeries"),
    "stroke_width": ("stroke width", "thicker strokes in forgeries", "thinner strokes in forgeries"),
    "pixels": ("image size", "larger images in forgeries", "smaller images in forgeries"),
    "aspect": ("image aspect ratio", "wider images in forgeries", "taller images in forgeries"),
}
CATEGORICAL_CUES: dict[str, str] = {"file_kind": "file format and colour mode", "dpi": "resolution stored in the file"}
EMBEDDING_CUE = "the model's own embedding, without references"


# ------------------------------------------------------------------------------------------- statistics


def header_info(data: bytes) -> tuple[str, str]:
    """(file kind "FORMAT MODE", dpi as text) from an image's header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            kind = f"{im.format} {im.mode}"
            dpi = im.info.get("dpi")
    except Exception:  # the real read reports the problem; this is only a probe
        return "unknown", "unknown"
    if isinstance(dpi, tuple) and dpi and dpi[0]:
        try:
            return kind, f"{round(float(dpi[0]))}"
        except (TypeError, ValueError):
            pass
    return kind, "unknown"


def image_stats(grey: np.ndarray, *, file_kind: str = "unknown", dpi: str = "unknown") -> ImageStats:
    """Reference-free statistics of a raw grey scan, uint8 (H, W) as :func:`imaging.read_image` returns it.

    The ink is found with Otsu's threshold; the background is everything at least 3 pixels from the ink.
    Statistics that cannot be measured (no background left, say) are NaN.
    """
    from scipy import ndimage

    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"image_stats expects uint8 (H, W), got {grey.dtype} {grey.shape}")
    h, w = grey.shape
    t = imaging.otsu_threshold(grey)
    ink = grey <= t
    n_ink = int(ink.sum())
    background = ~ndimage.binary_dilation(ink, iterations=3) if n_ink else np.ones_like(ink)
    nan = float("nan")
    paper = float(np.median(grey[background])) if background.any() else nan
    pairs = background[:, :-1] & background[:, 1:]
    if pairs.any():
        diff = grey[:, :-1].astype(np.int16) - grey[:, 1:].astype(np.int16)
        noise = float(np.std(diff[pairs]) / math.sqrt(2.0))
    else:
        noise = nan
    if n_ink:
        ink_grey = float(np.median(grey[ink]))
        boundary = int((ink & ~ndimage.binary_erosion(ink)).sum())
        stroke = 2.0 * n_ink / boundary if boundary else nan
    else:
        ink_grey = stroke = nan
    return ImageStats(paper, noise, ink_grey, stroke, h * w, w / h, file_kind, dpi)


# ----------------------------------------------------------------------------------------------- probes


def chance_standard_error(n_pos: int, n_neg: int) -> float:
    """Standard error of the AUC of a score unrelated to the label (Mann-Whitney, no ties)."""
    return math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))


def is_flagged(a: float | None, n_genuine: int, n_forged: int, level: float = AUC_WARN) -> bool:
    """The AUC reaches ``level`` and is at least :data:`CHANCE_Z` chance standard errors above 0.5."""
    if a is None or not n_genuine or not n_forged:
        return False
    return a >= level and (a - 0.5) >= CHANCE_Z * chance_standard_error(n_forged, n_genuine)


def numeric_probe(key: str, values: np.ndarray, forged: np.ndarray) -> ProbeResult:
    """AUC of one statistic (direction unknown: max(auc, 1 - auc)); NaN values are left out."""
    cue, higher, lower = NUMERIC_CUES[key]
    values = np.asarray(values, dtype=np.float64)
    forged = np.asarray(forged, dtype=bool)
    ok = np.isfinite(values)
    f, g = values[ok & forged], values[ok & ~forged]
    if not f.size or not g.size:
        return ProbeResult(key, cue, None, "", int(g.size), int(f.size), False, "needs genuine and forged images")
    a = metrics.auc(f, g)  # P(forgery's value > genuine's value)
    direction = higher if a >= 0.5 else lower
    a = max(a, 1.0 - a)
    return ProbeResult(key, cue, a, direction, int(g.size), int(f.size), is_flagged(a, g.size, f.size))


def categorical_probe(key: str, labels: Sequence[str], forged: np.ndarray) -> ProbeResult:
    """AUC of scoring each item by the share of forgeries among items of its category."""
    cue = CATEGORICAL_CUES[key]
    forged = np.asarray(forged, dtype=bool)
    labels_arr = np.asarray(list(labels), dtype=object)
    n_f, n_g = int(forged.sum()), int((~forged).sum())
    if not n_f or not n_g:
        return ProbeResult(key, cue, None, "", n_g, n_f, False, "needs genuine and forged images")
    cats = sorted(set(labels_arr.tolist()))
    rate = {c: float(forged[labels_arr == c].mean()) for c in cats}
    score = np.array([rate[c] for c in labels_arr.tolist()])
    a = metrics.auc(score[forged], score[~forged])  # >= 0.5 by construction
    if len(cats) == 1:
        direction = f"all {cats[0]}"
    else:
        parts = [
            f"{c}: {int(forged[labels_arr == c].sum())} forged / {int((labels_arr[~forged] == c).sum())} genuine"
            for c in cats[:6]
        ]
        direction = "; ".join(parts) + ("; ..." if len(cats) > 6 else "")
    return ProbeResult(key, cue, a, direction, n_g, n_f, is_flagged(a, n_g, n_f))


def writer_halves(writers: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the writer keys into two seeded, disjoint halves -> (mask of half A, mask of half B) over items."""
    names = np.array(sorted(set(np.asarray(writers).tolist())), dtype=object)
    order = np.random.default_rng(seed).permutation(names.size)
    half_a = set(names[order[: names.size // 2]].tolist())
    in_a = np.array([w in half_a for w in np.asarray(writers).tolist()], dtype=bool)
    return in_a, ~in_a


def embedding_probe(emb: np.ndarray, writers: np.ndarray, forged: np.ndarray, seed: int = 0) -> ProbeResult:
    """Logistic regression on the embeddings alone, genuine vs forged, writer-disjoint two-fold.

    The writers are split in two halves; a probe trained on one half scores the other, and the other way
    round; the AUC is taken over all out-of-fold scores. The direction is learned, so the AUC is not
    folded (below 0.5 means chance).
    """
    from sklearn.linear_model import LogisticRegression

    forged = np.asarray(forged, dtype=bool)
    n_f, n_g = int(forged.sum()), int((~forged).sum())
    in_a, in_b = writer_halves(writers, seed)
    for part in (in_a, in_b):
        if not (forged & part).any() or not (~forged & part).any():
            return ProbeResult(
                "embedding",
                EMBEDDING_CUE,
                None,
                "",
                n_g,
                n_f,
                False,
                "needs genuine and forged images in both halves of the writers",
            )
    score = np.empty(forged.size, dtype=np.float64)
    x = np.asarray(emb, dtype=np.float64)
    for train, test in ((in_a, in_b), (in_b, in_a)):
        clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        clf.fit(x[train], forged[train])
        score[test] = clf.decision_function(x[test])
    a = metrics.auc(score[forged], score[~forged])
    return ProbeResult(
        "embedding", EMBEDDING_CUE, a, "linear probe trained on other writers", n_g, n_f, is_flagged(a, n_g, n_f)
    )


def run_probes(
    stats: Sequence[ImageStats], emb: np.ndarray | None, writers: np.ndarray, forged: np.ndarray, seed: int = 0
) -> tuple[ProbeResult, ...]:
    """Every probe, in a fixed order: the numeric statistics, the file, then the embedding (if given)."""
    forged = np.asarray(forged, dtype=bool)
    out = [numeric_probe(k, np.array([getattr(s, k) for s in stats], dtype=np.float64), forged) for k in NUMERIC_CUES]
    out += [categorical_probe(k, [getattr(s, k) for s in stats], forged) for k in CATEGORICAL_CUES]
    if emb is not None:
        out.append(embedding_probe(emb, writers, forged, seed))
    return tuple(out)


def capture_warning(probes: Sequence[ProbeResult]) -> str | None:
    """The plain-words warning when any probe is flagged, naming the cues; None otherwise."""
    hits = [p for p in probes if p.flagged and p.auc is not None]
    if not hits:
        return None
    cues = "; ".join(
        f"{p.cue} (AUC {p.auc:.2f}{', ' + p.direction if p.direction and p.key in NUMERIC_CUES else ''})" for p in hits
    )
    return (
        "capture bias: the skilled-forgery figures are NOT trustworthy on this data. Genuine and forged images "
        f"can be told apart without looking at any reference, from: {cues}. The forgeries were probably "
        "captured differently (another scanner, paper, pen or file format), so a system can score well here by "
        "recognising the capture instead of comparing signatures. Measure on scans where genuine signatures "
        "and forgeries were captured the same way."
    )
