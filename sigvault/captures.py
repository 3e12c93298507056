"""How a back office really receives a signature: simulated captures of a clean scan.

Pure functions (numpy + Pillow), seeded by the caller's ``numpy.random.Generator``, each taking a clean grey
scan (uint8 (H, W), 0 = black ink, 255 = white paper) and returning what another capture of the same paper
would give. They are shared by ``training.perturb`` (copies of a dataset folder, measured with ``sigvault
evaluate``), the training augmentation (capture invariance) and the tests (a synthetic signature through each
capture must preprocess to nearly the canvas of the clean one).

The captures (``CAPTURES``; ``cheque`` chains them all, as a cheque image carries them together):

- ``tinted``: tinted paper under uneven light: the paper coloured (cream, green, blue or pink security
  stock), the ink blue-black or blue, and a brightness ramp of 20 % across the image in a random direction;
  returned as RGB, so the product's own colour-to-grey conversion is part of what is measured;
- ``line``: a printed signature line under the ink (1-3 px, grey 40-120), running past the signature at both
  ends and placed so the signature's lower part crosses it, as on every cheque and form;
- ``specks``: 5-40 dark specks (dust, toner), 1-5 px in radius, anywhere on the image;
- ``blurjpeg``: light blur (Gaussian radius 0.3-1.0 px) then JPEG at quality 55-85;
- ``skew``: placed askew, turned by up to 5 degrees either way, corners filled with the paper's grey;
- ``lowres``: scanned at 45-90 % of the resolution (box filter);
- ``cheque``: tinted, line, skew, lowres, specks, blurjpeg in that order (a cheque image: the printed line is
  on the paper before it is skewed and scanned, the dust and the compression come last).

Every capture keeps the signature's own pixels: what it adds is what the preprocessing must remove or
ignore (paper, light, lines, dust) or what the network must tolerate (blur, resolution, skew).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

__all__ = ["CAPTURES", "apply", "blurjpeg", "cheque", "line", "lowres", "skew", "specks", "tinted"]

# Paper tints of security stock (RGB of the paper in full light) and pen colours (RGB of a full stroke).
_PAPERS = ((246, 238, 214), (226, 240, 226), (224, 234, 246), (246, 228, 232), (238, 238, 232))
_INKS = ((28, 32, 70), (22, 40, 120), (40, 40, 48), (30, 60, 160))


def _paper_level(grey: np.ndarray) -> float:
    """The clean scan's paper grey level: the 90th percentile (ink is a minority of any signature scan)."""
    return float(np.percentile(grey, 90))


