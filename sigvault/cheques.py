"""Synthetic cheques: a signature placed on a whole cheque image as a clearing system delivers it.

A back office receives the front of a cheque, not a cropped signature: printed fields in a real font, a
security background, boxes and lines, a handwritten payee and amount by another hand, a MICR line, sometimes a
rubber stamp, and the signature on its line in the lower right. :func:`render` draws one, with the true boxes
of the signature and of the other handwritten fields, rendered as one of the images cheque image exchange
produces (:data:`RENDERINGS`):

- ``bitonal``: 1-bit, 200 dpi, saved as TIFF with CCITT Group 4 compression;
- ``grey``: greyscale JPEG (quality 60-85) at 100-200 dpi;
- ``colour``: a colour scan, JPEG quality 90, 200 dpi.

Pure (numpy + Pillow) and seeded: the same inputs and seed give the same document. The signature and the
handwriting come from the caller as grey scans (the tests and the demo use ``sigvault.synth``; measurements use
the development datasets at run time, never stored in the repository).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import ImageFont

__all__ = ["RENDERINGS", "Box", "Document", "render"]

RENDERINGS = ("bitonal", "grey", "colour")
DPI = 200
WIDTH, HEIGHT = 1200, 550  # a 6 x 2.75 inch personal cheque at 200 dpi

# Where the layout puts things, in pixels at 200 dpi: (x0, y0, x1, y1).
_SIGNATURE_ZONE = (700, 300, 1170, 445)  # above the signature line, lower right
_SIGNATURE_LINE = (720, 1160, 425)  # x0, x1, y
_PAYEE_LINE = (270, 900, 215)
_AMOUNT_BOX = (930, 165, 1160, 222)
_WORDS_LINE = (40, 1000, 290)
_MEMO_LINE = (90, 520, 425)
_DATE_LINE = (860, 1160, 110)


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels of the rendered image: left, top, right, bottom (right and bottom exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    def scaled(self, f: float) -> Box:
        return Box(round(self.x0 * f), round(self.y0 * f), round(self.x1 * f), round(self.y1 * f))

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other``."""
        ix = max(0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = (self.x1 - self.x0) * (self.y1 - self.y0) + (other.x1 - other.x0) * (other.y1 - other.y0) - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Document:
    """A rendered cheque: the encoded file, its rendering, resolution, and the true boxes (rendered pixels)."""

    data: bytes  # the image file as the clearing system delivers it (TIFF G4 or JPEG)
    rendering: str
    dpi: int
    signature: Box
    fields: dict[str, Box]  # the other handwritten fields: payee, amount, words

    @property
    def suffix(self) -> str:
        return ".tif" if self.rendering == "bitonal" else ".jpg"


@lru_cache(maxsize=16)
def _font(size: int, mono: bool = False, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A real TrueType font: DejaVu where the system has it, else the one Pillow ships."""
    from PIL import ImageFont

    name = "DejaVuSansMono.ttf" if mono else ("DejaVuSerif-Bold.ttf" if bold else "DejaVuSans.ttf")
    for folder in ("/usr/share/fonts/truetype/dejavu/", ""):
        try:
            return ImageFont.truetype(folder + name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _ink(scan: np.ndarray) -> tuple[np.ndarray, Box]:
    """The ink coverage (float32 in [0, 1]) of a grey scan, cropped to its ink, and that crop in the scan."""
    g = scan.astype(np.float32)
    paper = float(np.percentile(g, 90))
    cover = np.clip((paper - g) / max(paper, 1.0) * 1.4 - 0.08, 0.0, 1.0)
    ys, xs = np.nonzero(cover > 0.25)
    if ys.size == 0:
        raise ValueError("the scan holds no ink to place on the cheque")
    box = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return cover[box.y0 : box.y1, box.x0 : box.x1], box


def _place(canvas: np.ndarray, cover: np.ndarray, zone: tuple[int, int, int, int], colour: np.ndarray,
           rng: np.random.Generator, *, baseline: int | None = None, fill: float = 1.0) -> Box:
    """Scale the ink ``cover`` to fit ``zone`` (up to ``fill`` of it), paint it in ``colour`` on ``canvas`` (float32
    RGB, in place), its bottom near ``baseline`` when given; -> the placed ink's box."""
    from PIL import Image

    zx0, zy0, zx1, zy1 = zone
    h, w = cover.shape
    f = min((zx1 - zx0) / w, (zy1 - zy0) / h) * fill
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    small = np.asarray(Image.fromarray(cover).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
    x0 = zx0 + int(rng.integers(0, max(1, zx1 - zx0 - nw + 1)))
    if baseline is None:
        y0 = zy0 + int(rng.integers(0, max(1, zy1 - zy0 - nh + 1)))
    else:  # signatures sit on their line, their lower loops crossing it
        y0 = min(max(0, baseline - nh + int(rng.integers(-5, 20))), canvas.shape[0] - nh)
    region = canvas[y0 : y0 + nh, x0 : x0 + nw]
    a = small[: region.shape[0], : region.shape[1], None]
    region[:] = region * (1.0 - a) + colour * a
    ys, xs = np.nonzero(small > 0.25 * float(small.max()))  # a thin pen shrunk is faint: its own strongest quarter
    return Box(x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)


def _security_background(rng: np.random.Generator) -> np.ndarray:
    """Tinted stock with a fine guilloche of wavy lines: float32 RGB (HEIGHT, WIDTH, 3)."""
    tint = np.array([rng.uniform(225, 250), rng.uniform(228, 250), rng.uniform(215, 248)], dtype=np.float32)
    line = tint - rng.uniform(20, 45)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    period, amp, freq = rng.uniform(9, 16), rng.uniform(6, 18), rng.uniform(0.006, 0.02)
    phase = (yy + amp * np.sin(xx * freq + rng.uniform(0, 6.3))) % period
    strength = np.clip(1.0 - np.abs(phase - period / 2) / 0.9, 0.0, 1.0)[..., None] * rng.uniform(0.3, 0.8)
    return tint * (1.0 - strength) + line * strength


def _stamp(canvas: np.ndarray, rng: np.random.Generator, near: Box) -> None:
    """A round rubber stamp in red, blue or violet, overlapping the signature zone's edge."""
    from PIL import Image, ImageDraw

    colour = [(190, 30, 40), (40, 60, 170), (110, 50, 150)][int(rng.integers(3))]
    r = int(rng.integers(48, 72))
    layer = Image.new("L", (2 * r + 8, 2 * r + 8), 0)
    d = ImageDraw.Draw(layer)
    d.ellipse((4, 4, 2 * r + 4, 2 * r + 4), outline=255, width=4)
    d.ellipse((16, 16, 2 * r - 8, 2 * r - 8), outline=255, width=2)
    d.text((r + 4, r + 4), "PAID", fill=255, font=_font(max(12, r // 3), bold=True), anchor="mm")
    alpha = np.asarray(layer.rotate(float(rng.uniform(-30, 30))), dtype=np.float32)[..., None] / 255.0 * 0.8
    cx = int(np.clip(near.x0 + rng.uniform(-0.3, 0.2) * (near.x1 - near.x0), r + 4, WIDTH - r - 4))
    cy = int(np.clip(near.y0 + rng.uniform(-0.2, 0.6) * (near.y1 - near.y0), r + 4, HEIGHT - r - 4))
    y0, x0 = cy - r - 4, cx - r - 4
    region = canvas[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]]
    a = alpha[: region.shape[0], : region.shape[1]]
    region[:] = region * (1.0 - a) + np.array(colour, dtype=np.float32) * a


def _printed(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """The printed layout: bank, fields' labels, lines, the amount box and the MICR line (in place)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), mode="RGB")
    d = ImageDraw.Draw(im)
    ink = tuple(int(v) for v in rng.integers(10, 60, 3))
    banks = ("First Provincial Bank", "Harbour Savings Bank", "Union Mutual Trust", "Northgate Credit Union")
    d.text((40, 28), banks[int(rng.integers(len(banks)))], fill=ink, font=_font(30, bold=True))
    d.text((40, 68), f"{int(rng.integers(1, 999))} High Street, Branch {int(rng.integers(10, 99))}", fill=ink, font=_font(16))
    d.text((1040, 28), f"{int(rng.integers(1000, 9999))}", fill=ink, font=_font(22, mono=True))
    d.text((800, 88), "DATE", fill=ink, font=_font(16))
    d.text((40, 190), "PAY TO THE\nORDER OF", fill=ink, font=_font(16))
    d.text((40, 300), "", fill=ink, font=_font(16))
    d.text((1005, 270), "DOLLARS", fill=ink, font=_font(16))
    d.text((40, 405), "MEMO", fill=ink, font=_font(16))
    width = int(rng.integers(1, 3))
    for x0, x1, y in (_PAYEE_LINE, _WORDS_LINE, _MEMO_LINE, _DATE_LINE, _SIGNATURE_LINE):
        d.line([(x0, y), (x1, y)], fill=ink, width=width)
    d.rectangle(_AMOUNT_BOX, outline=ink, width=width)
    d.text((_AMOUNT_BOX[0] - 22, _AMOUNT_BOX[1] + 12), "$", fill=ink, font=_font(26))
    micr = f"A{int(rng.integers(10**8, 10**9))}A {int(rng.integers(10**9, 10**10))}C {int(rng.integers(1000, 9999))}"
    d.text((150, 490), micr, fill=(0, 0, 0), font=_font(30, mono=True))
    canvas[:] = np.asarray(im, dtype=np.float32)


def _encode(rgb: np.ndarray, rendering: str, rng: np.random.Generator) -> tuple[bytes, int, float]:
    """The file a clearing system delivers: (bytes, dpi, scale of the rendered image relative to 200 dpi)."""
    from PIL import Image

    im = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")
    buf = io.BytesIO()
    if rendering == "bitonal":  # cheque image exchange: 1-bit, 200 dpi, CCITT Group 4
        grey = np.asarray(im.convert("L"), dtype=np.uint8)
        im1 = Image.fromarray(np.where(grey < rng.uniform(140, 175), 0, 255).astype(np.uint8)).convert("1", dither=None)
        im1.save(buf, format="TIFF", compression="group4", dpi=(DPI, DPI))
        return buf.getvalue(), DPI, 1.0
    if rendering == "grey":
        dpi = int(rng.choice([100, 120, 150, 200]))
        f = dpi / DPI
        small = im.convert("L").resize((round(WIDTH * f), round(HEIGHT * f)), Image.Resampling.BOX)
        small.save(buf, format="JPEG", quality=int(rng.integers(60, 86)), dpi=(dpi, dpi))
        return buf.getvalue(), dpi, f
    if rendering == "colour":
        im.save(buf, format="JPEG", quality=90, dpi=(DPI, DPI))
        return buf.getvalue(), DPI, 1.0
    raise ValueError(f"unknown rendering {rendering!r}; choose among {', '.join(RENDERINGS)}")


def render(signature: np.ndarray, others: list[np.ndarray], rendering: str, seed: int, *, stamp: float = 0.3) -> Document:
    """A cheque carrying ``signature`` (a grey scan, 0 = ink) on its signature line, with the payee, the amount
    and the amount in words handwritten by ``others`` (grey scans of other hands, at least one; reused in turn),
    rendered as ``rendering`` (:data:`RENDERINGS`); a stamp with probability ``stamp``.

    Returns:
        the :class:`Document`, with the signature's box and the other handwritten fields' boxes in its pixels.
    """
    if rendering not in RENDERINGS:
        raise ValueError(f"unknown rendering {rendering!r}; choose among {', '.join(RENDERINGS)}")
    if not others:
        raise ValueError("give at least one scan of another hand for the payee and the amount")
    rng = np.random.default_rng(seed)
    canvas = _security_background(rng)
    _printed(canvas, rng)
    pen = np.array([rng.uniform(10, 50), rng.uniform(15, 60), rng.uniform(40, 140)], dtype=np.float32)
    fields = {}
    for n, (name, zone) in enumerate((
        ("payee", (_PAYEE_LINE[0] + 10, _PAYEE_LINE[2] - 55, _PAYEE_LINE[1] - 10, _PAYEE_LINE[2] + 5)),
        ("amount", (_AMOUNT_BOX[0] + 8, _AMOUNT_BOX[1] + 6, _AMOUNT_BOX[2] - 8, _AMOUNT_BOX[3] - 6)),
        ("words", (_WORDS_LINE[0] + 20, _WORDS_LINE[2] - 50, _WORDS_LINE[0] + 620, _WORDS_LINE[2] + 5)),
    )):
        cover, _ = _ink(others[n % len(others)])
        fields[name] = _place(canvas, cover, zone, pen, rng, fill=float(rng.uniform(0.75, 1.0)))
    cover, _ = _ink(signature)
    sig = _place(canvas, cover, _SIGNATURE_ZONE, pen * rng.uniform(0.6, 1.1), rng, baseline=_SIGNATURE_LINE[2],
                 fill=float(rng.uniform(0.65, 0.95)))
    if rng.random() < stamp:
        _stamp(canvas, rng, sig)
    data, dpi, f = _encode(canvas, rendering, rng)
    return Document(data, rendering, dpi, sig.scaled(f), {k: b.scaled(f) for k, b in fields.items()})
