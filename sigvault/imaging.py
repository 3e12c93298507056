"""Reading and preprocessing signature scans: pure functions, shared by training, evaluation and product.

The pipeline (``preprocess``) turns any scan into the model's canvas:

1. shrink very large scans to a working size (box filter: ink grey levels survive);
2. find the ink with Otsu's threshold on a lightly blurred copy (works for a light pen on a dark scan,
   since only the separation between the two modes matters);
3. drop specks and scanner borders (connected components: tiny ones, and long ones hugging an edge);
4. remove the paper completely: every non-ink pixel becomes exactly 0 after inversion;
5. normalise ink strength: ink darkness relative to the paper is scaled so its median is fixed, so
   neither the paper shade nor the pen's darkness can tell one capture session from another;
6. crop to the ink with a margin, scale into the canvas keeping the aspect ratio, centre.

Everything that shapes the output is in :class:`PreprocessSpec`, which is saved with the weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
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
    border_span: float = 0.8  # an edge-touching component spanning more than this of the side is a scanner border
    ink_median: float = 0.6  # median ink strength after normalisation
    margin: float = 0.04  # margin around the ink, as a fraction of the canvas

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


def read_bytes(source: Path | str | bytes, name: str, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """The raw bytes of an image file (or the bytes given), checked against the byte limit.

    Raises ImageError naming the file: missing, a directory, unreadable, empty, too large.
    """
    if isinstance(source, bytes):
        data = source
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
    source: Path | str | bytes, *, name: str | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decode a scan to grey.

    Accepts PNG, JPEG (EXIF orientation honoured), TIFF (first page), BMP, GIF (first frame) and WEBP in any
    mode (palette, RGB, RGBA with transparent background, 16-bit, CMYK).

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
            width, height = im.size
            if width * height > limits.max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {width}x{height} pixels is above the limit of {limits.max_pixels}; "
                    "scan at a lower resolution or raise SIGVAULT_MAX_IMAGE_PIXELS"
                )
            if width < 8 or height < 8:
                raise ImageError(f"{name}: {width}x{height} pixels is too small to hold a signature")
            im.seek(0)
            im.load()
            frame = ImageOps.exif_transpose(im) if im.format in ("JPEG", "MPO", "TIFF", "WEBP") else im
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


def _to_grey(im: Image.Image) -> np.ndarray:
    """Any PIL mode to uint8 grey, transparent areas becoming white paper."""
    mode = im.mode
    if mode == "P":
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
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
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
    from PIL import Image

    h, w = grey.shape
    side = max(h, w)
    if side <= max_side:
        return grey
    scale = max_side / side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX), dtype=np.uint8)


def _hist_median(hist: np.ndarray) -> float:
    """Exact median of the uint8 values counted by ``hist`` (same as np.median on the values)."""
    n = int(hist.sum())
    cum = np.cumsum(hist)
    lo = int(np.searchsorted(cum, (n - 1) // 2 + 1))
    hi = int(np.searchsorted(cum, n // 2 + 1))
    return (lo + hi) / 2.0


def _ink_mask(work: np.ndarray, spec: PreprocessSpec, name: str) -> tuple[np.ndarray, float]:
    """Boolean ink mask of the working image and the paper grey level."""
    from PIL import Image, ImageFilter

    blurred = np.asarray(
        Image.fromarray(work).filter(ImageFilter.GaussianBlur(spec.blur_radius)), dtype=np.uint8
    )
    t = otsu_threshold(blurred)
    ink = blurred <= t
    n_ink = int(ink.sum())
    if n_ink == 0 or n_ink == ink.size:
        raise NoInkError(f"{name}: no signature ink found (the image is blank); scan the signed area")
    hist_all = np.bincount(work.ravel(), minlength=256)
    hist_ink = np.bincount(work[ink], minlength=256)
    paper = _hist_median(hist_all - hist_ink)
    ink_level = _hist_median(hist_ink)
    if paper - ink_level < spec.min_contrast:
        raise NoInkError(
            f"{name}: no signature ink found (contrast {paper - ink_level:.0f} grey levels); "
            "scan the signed area with more contrast"
        )
    if n_ink > spec.max_ink_fraction * ink.size:
        raise NoInkError(
            f"{name}: no signature on paper found ({100 * n_ink / ink.size:.0f}% of the image is dark); "
            "scan the signature on a light background"
        )
    return ink, paper


def _clean_mask(ink: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Drop specks and scanner borders from the ink mask."""
    from scipy import ndimage

    labels, n = ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ink
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    min_size = max(spec.speck_min_pixels, spec.speck_fraction * sizes.sum())
    keep = sizes >= min_size
    h, w = ink.shape
    slices = ndimage.find_objects(labels)
    for i in np.flatnonzero(keep):
        if i == 0 or slices[i - 1] is None:
            continue
        rows, cols = slices[i - 1]
        touches = rows.start == 0 or cols.start == 0 or rows.stop == h or cols.stop == w
        spans = (rows.stop - rows.start) > spec.border_span * h or (cols.stop - cols.start) > spec.border_span * w
        if touches and spans:
            keep[i] = False
    keep[0] = False
    if not keep.any():  # only specks: keep the largest component rather than fail on a tiny signature
        keep[int(np.argmax(sizes))] = True
    return keep[labels]


def preprocess(grey: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC, *, name: str = "image") -> np.ndarray:
    """Scan -> model canvas.

    Args:
        grey: uint8 (H, W), 0 = black ink, 255 = white paper (as returned by :func:`read_image`).
        spec: the preprocessing spec of the model.
        name: used in error messages.

    Returns:
        float32 (spec.canvas_height, spec.canvas_width) in [0, 1]: ink bright, background exactly 0.

    Raises:
        NoInkError: the image holds no signature ink.
    """
    from PIL import Image

    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"preprocess expects uint8 (H, W), got {grey.dtype} {grey.shape}")
    work = _shrink(grey, spec.work_max_side)
    ink, paper = _ink_mask(work, spec, name)
    ink = _clean_mask(ink, spec)

    # Ink strength relative to the paper, normalised so its median is fixed.
    strength = np.where(ink, np.maximum(paper - work.astype(np.float32), 0.0), 0.0).astype(np.float32)
    med = float(np.median(strength[ink]))
    if med <= 0:
        raise NoInkError(f"{name}: no signature ink found; scan the signed area")
    strength = np.clip(strength * (spec.ink_median / med), 0.0, 1.0)

    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = strength[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    ch, cw = spec.canvas_height, spec.canvas_width
    inner_h = ch * (1 - 2 * spec.margin)
    inner_w = cw * (1 - 2 * spec.margin)
    h, w = crop.shape
    scale = min(inner_h / h, inner_w / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(
        Image.fromarray(crop, mode="F").resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None),
        dtype=np.float32,
    )
    canvas = np.zeros((ch, cw), dtype=np.float32)
    top, left = (ch - nh) // 2, (cw - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.clip(resized, 0.0, 1.0)
    return canvas


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