def _to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey of a grey or RGB array, by the ITU-R 601 luma Pillow uses (``Image.convert("L")``)."""
    if image.ndim == 2:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image, mode="RGB").convert("L"), dtype=np.uint8)


def tinted(grey: np.ndarray, rng: np.random.Generator, ramp: float = 0.2) -> np.ndarray:
    """Tinted paper, coloured ink, and light falling off by ``ramp`` (a fraction) across the image.

    Returns uint8 RGB (H, W, 3). The ink's coverage is read from the clean scan (how much darker than its
    paper each pixel is), then the two colours are mixed by it and the result lit by a linear ramp.
    """
    g = grey.astype(np.float32)
    paper = max(_paper_level(grey), 1.0)
    cover = np.clip((paper - g) / paper, 0.0, 1.0)[..., None]
    paper_rgb = np.array(_PAPERS[rng.integers(len(_PAPERS))], dtype=np.float32)
    ink_rgb = np.array(_INKS[rng.integers(len(_INKS))], dtype=np.float32)
    colour = paper_rgb * (1.0 - cover) + ink_rgb * cover
    h, w = grey.shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)  # 0 at the lit side, 1 at the dark side
    light = 1.0 - ramp * t
    return np.clip(np.rint(colour * light[..., None]), 0, 255).astype(np.uint8)


def _ink_rows(grey: np.ndarray) -> tuple[int, int] | None:
    """First and last row holding ink in a clean scan (pixels well below the paper), or None."""
    dark = grey < _paper_level(grey) - 40
    rows = np.flatnonzero(dark.sum(axis=1) > 0)
    return (int(rows[0]), int(rows[-1])) if rows.size else None


def line(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A printed signature line under the signature: straight, 1-3 px thick, grey 40-120, slightly tilted (up
    to 0.5 degree), at 70-95 % of the ink's height so the lower strokes cross it. The signature is written
    on the line, so the line runs past the ink at both ends: half the time across the whole image (a crop of a
    form), otherwise from 3-15 % of the width before the ink to 3-15 % after it (the printed line's ends
    inside the crop). The line is printed under the ink: where both are, the darker wins."""
    h, w = grey.shape
    rows = _ink_rows(grey) or (h // 3, 2 * h // 3)
    y = rows[0] + rng.uniform(0.7, 0.95) * (rows[1] - rows[0])
    thick = int(rng.integers(1, 4))
    tone = float(rng.uniform(40, 120))
    if rng.random() < 0.5:
        x0, x1 = 0.0, float(w)
    else:
        cols = np.flatnonzero((grey < _paper_level(grey) - 40).any(axis=0))
        a, b = (int(cols[0]), int(cols[-1])) if cols.size else (0, w)
        x0 = max(0.0, a - rng.uniform(0.03, 0.15) * w)
        x1 = min(float(w), b + rng.uniform(0.03, 0.15) * w)
    slope = np.tan(np.radians(rng.uniform(-0.5, 0.5)))
    out = grey.astype(np.float32)
    xs = np.arange(int(x0), int(x1))
    centre = y + slope * (xs - w / 2)
    for k in range(thick):
        ys = np.rint(centre - (thick - 1) / 2 + k).astype(int)
        ok = (ys >= 0) & (ys < h)
        out[ys[ok], xs[ok]] = np.minimum(out[ys[ok], xs[ok]], tone)
    return out.astype(np.uint8)


def specks(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """5-40 dark specks of dust or toner, discs of radius 1-5 px, grey 0-90, anywhere on the image."""
    h, w = grey.shape
    out = grey.copy()
    for _ in range(int(rng.integers(5, 41))):
        r = float(rng.uniform(1.0, 5.0))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disc = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r
        tone = np.uint8(rng.uniform(0, 90))
        patch = out[y0:y1, x0:x1]
        patch[disc] = np.minimum(patch[disc], tone)
    return out


def blurjpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light blur (Gaussian, radius 0.3-1.0 px) then JPEG at quality 55-85; grey or RGB in, the same out."""
    from PIL import Image, ImageFilter

    im = Image.fromarray(image).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(55, 86)))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert(im.mode), dtype=np.uint8)


def _paper_fill(image: np.ndarray) -> int | tuple[int, ...]:
    """The paper's colour (the per-channel median) as Pillow's fill value."""
    med = np.median(image.reshape(-1, image.shape[2]) if image.ndim == 3 else image.ravel(), axis=0)
    return tuple(int(v) for v in np.atleast_1d(med)) if image.ndim == 3 else int(med)


def skew(image: np.ndarray, rng: np.random.Generator, max_degrees: float = 5.0) -> np.ndarray:
    """Turned by up to ``max_degrees`` either way (bilinear, frame enlarged, corners the paper's colour)."""
    from PIL import Image

    degrees = float(rng.uniform(-max_degrees, max_degrees))
    im = Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=_paper_fill(image))
    return np.asarray(im, dtype=np.uint8)


def lowres(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scanned at 45-90 % of the resolution (box filter)."""
    from PIL import Image

    f = float(rng.uniform(0.45, 0.9))
    h, w = image.shape[:2]
    size = (max(8, round(w * f)), max(8, round(h * f)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX), dtype=np.uint8)


def _specks_any(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`specks` on grey or RGB (the same dark discs in every channel)."""
    if image.ndim == 2:
        return specks(image, rng)
    marked = specks(np.full(image.shape[:2], 255, dtype=np.uint8), rng)
    return np.minimum(image, marked[..., None])


def cheque(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All of the captures together, as a cheque image carries them: RGB (H, W, 3)."""
    out = tinted(line(grey, rng), rng)
    out = lowres(skew(out, rng), rng)
    return blurjpeg(_specks_any(out, rng), rng)


CAPTURES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "tinted": tinted,
    "line": line,
    "specks": specks,
    "blurjpeg": blurjpeg,
    "skew": skew,
    "lowres": lowres,
    "cheque": cheque,
}


def apply(kind: str, grey: np.ndarray, seed: int) -> np.ndarray:
    """The capture ``kind`` of a clean grey scan, seeded: grey uint8 (H, W) whatever the capture's colour."""
    try:
        fn = CAPTURES[kind]
    except KeyError:
        raise ValueError(f"unknown capture {kind!r}; choose among {', '.join(CAPTURES)}") from None
    return _to_grey(fn(grey, np.random.default_rng(seed)))
