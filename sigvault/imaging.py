"""Reading and preprocessing signature scans: pure functions, shared by training, evaluation and product.

The pipeline (``preprocess``) turns any scan into the model's canvas:

1. shrink very large scans to a working size (box filter: ink grey levels survive);
2. even out the paper: where its level varies across the scan (uneven light, a shadow, a phone capture), divide
   by a local estimate of it, so one threshold separates ink from paper everywhere;
3. find the ink with Otsu's threshold on a lightly blurred copy (works for a light pen on a dark scan,
   since only the separation between the two modes matters);
4. erase printed lines (a signature line, a box's rules): long, straight, of even thickness, keeping the
   handwriting that crosses them;
5. drop specks, dust and scanner borders (connected components: tiny ones, compact dots touching no stroke,
   and long ones lying along the image's edges; a signature cropped so tightly that its strokes touch the edge is
   kept);
6. remove the paper completely: every non-ink pixel becomes exactly 0 after inversion;
7. normalise ink strength: ink darkness relative to the paper is scaled so its median is fixed, so
   neither the paper shade nor the pen's darkness can tell one capture session from another;
8. crop to the ink with a margin, scale into the canvas keeping the aspect ratio, centre.

Everything that shapes the output is in :class:`PreprocessSpec`, which is saved with the weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sigvault.errors import ImageError, ImageTooLargeError, NoInkError

if TYPE_CHECKING:
    from PIL import Image

ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP", "GIF", "WEBP")


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything that determines the model input; saved in the model card."""

    canvas_height: int = 128
    canvas_width: int = 256
    work_max_side: int = 900  # scans are shrunk so their longest side is at most this before analysis
    blur_radius: float = 1.0  # Gaussian blur (in working pixels) before Otsu
    min_contrast: float = 24.0  # paper - ink grey levels below this: no ink
    max_ink_fraction: float = 0.6  # more "ink" than this: not a signature on paper
    speck_fraction: float = 0.002  # components smaller than this fraction of all ink are specks
    speck_min_pixels: int = 4  # ...and never smaller than this
    border_span: float = 0.8  # a line of ink covering more than this of a side, near the edge, is a scanner border
    border_band: float = 0.05  # near the edge: within this fraction of the side (rows for top/bottom, columns for sides)
    border_share: float = 0.75  # an edge-touching component spanning border_span of a side with at least this share of
    # its pixels near the edges is one too (a shadow); a signature cropped tightly enough to touch the edge is kept
    border_reach: float = 0.01  # a border line's neighbours within this fraction of the longer side are erased with it
    ink_median: float = 0.6  # median ink strength after normalisation
    margin: float = 0.04  # margin around the ink, as a fraction of the canvas
    background_window: float = 0.125  # the paper's local level is estimated over this fraction of the longer side (0: off)
    background_tolerance: float = 0.04  # paper whose level varies less than this fraction is left as it is
    line_length: float = 0.3  # a straight printed line spanning this fraction of the width (or height) is erased (0: off)
    dot_share: float = 0.05  # a compact blot holding less than this share of the ink, touching no stroke, is dust (0: off)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | int]) -> PreprocessSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; this model needs a newer sigvault")
        return cls(**data)  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """Short stable hash of the spec, part of the model id."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


DEFAULT_SPEC = PreprocessSpec()


@dataclass(frozen=True)
class ImageLimits:
    """Guards against decompression bombs and absurd files; configurable by the user."""

    max_pixels: int = 40_000_000
    max_bytes: int = 50 * 2**20


DEFAULT_LIMITS = ImageLimits()


#: ``scheme://...``: an image named by URL, read through fsspec (``s3://``, ``http://``, ``file://``, ...)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: str) -> bool:
    """Is this image name a URL (read through fsspec) rather than a file path?"""
    return bool(_URL.match(source))


def _read_url(url: str, name: str, limits: ImageLimits) -> bytes:
    """The bytes behind a URL, through fsspec (a backend per scheme: s3fs for ``s3://``, ...), at most the
    byte limit plus one (so a larger file is told apart without reading it whole)."""
    try:
        import fsspec
    except ImportError:
        raise ImageError(
            f"{name}: reading images by URL needs fsspec; pip install 'sigvault[cluster]'"
        ) from None
    try:
        with fsspec.open(url, "rb") as fh:
            return bytes(fh.read(limits.max_bytes + 1))
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file; check the URL") from None
    except (ImportError, ValueError) as exc:  # no backend installed for the scheme, or a malformed URL
        raise ImageError(f"{name}: cannot be read ({exc}); check the URL and its fsspec backend") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read ({exc.strerror or exc}); check the URL") from None


def read_bytes(source: Path | str | bytes, name: str, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """The raw bytes of an image file (or the bytes given, or a URL's: :func:`is_url`), checked against the
    byte limit.

    Raises ImageError naming the file: missing, a directory, unreadable, empty, too large.
    """
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and is_url(source):
        data = _read_url(source, name, limits)
    else:
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageError(f"{name}: is a directory, not an image file; give the path of a scan")
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):  # a pipe would block forever, a device never end
                raise ImageError(f"{name}: not a regular file (a pipe, socket or device); give the path of a scan")
            size = st.st_size
        except ImageError:
            raise
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file; check the path") from None
        except OSError as exc:  # symlink loops, permissions, names the OS refuses
            raise ImageError(f"{name}: cannot be read ({exc.strerror or exc}); check the path") from None
        if size > limits.max_bytes:
            raise ImageTooLargeError(
                f"{name}: file is {size} bytes, above the limit of {limits.max_bytes}; "
                "scan at a lower resolution or raise SIGVAULT_MAX_IMAGE_BYTES"
            )
        try:
            with open(path, "rb") as fh:
                data = fh.read(limits.max_bytes + 1)  # the file may have grown since stat()
        except OSError as exc:
            raise ImageError(f"{name}: cannot be read ({exc.strerror or exc}); check the path") from None
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"{name}: {len(data)} bytes, above the limit of {limits.max_bytes}; "
            "scan at a lower resolution or raise SIGVAULT_MAX_IMAGE_BYTES"
        )
    if not data:
        raise ImageError(f"{name}: file is empty (0 bytes); supply the scanned image")
    return data


def read_image(
    source: Path | str | bytes,
    *,
    name: str | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
    page: int | None = None,
) -> np.ndarray:
    """Decode a scan to grey.

    Accepts PNG, JPEG (EXIF orientation honoured), TIFF, BMP, GIF (first frame) and WEBP in any
    mode (palette, RGB, RGBA with transparent background, 16-bit, CMYK). A TIFF of several pages is refused
    unless ``page`` (from 1) says which one to use; ``page`` of any other image must be 1 or None.

    Returns:
        uint8 array (H, W): 0 = black ink, 255 = white paper.

    Raises:
        ImageError / ImageTooLargeError, with a one-line message naming the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if name is None:
        name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    data = read_bytes(source, name, limits)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ACCEPTED_FORMATS:
                raise ImageError(
                    f"{name}: {im.format} images are not supported; supply a PNG, JPEG, TIFF, BMP or GIF scan"
                )
            try:  # counting pages walks the TIFF's directories, which a damaged file may not hold
                pages = getattr(im, "n_frames", 1) if im.format == "TIFF" else 1
            except (TypeError, KeyError) as exc:
                raise ImageError(f"{name}: damaged image ({exc}); rescan or re-export it") from None
            if page is None and pages > 1:
                raise ImageError(
                    f"{name}: a TIFF of {pages} pages; say which page holds the signature (--page 1 to {pages}, "
                    "or a page column in an audit manifest)"
                )
            if page is not None and not 1 <= page <= pages:
                which = f"{pages} pages, choose one from 1 to {pages}" if pages > 1 else "1 page only, choose page 1"
                raise ImageError(f"{name}: no page {page}; the image has {which}")
            im.seek((page or 1) - 1)
            width, height = im.size
            if width * height > limits.max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {width}x{height} pixels is above the limit of {limits.max_pixels}; "
                    "scan at a lower resolution or raise SIGVAULT_MAX_IMAGE_PIXELS"
                )
            if width < 8 or height < 8:
                raise ImageError(f"{name}: {width}x{height} pixels is too small to hold a signature")
            im.seek((page or 1) - 1)
            try:
                im.load()
                frame = ImageOps.exif_transpose(im) if im.format in ("JPEG", "MPO", "TIFF", "WEBP") else im
            except TypeError as exc:  # Pillow on a malformed tag's type, e.g. a TIFF strip offset stored as a fraction
                raise ImageError(f"{name}: damaged image ({exc}); rescan or re-export it") from None
            grey = _to_grey(frame)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
            f"{name}: image dimensions are above the limit of {limits.max_pixels} pixels; "
            "scan at a lower resolution or raise SIGVAULT_MAX_IMAGE_PIXELS"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image; supply a PNG, JPEG, TIFF, BMP or GIF scan") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise ImageError(f"{name}: damaged or truncated image ({exc}); rescan or re-export it") from None
    return grey


def page_png(
    source: Path | str | bytes, page: int, *, name: str | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> bytes:
    """Page ``page`` (from 1) of a scan, as a PNG of its grey (:func:`read_image`): what ``--page N`` and an
    audit manifest's ``page`` column verify, enroll or compare. The vault then hashes and stores that page
    alone, never the file's other pages; it decodes to exactly the grey :func:`read_image` gives for the page.

    Raises:
        ImageError: no such page (the message names the file and its page count), or as :func:`read_image`.
    """
    from PIL import Image

    grey = read_image(source, name=name, limits=limits, page=page)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    return buf.getvalue()


def page_source(
    path: Path, page: int | None, *, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[Path | bytes, str]:
    """What a command given an image file and ``--page`` reads, and what messages call it: the file itself
    without a page, else that page (:func:`page_png`) named ``"<file> (page N)"``."""
    if page is None:
        return path, str(path)
    return page_png(path, page, name=str(path), limits=limits), page_name(str(path), page)


def page_name(name: str, page: int | None) -> str:
    """How messages and the log name page ``page`` of file ``name`` (just ``name`` when no page is chosen)."""
    return name if page is None else f"{name} (page {page})"


def _to_grey(im: Image.Image) -> np.ndarray:
    """Any PIL mode to uint8 grey, transparent areas becoming white paper."""
    mode = im.mode
    if mode == "P" or (mode in ("L", "RGB") and "transparency" in im.info):  # palette, or a tRNS colour
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        grey = np.asarray(rgba.convert("L"), dtype=np.float32)
        if alpha.min() < 1.0:
            grey = grey * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        elif hi <= 255 and lo >= 0:
            lo, hi = 0.0, 255.0
        if hi <= lo:
            return np.full(arr.shape, 255, dtype=np.uint8)
        return np.clip(np.rint((arr - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, HSV...
    return np.asarray(im.convert("L"), dtype=np.uint8)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values: pixels <= t are one class (ink), > t the other (paper)."""
    return _otsu_from_hist(np.bincount(values.ravel(), minlength=256))


def _otsu_from_hist(hist: np.ndarray) -> float:
    """Otsu's threshold from the 256-bin histogram of uint8 values (see :func:`otsu_threshold`)."""
    hist = hist.astype(np.float64)
    total = hist.sum()
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * levels)
    w1 = total - w0
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(np.argmax(between))


def _shrink(grey: np.ndarray, max_side: int) -> np.ndarray:
    # PIL's BOX, not cv2.INTER_AREA: the two differ (PIL averages the pixels whose centres fall in the box,
    # OpenCV weights partial pixels) and cv2 is no faster at arbitrary scales; the model was trained with PIL's.
    from PIL import Image

    h, w = grey.shape
    side = max(h, w)
    if side <= max_side:
        return grey
    scale = max_side / side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX), dtype=np.uint8)


def _hist(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """256-bin int64 histogram of uint8 ``values`` (where the uint8 ``mask`` is non-zero)."""
    import cv2

    if values.size >= 2**24:  # cv2 returns float32 counts, exact below 2**24
        return np.bincount((values if mask is None else values[mask > 0]).ravel(), minlength=256)
    return cv2.calcHist([values], [0], mask, [256], [0, 256]).ravel().astype(np.int64)


def _hist_middle(hist: np.ndarray) -> tuple[int, int]:
    """The two middle order statistics (equal for an odd count) of the uint8 values counted by ``hist``."""
    n = int(hist.sum())
    cum = np.cumsum(hist)
    return int(np.searchsorted(cum, (n - 1) // 2 + 1)), int(np.searchsorted(cum, n // 2 + 1))


def _hist_median(hist: np.ndarray) -> float:
    """Exact median of the uint8 values counted by ``hist`` (same as np.median on the values)."""
    lo, hi = _hist_middle(hist)
    return (lo + hi) / 2.0


def _hist_quantile(hist: np.ndarray, q: float) -> int:
    """The smallest uint8 value with at least a fraction ``q`` of the values counted by ``hist`` at or below it."""
    cum = np.cumsum(hist)
    return int(np.searchsorted(cum, max(1.0, q * float(cum[-1]))))


def _hist_mad(hist: np.ndarray, centre: float) -> float:
    """Median absolute deviation from ``centre`` of the uint8 values counted by ``hist``."""
    dev = np.abs(np.arange(256) - centre)
    order = np.argsort(dev, kind="stable")
    cum = np.cumsum(hist[order])
    return float(dev[order][int(np.searchsorted(cum, max(1.0, cum[-1] / 2.0)))])


# The ink's contrast is measured at the 25th percentile of the ink pixels (the strokes' cores): the mask comes
# from a blurred copy, so a thin stroke's mask is mostly the halo the blur adds around it, and its median
# (the measure before 2026-11-26) sat near the paper. At 150 dpi (SigComp 2009 scans halved) the median
# measured 9-23 grey levels on 49 of 120 signatures, which were refused as "no ink", against 38 and more
# at the 25th percentile; on the 3,209 development scans as they are, 61 and more.
INK_QUANTILE = 0.25
# Marks no darker than the paper's own grain are not ink: the contrast must also reach this many times the
# paper's median absolute deviation. Paper with Gaussian grain (standard deviation 3 to 30 grey levels)
# and an even gradient measure 2.6 to 5.8; the development scans 35 and more, with grain of standard
# deviation 12 added 8.5 and more (python -m training.perturb, kind noise).
INK_OVER_GRAIN = 6.0


# PIL's GaussianBlur(1.0), with which the shipped model was trained, is three horizontal then three vertical
# passes of an "extended box" of radius 0.25, i.e. the taps [1, 4, 1] / 6, each pass rounded to uint8 in
# 24-bit fixed point with edge pixels repeated: out = (c * 11184811 + (l + r) * 2796202 + 2**23) >> 24.
# These float taps, rounded to nearest by cv2.filter2D, give exactly those integers: they add
# 2**-13 * (c - 2 (l + r) + 1/2) to (l + 4c + r) / 6, which moves no value across a rounding boundary
# (at most 0.125, and a value that is not a tie, l + 4c + r = 6k + 3, is at least 1/6 from one) and breaks
# the ties the way the fixed point does: up when c >= 2 (l + r). tests/test_imaging.py checks every
# (l + r, c) pair against PIL.
_TIE = 2.0**-13
_PIL_BOX_TAPS = np.array([[1 / 6 - 2 * _TIE, 4 / 6 + _TIE, 1 / 6 - 2 * _TIE]], dtype=np.float32)
_PIL_BOX_DELTA = _TIE / 2


def _pil_box_pass(x: np.ndarray, axis: int) -> np.ndarray:
    """One pass of PIL's radius-0.25 box filter along ``axis`` (1: rows, 0: columns), bit for bit."""
    import cv2

    taps = _PIL_BOX_TAPS if axis == 1 else _PIL_BOX_TAPS.T
    return cv2.filter2D(x, -1, taps, delta=_PIL_BOX_DELTA, borderType=cv2.BORDER_REPLICATE)


def _blur(work: np.ndarray, radius: float) -> np.ndarray:
    """PIL's ``GaussianBlur(radius)`` of a uint8 image; with OpenCV for the radius of the shipped spec."""
    if radius == 1.0:  # the box passes above are PIL's for this radius only
        x = work
        for axis in (1, 1, 1, 0, 0, 0):
            x = _pil_box_pass(x, axis)
        return x
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(work).filter(ImageFilter.GaussianBlur(radius)), dtype=np.uint8)


# The paper's local level is estimated on a copy shrunk by this factor (its shape, not its detail, matters), after a
# grey dilation of this many of its pixels erases strokes up to about that many times the factor wide.
_BACKGROUND_SHRINK = 4
_BACKGROUND_DILATE = 5
# Light can fall off across a capture by at most this factor either way; a darker area (a black scanner border, a
# dense blot) is left for the border and ink rules rather than brightened into paper.
_BACKGROUND_MAX_GAIN = 2.0


def flatten_background(work: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC) -> np.ndarray:
    """The scan with its paper evened out: each pixel divided by the local paper level and multiplied by the
    median one, where the paper's level varies across the scan by more than ``spec.background_tolerance``.

    Under uneven light (a brightness ramp, a shadow, a phone held at an angle) the paper at one side is darker
    than the ink's halo at the other, and one Otsu threshold takes half the paper for ink. Light multiplies
    what the paper reflects, so dividing by the paper's local level restores one level everywhere. The local
    level is the scan with its strokes erased (a grey dilation) and then its remaining marks smoothed away (a
    median over ``spec.background_window`` of the longer side), made on a copy shrunk 4 times. A scan whose
    paper is even is returned unchanged, as the same array (clean scans preprocess exactly as before).

    Args:
        work: uint8 (H, W) grey, 0 = ink.
    Returns:
        uint8 (H, W).
    """
    if not spec.background_window:
        return work
    import cv2

    h, w = work.shape
    f = _BACKGROUND_SHRINK if min(h, w) >= 8 * _BACKGROUND_SHRINK else 1
    small = cv2.resize(work, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (_BACKGROUND_DILATE, _BACKGROUND_DILATE))
    paper = cv2.dilate(small, kernel, borderType=cv2.BORDER_REPLICATE)
    window = max(3, int(spec.background_window * max(small.shape)) | 1)
    paper = cv2.medianBlur(paper, min(window, 255))
    level = float(np.median(paper))
    lo, hi = np.percentile(paper, [2, 98])
    if level <= 0 or (hi - lo) < spec.background_tolerance * level:
        return work
    local = cv2.resize(paper.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    gain = np.clip(level / np.maximum(local, 1.0), 1.0 / _BACKGROUND_MAX_GAIN, _BACKGROUND_MAX_GAIN)
    return np.clip(np.rint(work.astype(np.float32) * gain), 0, 255).astype(np.uint8)


# A printed line is straight: the centres of its thin runs stray from a straight line by at most this many pixels
# (a pen line drawn freehand over half the width bows by several), and it covers at least this share of the
# columns it spans.
_LINE_STRAY = 1.0
_LINE_COVER = 0.9
# How far (pixels) from the line found by the Hough transform its runs are looked for, and the widest run
# (pixels, perpendicular) still taken for the line alone: a thicker one is a stroke crossing it, and is kept.
_LINE_SEARCH = 8
_LINE_SLACK = 2
# At most this many candidate paths are examined: a signature's dense baseline and a long flourish give a few.
_LINE_PATHS = 8
# At each end a printed line reaches the image's edge, or runs past the rest of the ink, within this fraction of
# the width.
_LINE_BEYOND = 0.02


def _line_runs(m: np.ndarray, xs: np.ndarray, yc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along the path ``yc`` (float rows at columns ``xs``) of the mask ``m``: whether ink lies on the path
    (within a pixel), and how many ink pixels run up and down from there without a gap."""
    h = m.shape[0]
    offs = np.arange(-_LINE_SEARCH, _LINE_SEARCH + 1)
    rows = np.clip(np.rint(yc)[:, None].astype(int) + offs[None, :], 0, h - 1)
    win = m[rows, xs[:, None]] > 0  # (len(xs), 2 * search + 1)
    c = _LINE_SEARCH
    # the path's pixel, or the nearer of its neighbours when the path itself missed the ink by rounding
    centre = np.where(win[:, c], c, np.where(win[:, c - 1], c - 1, np.where(win[:, c + 1], c + 1, -1)))
    on = centre >= 0
    idx = np.arange(len(xs))
    up = np.zeros(len(xs), dtype=int)
    down = np.zeros(len(xs), dtype=int)
    for k in range(1, _LINE_SEARCH + 1):
        above = centre - k
        below = centre + k
        up += on & (up == k - 1) & (above >= 0) & win[idx, np.clip(above, 0, 2 * c)]
        down += on & (down == k - 1) & (below <= 2 * c) & win[idx, np.clip(below, 0, 2 * c)]
    top = rows[idx, np.clip(centre, 0, 2 * c)] - up
    # a run reaching the window's edge is wider than any printed rule: never thin
    whole = (centre - up > 0) & (centre + down < 2 * c)
    return on, top, np.where(whole, up + down + 1, 4 * _LINE_SEARCH)


def _line_paths(m: np.ndarray, min_length: float) -> list[tuple[float, float]]:
    """Straight paths (slope, row at the middle column) within 8 degrees of the rows of the mask ``m`` along
    which a band 5 pixels wide holds the tops of at least ``min_length`` columns' ink, strongest first, one per
    band.

    A projection of the ink pixels along each slope, half a degree apart (deterministic, where a probabilistic
    Hough transform missed thin tilted lines crossed by writing)."""
    h, w = m.shape
    # the top pixel of each run down a column: a line counts once per column however thick it is, so a long thin
    # printed line outranks a thick pen stroke's short straight stretch
    ink = m > 0
    tops = ink.copy()
    tops[1:] &= ~ink[:-1]
    ys, xs = np.nonzero(tops)
    if ys.size < min_length:
        return []
    found: list[tuple[float, float, float]] = []
    for deg in np.arange(-8.0, 8.01, 0.5):
        slope = float(np.tan(np.radians(deg)))
        pad = int(np.ceil(abs(slope) * w / 2)) + 3
        prof = np.bincount(np.rint(ys - (xs - w / 2) * slope).astype(np.int64) + pad, minlength=h + 2 * pad)
        band = np.convolve(prof, np.ones(5, dtype=np.int64), mode="same")
        for r in np.flatnonzero(band >= min_length):
            found.append((float(band[r]), slope, float(r - pad)))
    found.sort(reverse=True)
    paths: list[tuple[float, float]] = []
    for _, slope, row in found:  # the strongest of each band: a path within 6 rows at both ends is the same one
        if all(max(abs(row - r), abs(row - r + (slope - s) * w / 2)) > 6 for s, r in paths):
            paths.append((slope, row))
            if len(paths) == _LINE_PATHS:
                break
    return paths


def _erase_lines_along_rows(m: np.ndarray, min_length: float) -> bool:
    """Erase, in place, the printed lines of the mask ``m`` that run within 8 degrees of its rows; -> any."""
    w = m.shape[1]
    xs = np.arange(w)
    gap = max(3, int(0.01 * w))
    erased = False
    for slope, row in _line_paths(m, min_length):
        on, top, run = _line_runs(m, xs, row + (xs - w / 2) * slope)
        thin = on & (run <= 2 * _LINE_SEARCH)
        if np.count_nonzero(thin) < min_length:
            continue
        thickness = float(np.median(run[thin]))
        thin &= run <= thickness + _LINE_SLACK
        if np.count_nonzero(thin) < 0.5 * min_length:  # mostly thick runs: a stroke, not a line
            continue
        centres = top[thin] + (run[thin] - 1) / 2.0
        fit = np.polyfit(xs[thin], centres, 1)
        if float(np.std(centres - np.polyval(fit, xs[thin]))) > _LINE_STRAY:
            continue
        on, top, run = _line_runs(m, xs, np.polyval(fit, xs))
        # the line's extent: the longest stretch of columns with ink on the path, gaps of a few pixels allowed
        cols = np.flatnonzero(on)
        if cols.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(cols) > gap)
        starts, ends = np.r_[cols[0], cols[breaks + 1]], np.r_[cols[breaks], cols[-1]]
        k = int(np.argmax(ends - starts))
        lo, hi = int(starts[k]), int(ends[k])
        if hi - lo + 1 < min_length or np.count_nonzero(on[lo : hi + 1]) < _LINE_COVER * (hi - lo + 1):
            continue
        rest = m.copy()
        for x in np.flatnonzero(on & (run <= thickness + _LINE_SLACK) & (xs >= lo) & (xs <= hi)):
            rest[max(0, top[x]) : top[x] + run[x], x] = 0
        # the writing sits on a printed line, which runs past it, or out of the image, at both ends; a pen's
        # straight underline or tail starts or ends inside the writing
        ink_cols = np.flatnonzero(rest.any(axis=0))
        reach = _LINE_BEYOND * w
        left = lo <= reach or ink_cols.size == 0 or lo <= ink_cols[0] - reach
        right = hi >= w - 1 - reach or ink_cols.size == 0 or hi >= ink_cols[-1] + reach
        if left and right:
            m[:] = rest
            erased = True
    return erased


def erase_printed_lines(ink: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC) -> np.ndarray | None:
    """The ink mask without its printed lines (a signature line, the rules of a box or table), or None if it
    has none.

    A printed line is found by projecting the ink along slopes within 8 degrees of the rows, as a path at
    least ``spec.line_length`` of the width long, or of the columns, as a box's rule half the image's longer
    side long (in a tight crop a capital's straight stem spans the whole height); it is
    taken for a printed line only if its thin runs cover 90 % of it, stray from one straight line by at most a
    pixel, and at both ends run out of the image or past the rest of the ink (the writing sits on a printed
    line; a pen's straight underline or tail starts or ends inside the writing). Along it, a column whose ink runs no thicker
    than the line (plus 2 pixels) is erased; where a stroke crosses, the run is thicker and is kept whole, so
    the handwriting stays continuous.

    Args:
        ink: uint8 (H, W), 255 = ink.
    Returns:
        uint8 (H, W), 255 = ink, or None.
    """
    if not spec.line_length:
        return None
    out = ink.copy()
    rows = _erase_lines_along_rows(out, spec.line_length * out.shape[1])
    # a vertical rule at least half the longer side: in a tight crop a capital's straight stem spans the height
    cols_view = np.ascontiguousarray(out.T)
    cols = _erase_lines_along_rows(cols_view, max(spec.line_length, 0.5) * max(out.shape))
    if cols:
        out = np.ascontiguousarray(cols_view.T)
    return out if rows or cols else None


def _ink_mask(work: np.ndarray, spec: PreprocessSpec, name: str) -> tuple[np.ndarray, int, np.ndarray, float]:
    """Ink mask of the working image (uint8, 255 = ink), its pixel count, its grey histogram, the paper level."""
    import cv2

    blurred = _blur(work, spec.blur_radius)
    hist_blurred = _hist(blurred)
    t = _otsu_from_hist(hist_blurred)
    n_ink = int(hist_blurred[: int(t) + 1].sum())
    if n_ink == 0 or n_ink == work.size:
        raise NoInkError(f"{name}: no signature ink found (the image is blank); scan the signed area")
    ink = cv2.threshold(blurred, t, 255, cv2.THRESH_BINARY_INV)[1]  # 255 where blurred <= t
    hist_ink = _hist(work, ink)
    hist_paper = _hist(work) - hist_ink
    paper = _hist_median(hist_paper)
    contrast = paper - _hist_quantile(hist_ink, INK_QUANTILE)
    if contrast < spec.min_contrast:
        raise NoInkError(
            f"{name}: no signature ink found (contrast {contrast:.0f} grey levels); "
            "scan the signed area with more contrast"
        )
    grain = max(_hist_mad(hist_paper, paper), 1.0)
    if contrast < INK_OVER_GRAIN * grain:
        raise NoInkError(
            f"{name}: no signature ink found (marks {contrast:.0f} grey levels darker than the paper, whose grain "
            f"alone spreads {grain:.0f}); scan the signed area"
        )
    if n_ink > spec.max_ink_fraction * work.size:
        raise NoInkError(
            f"{name}: no signature on paper found ({100 * n_ink / work.size:.0f}% of the image is dark); "
            "scan the signature on a light background"
        )
    return ink, n_ink, hist_ink, paper


def _band_sizes(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """How many rows (top and bottom) and columns (left and right) are near the edge."""
    return max(1, int(np.ceil(spec.border_band * h))), max(1, int(np.ceil(spec.border_band * w)))


def _erase_border_lines(ink: np.ndarray, spec: PreprocessSpec) -> np.ndarray | None:
    """The ink mask without scanner-border lines, or None if it has none: the columns near the left and right
    edges whose ink covers more than ``spec.border_span`` of the height, and the rows near the top and bottom
    covering that much of the width. Erasing the line rather than its component keeps a signature stroke
    that runs into it."""
    h, w = ink.shape
    bh, bw = _band_sizes(h, w, spec)
    cols = np.r_[0:bw, max(bw, w - bw) : w]
    rows = np.r_[0:bh, max(bh, h - bh) : h]
    full_cols = cols[np.count_nonzero(ink[:, cols], axis=0) > spec.border_span * h]
    full_rows = rows[np.count_nonzero(ink[rows, :], axis=1) > spec.border_span * w]
    if full_cols.size == 0 and full_rows.size == 0:
        return None
    # a scanned edge is rarely one pixel wide and perfectly straight: its neighbours within the band go too
    reach = max(2, int(np.ceil(spec.border_reach * max(h, w))))
    near = np.arange(-reach, reach + 1)
    out = ink.copy()
    out[:, np.intersect1d((full_cols[:, None] + near).ravel(), cols)] = 0
    out[np.intersect1d((full_rows[:, None] + near).ravel(), rows), :] = 0
    return out


def _along_edges(labels: np.ndarray, candidates: np.ndarray, sizes: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Which of the ``candidates`` (labels of long components touching an edge) are scanner borders: those
    with at least ``spec.border_share`` of their pixels in the bands of ``spec.border_band`` of the height
    (top and bottom) and of the width (left and right) along the image's edges. Returns a mask over labels.

    A scanner edge, a page edge or a corner shadow lies in those bands; a signature cropped tightly enough
    to touch the edge and span the image has most of its ink away from them, and is kept."""
    border = np.zeros(sizes.shape[0], dtype=bool)
    h, w = labels.shape
    bh, bw = _band_sizes(h, w, spec)
    for i in candidates[candidates > 0]:
        inner = int(np.count_nonzero(labels[bh : h - bh, bw : w - bw] == i))
        border[i] = sizes[i] - inner >= spec.border_share * sizes[i]
    return border


# A dot is a compact component: filling at least this share of its box, at most this elongated.
_DOT_FILL = 0.4
_DOT_ASPECT = 3.0


def _dust(stats: np.ndarray, keep: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Which kept components (rows of OpenCV's component ``stats``) are dust: compact dots, touching no stroke,
    holding less than ``spec.dot_share`` of the kept ink. Returns a mask over labels.

    Dust and toner specks, wherever they fall, stretch the crop or add blots the network takes for writing
    (5-40 specks doubled the skilled-forgery EER). The dot of an i or a full stop is dropped with them, from the
    references and the questioned scan alike; a signature made of dots alone is kept whole."""
    import cv2

    if not spec.dot_share or not keep.any():
        return np.zeros(keep.shape[0], dtype=bool)
    bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    area = stats[:, cv2.CC_STAT_AREA]
    compact = (area >= _DOT_FILL * bw * bh) & (np.maximum(bw, bh) <= _DOT_ASPECT * np.minimum(bw, bh))
    dot = keep & compact & (area < spec.dot_share * area[keep].sum())
    return dot if (keep & ~dot).any() else np.zeros(keep.shape[0], dtype=bool)


def _clean_mask(
    ink: np.ndarray, n_ink: int, spec: PreprocessSpec, name: str = "image"
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """Drop specks and scanner borders from the ink mask (uint8, 255 = ink; ``n_ink`` pixels).

    Returns:
        the kept components' mask (uint8, 255 = ink) cropped to their bounding box, that box (top, bottom,
        left, right; bottom and right exclusive), and whether any ink was dropped (a component or a border
        line).
    """
    import cv2

    erased = _erase_border_lines(ink, spec)
    if erased is not None:
        ink, n_ink = erased, int(np.count_nonzero(erased))
        if n_ink == 0:
            raise NoInkError(f"{name}: no signature ink found, only scanner-border lines; scan the signed area")
    lined = erase_printed_lines(ink, spec)
    if lined is not None:
        ink, n_ink = lined, int(np.count_nonzero(lined))
        if n_ink == 0:
            raise NoInkError(f"{name}: no signature ink found, only printed lines; scan the signed area")
    # 8-connected components; 16-bit labels (3x faster statistics in OpenCV 5) whenever they cannot overflow
    ltype = cv2.CV_16U if n_ink < 2**16 - 1 else cv2.CV_32S
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8, ltype=ltype)
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    sizes = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    sizes[0] = 0  # label 0 is the background
    min_size = max(spec.speck_min_pixels, spec.speck_fraction * n_ink)
    h, w = ink.shape
    touches = (top == 0) | (left == 0) | (bottom == h) | (right == w)
    spans = (bottom - top > spec.border_span * h) | (right - left > spec.border_span * w)
    keep = (sizes >= min_size) & ~_along_edges(labels, np.flatnonzero(touches & spans), sizes, spec)
    keep[0] = False
    keep &= ~_dust(stats, keep, spec)
    if not keep.any():  # only specks: keep the largest component rather than fail on a tiny signature
        largest = np.flatnonzero(sizes == sizes.max())
        # among equal sizes, the first in raster order (the order of scipy.ndimage.label's numbering)
        keep[min(largest, key=lambda i: (top[i], left[i] + np.argmax(labels[top[i], left[i] : right[i]] == i)))] = True
    box = int(top[keep].min()), int(bottom[keep].max()), int(left[keep].min()), int(right[keep].max())
    y0, y1, x0, x1 = box
    if keep[1:].all():
        return ink[y0:y1, x0:x1], box, erased is not None or lined is not None
    lut = np.where(keep, np.uint8(255), np.uint8(0))
    return lut[labels[y0:y1, x0:x1]], box, True


@dataclass(frozen=True)
class InkCapture:
    """How a scan captured its signature, as the preprocessing measures it (``scoring.capture_guard`` compares
    a questioned scan's with its references').

    ``scale``: canvas pixels per scan pixel, how much the ink box is enlarged (> 1) or reduced (< 1) to fit the
    canvas. Twice as large for the same signature scanned at half the resolution, and also larger for a
    smaller signature at the same resolution.
    ``stroke``: the width of the strokes' cores in scan pixels (twice the area of the ink darker than the
    crop's own Otsu threshold over the length of its outline, with no blur). Half as large at half the
    resolution, but unchanged by the signature's size: it tells a coarser capture from a smaller hand."""

    scale: float
    stroke: float

    @staticmethod
    def median(captures: Sequence[InkCapture]) -> InkCapture:
        """The median scale and the median stroke width of several scans (a person's references)."""
        if not captures:
            raise ValueError("no captures")
        return InkCapture(float(np.median([c.scale for c in captures])), float(np.median([c.stroke for c in captures])))


@dataclass(frozen=True)
class _Ink:
    """The ink of a scan as :func:`preprocess` finds it, before it is normalised and fitted into the canvas."""

    work: np.ndarray  # the scan shrunk to spec.work_max_side
    mask: np.ndarray  # uint8, 255 = kept ink, inside ``box`` of ``work``
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 in ``work``
    hist_ink: np.ndarray  # grey histogram of the ink (before speck and border removal when ``dropped``)
    paper: float  # the paper's grey level
    dropped: bool  # components were removed from the ink mask
    fit: float  # the factor that fits the box inside the canvas's margins (working pixels)
    capture: InkCapture  # the fit relative to the original scan, and the strokes' width in its pixels


def _stroke_width(crop: np.ndarray, mask: np.ndarray) -> float:
    """Width in pixels of the strokes' cores in ``crop`` (uint8, the ink's bounding box of the working image)
    whose kept ink is ``mask`` (255 = ink): the pixels of the mask no lighter than the crop's Otsu threshold
    (no blur: the mask itself comes from a blurred copy, whose halo would put every thin pen at the blur's
    width), twice their count over the number of pixel edges between them and the rest (the outline of a
    stroke of width w and length L has 2L such edges, its area is wL)."""
    import cv2

    t = _otsu_from_hist(_hist(crop))
    core = cv2.bitwise_and(mask, cv2.threshold(crop, t, 255, cv2.THRESH_BINARY_INV)[1]) > 0
    area = int(np.count_nonzero(core))
    if area == 0:  # the ink is no darker than the crop's threshold (a faint scan): its mask's outline
        core, area = mask > 0, int(np.count_nonzero(mask))
    padded = np.pad(core, 1)
    edges = int(np.count_nonzero(padded[:, 1:] != padded[:, :-1])) + int(np.count_nonzero(padded[1:] != padded[:-1]))
    return 2.0 * area / max(edges, 1)


def _locate_ink(grey: np.ndarray, spec: PreprocessSpec, name: str, caller: str) -> _Ink:
    """Shrink the scan, find its ink, drop specks and borders, and measure how much the ink box is scaled."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"{caller} expects uint8 (H, W), got {grey.dtype} {grey.shape}")
    work = flatten_background(_shrink(grey, spec.work_max_side), spec)
    ink, n_ink, hist_ink, paper = _ink_mask(work, spec, name)
    mask, box, dropped = _clean_mask(ink, n_ink, spec, name)
    y0, y1, x0, x1 = box
    inner_h = spec.canvas_height * (1 - 2 * spec.margin)
    inner_w = spec.canvas_width * (1 - 2 * spec.margin)
    fit = min(inner_h / (y1 - y0), inner_w / (x1 - x0))
    shrunk = work.shape[1] / grey.shape[1]  # working pixels per scan pixel
    stroke = _stroke_width(work[y0:y1, x0:x1], mask) / shrunk
    return _Ink(work, mask, box, hist_ink, paper, dropped, fit, InkCapture(fit * shrunk, stroke))


def measure_capture(grey: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC, *, name: str = "image") -> InkCapture:
    """How this scan captured its signature (:class:`InkCapture`: the ink's scale into the canvas and the strokes'
    width in scan pixels), exactly what :func:`preprocess_measured` returns, without making the canvas.

    The same signature scanned at half the resolution has twice the scale and half the stroke width; a
    smaller signature at the same resolution has a larger scale and the same strokes. A scale well above 1
    means the network sees the strokes enlarged, soft and thick (``scoring.capture_guard`` uses both).

    Raises:
        NoInkError: the image holds no signature ink.
    """
    return _locate_ink(grey, spec, name, "measure_capture").capture


def preprocess(grey: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC, *, name: str = "image") -> np.ndarray:
    """Scan -> model canvas: :func:`preprocess_measured` without the scale."""
    return preprocess_measured(grey, spec, name=name)[0]


def preprocess_measured(
    grey: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC, *, name: str = "image"
) -> tuple[np.ndarray, InkCapture]:
    """Scan -> model canvas, and how the scan captured its ink (:func:`measure_capture`).

    Args:
        grey: uint8 (H, W), 0 = black ink, 255 = white paper (as returned by :func:`read_image`).
        spec: the preprocessing spec of the model.
        name: used in error messages.

    Returns:
        float32 (spec.canvas_height, spec.canvas_width) in [0, 1]: ink bright, background exactly 0; and the
        :class:`InkCapture` of ``grey`` (the scale the ink was resized by, relative to ``grey``, and its strokes'
        width).

    Raises:
        NoInkError: the image holds no signature ink.
    """
    import cv2
    from PIL import Image

    found = _locate_ink(grey, spec, name, "preprocess")
    mask, hist_ink, paper = found.mask, found.hist_ink, found.paper
    y0, y1, x0, x1 = found.box
    work = found.work[y0:y1, x0:x1]  # everything below is inside the kept ink's bounding box
    if found.dropped:
        hist_ink = _hist(work, mask)

    # Ink strength relative to the paper, max(paper - grey, 0), normalised so its median over the ink is fixed.
    # It decreases with the grey level, so its median comes from the two middle grey levels of the ink.
    levels = np.arange(256, dtype=np.float32)
    lo, hi = _hist_middle(hist_ink)
    med = float((max(paper - lo, 0.0) + max(paper - hi, 0.0)) / 2)
    if med <= 0:  # strokes thinner than the blur's halo (a 1-px pen): more than half the mask is paper-grey
        med = float(max(paper - _hist_quantile(hist_ink, INK_QUANTILE), 0.0))
    if med <= 0:
        raise NoInkError(f"{name}: no signature ink found; scan the signed area")
    lut = np.clip(np.maximum(paper - levels, 0.0) * (spec.ink_median / med), 0.0, 1.0)  # float32 per grey level
    # non-ink pixels read as grey 255, whose strength is 0 (paper <= 255)
    crop = cv2.LUT(cv2.bitwise_or(work, cv2.bitwise_not(mask)), lut)

    ch, cw = spec.canvas_height, spec.canvas_width
    h, w = crop.shape
    nh, nw = max(1, round(h * found.fit)), max(1, round(w * found.fit))
    resized = np.asarray(
        Image.fromarray(crop, mode="F").resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None),
        dtype=np.float32,
    )
    canvas = np.zeros((ch, cw), dtype=np.float32)
    top, left = (ch - nh) // 2, (cw - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.clip(resized, 0.0, 1.0)
    return canvas, found.capture


def turn(grey: np.ndarray, degrees: float) -> np.ndarray:
    """The scan turned by ``degrees`` anticlockwise (as if placed askew on the scanner): bilinear, the frame
    enlarged to hold every pixel, the corners filled with the paper's grey (the median grey level)."""
    from PIL import Image

    paper = round(_hist_median(_hist(grey)))
    im = Image.fromarray(grey).rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=paper)
    return np.asarray(im, dtype=np.uint8)


@dataclass(frozen=True)
class View:
    """One derived copy of a scan that a reference is also enrolled with (``ScoringConfig.views``): the scan
    turned by ``turn`` degrees anticlockwise, or blurred by a Gaussian of radius ``blur`` pixels of the shrunk
    scan (``spec.work_max_side``), as an out-of-focus capture would show it.

    ``blur_cap`` (0: none) bounds the blur as the network sees it, in canvas pixels: a scan whose ink is
    enlarged ``scale`` times into the canvas is blurred by at most ``blur_cap / scale`` of its own pixels. A
    small, coarse scan is soft already, and blurred more it would teach the person's SVM to forgive the smeared
    strokes that give an imitation away."""

    turn: float = 0.0
    blur: float = 0.0
    blur_cap: float = 0.0

    def __post_init__(self) -> None:
        finite = all(np.isfinite(v) for v in (self.turn, self.blur, self.blur_cap))
        if not finite or self.blur < 0 or self.blur_cap < 0:
            raise ValueError(f"a view turns by finite degrees and blurs by a radius >= 0, not {self!r}")

    def radius(self, scale: float) -> float:
        """The blur's radius in pixels of a scan whose ink is enlarged ``scale`` times into the canvas."""
        if self.blur_cap and scale > 0:
            return min(self.blur, self.blur_cap / scale)
        return self.blur

    def apply(self, work: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """This view of ``work`` (uint8 grey, already shrunk; its ink enlarged ``scale`` times into the canvas):
        blurred, then turned."""
        from PIL import Image, ImageFilter

        out = work
        if self.blur:
            blur = ImageFilter.GaussianBlur(self.radius(scale))
            out = np.asarray(Image.fromarray(out).filter(blur), dtype=np.uint8)
        if self.turn:
            out = turn(out, self.turn)
        return out


def preprocess_views(
    grey: np.ndarray,
    spec: PreprocessSpec,
    views: Sequence[View | float],
    *,
    name: str = "image",
    original: bool = True,
) -> tuple[np.ndarray, InkCapture]:
    """The canvas of a scan, then the canvases of each of its ``views`` (:class:`View`; a number is the
    view turned by that many degrees): float32 (1 + len(views), canvas_height, canvas_width); the first is
    exactly :func:`preprocess`'s. ``original=False``: the views' canvases only (len(views), ...). Also the scan's
    :class:`InkCapture`, exactly :func:`measure_capture`'s.

    The views are the extra examples of the person's hand a reference is enrolled with
    (``ScoringConfig.views``): as a skewed or an out-of-focus scan would show it. The scan is shrunk once, then
    measured, turned and blurred (the shrink commutes with the turn up to resampling, and costs the most).
    A view whose ink the preprocessing no longer finds (thin, faint strokes turned or blurred below ``spec.min_contrast``)
    is the scan's own canvas instead: such a hand has no blurred capture to prepare for (blurred, its scan
    would be refused as inkless), and its reference must enrol as it did without views.

    Raises:
        NoInkError: the scan itself holds no signature ink.
    """
    work = _shrink(grey, spec.work_max_side)
    own: np.ndarray | None = None  # the scan's own canvas: made here, or when a view lost its ink
    if original:
        own, measured = preprocess_measured(work, spec, name=name)
        out = [own]
    else:
        measured, out = _locate_ink(work, spec, name, "preprocess_views").capture, []
    for v in views:
        view = v if isinstance(v, View) else View(turn=float(v))
        try:
            out.append(preprocess(view.apply(work, measured.scale), spec, name=name))
        except NoInkError:
            own = preprocess(work, spec, name=name) if own is None else own
            out.append(own)
    shrunk = work.shape[1] / grey.shape[1]  # measured on ``work``: as _locate_ink scales it for ``grey``
    capture = InkCapture(measured.scale * shrunk, measured.stroke / shrunk)
    canvases = np.stack(out) if out else np.zeros((0, spec.canvas_height, spec.canvas_width), dtype=np.float32)
    return canvases, capture


def load_canvas(
    source: Path | str | bytes,
    spec: PreprocessSpec = DEFAULT_SPEC,
    *,
    name: str | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """:func:`read_image` then :func:`preprocess`; float32 (canvas_height, canvas_width)."""
    if name is None:
        name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    return preprocess(read_image(source, name=name, limits=limits), spec, name=name)
