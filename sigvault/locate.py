"""Finding the signature on a whole document: a cheque or form image rather than a cropped signature.

:func:`locate_signature` returns the box of the one handwritten signature on a document image, or raises
:class:`~sigvault.errors.NoSignatureFoundError` when it cannot tell one (no handwriting, or two handwritten
fields equally placed to be the signature): guessing between a payee and a signature would verify the wrong ink.

How (pure numpy + OpenCV, on a copy whose longer side is 1200 px, about a cheque at 200 dpi):

1. the paper is evened out (``imaging.flatten_background``) and ink is what is clearly darker than it;
2. a round stamp is erased (a component as wide as tall whose convex hull is a circle);
3. printed rules are erased: runs of ink 150 px long along a row (a field's line), 45 px down a column (a box);
4. printed text is told from handwriting by size: printed characters are the commonest component height, and
   a component at least 1.8 times as tall, or 4 times as wide, is handwriting (cursive joins its letters);
5. the handwriting is grouped into fields (components within 90 px across and 2 px up or down: a tall
   signature's loops reach the line above, and must not join the handwriting there); a field's box is its
   handwriting's, so printed words or a stamp's letters beside it do not stretch it;
6. of the fields, the signature is the one lowest on the document and, among those as low, the rightmost: on
   cheques and forms the signature comes last. Two fields whose places score within ``AMBIGUOUS`` of each other
   are refused rather than guessed between.

A known layout (``sigvault.layouts``) makes all this unnecessary: its zone is the signature's place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sigvault.errors import NoSignatureFoundError

WORK_SIDE = 1200
RULE_LENGTH = 150  # px at WORK_SIDE: a straight run this long along a row is a printed rule, not handwriting
BOX_SIDE = 45  # ...and along a column, a box's side
TALLER = 1.8  # handwriting: components this many times as tall as printed characters...
WIDER = 4.0  # ...or this many times as wide as they are tall
GROUP = (90, 2)  # handwriting within this many px across and up or down is one field
AMBIGUOUS = 0.04  # two fields whose place scores differ by less than this: refuse
MIN_CONTRAST = 25  # grey levels darker than the paper to be ink


@dataclass(frozen=True)
class Region:
    """A rectangle in pixels of an image: left, top, width, height (as ``--region X,Y,W,H`` gives it)."""

    x: int
    y: int
    w: int
    h: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), right and bottom exclusive."""
        return self.x, self.y, self.x + self.w, self.y + self.h

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y : self.y + self.h, self.x : self.x + self.w]

    def to_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


def _rules(ink: np.ndarray) -> np.ndarray:
    """Printed rules of a binary ink mask (uint8, 255 = ink): horizontal and vertical runs of RULE_LENGTH px."""
    import cv2

    h = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (RULE_LENGTH, 1)))
    v = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, BOX_SIDE)))
    return cv2.bitwise_or(h, v)


def _ring(labels: np.ndarray, label: int, stat: np.ndarray) -> bool:
    """Whether component ``label`` (its OpenCV ``stat`` row) is a round stamp: at least 40 px, about as wide as
    tall, its convex hull a circle (circularity 0.85 or more) filling the circle its box holds; whatever text
    the stamp carries inside its ring may be joined to it."""
    import cv2

    x, y, w, h = (int(v) for v in stat[:4])
    if not 0.8 <= w / max(h, 1) <= 1.25 or min(w, h) < 40:
        return False
    pts = cv2.findNonZero((labels[y : y + h, x : x + w] == label).astype(np.uint8))
    hull = cv2.convexHull(pts)
    area, perimeter = cv2.contourArea(hull), cv2.arcLength(hull, True)
    circle = np.pi * (min(w, h) / 2.0) ** 2
    return bool(perimeter > 0 and 4 * np.pi * area / perimeter**2 >= 0.85 and area >= 0.8 * circle)


def _without_rings(ink: np.ndarray) -> np.ndarray:
    """The ink mask (uint8, 255 = ink) without the components that are round stamps (:func:`_ring`). A stamp
    that a signature's strokes cross is one component with them, and stays (docs/documents.md)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    rings = [i for i in range(1, n) if _ring(labels, i, stats[i])]
    if not rings:
        return ink
    return np.where(np.isin(labels, rings), np.uint8(0), ink)


def locate_signature(grey: np.ndarray, *, name: str = "image") -> Region:
    """The box of the handwritten signature on a document image (uint8 grey (H, W), 0 = ink), in its pixels.

    Raises:
        NoSignatureFoundError: no handwriting on the document, or two handwritten fields equally placed to be
            its signature.
    """
    import cv2

    from sigvault.imaging import DEFAULT_SPEC, flatten_background

    h0, w0 = grey.shape
    f = WORK_SIDE / max(h0, w0)
    work = cv2.resize(grey, (max(1, round(w0 * f)), max(1, round(h0 * f))), interpolation=cv2.INTER_AREA)
    work = flatten_background(work, DEFAULT_SPEC)
    blurred = cv2.GaussianBlur(work, (3, 3), 0)
    # ink: clearly darker than the paper (a faint pen at 100 dpi is far lighter than printed text: Otsu's split
    # between print and paper would lose it)
    paper = float(np.median(blurred))
    grain = float(np.median(np.abs(blurred.astype(np.float32) - paper)))
    ink = cv2.threshold(blurred, paper - max(MIN_CONTRAST, 4 * grain), 255, cv2.THRESH_BINARY_INV)[1]
    ink = _without_rings(ink)  # before the rules: a rule's opening would cut a ring's sides
    ink = cv2.bitwise_and(ink, cv2.bitwise_not(_rules(ink)))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    widths, heights, areas = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_AREA]
    real = areas >= 20  # not JPEG noise or dust
    if not real.any():
        raise NoSignatureFoundError(f"{name}: no handwriting found on the document; give --region or --layout")
    text = float(np.median(heights[real]))  # printed characters are the commonest component
    # tall, or wide and taller than print (printed digits run together at 100 dpi, one line high)
    hand = real & ((heights >= TALLER * text) | (widths >= WIDER * heights) & (heights >= 1.2 * text))
    if not hand.any():
        raise NoSignatureFoundError(f"{name}: no handwriting found on the document; give --region or --layout")
    seeds = np.zeros_like(ink)
    seeds[np.isin(labels, np.flatnonzero(hand) + 1)] = 255
    grown = cv2.dilate(seeds, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * GROUP[0] + 1, 2 * GROUP[1] + 1)))
    m, groups, gstats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    fields = []
    for g in range(1, m):
        x, y, gw, gh = (int(v) for v in gstats[g, :4])
        inside = seeds[y : y + gh, x : x + gw] & (groups[y : y + gh, x : x + gw] == g).astype(np.uint8) * 255
        ys, xs = np.nonzero(inside)
        if ys.size == 0:
            continue
        box = (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)
        if box[2] - box[0] < 3 * text or box[3] - box[1] < 1.5 * text:
            continue  # a stray mark, not a field
        hh, ww = work.shape
        place = (box[3] / hh) + 0.35 * ((box[0] + box[2]) / 2 / ww)  # lowest first, then rightmost
        fields.append((place, box, int(ys.size)))
    if not fields:
        raise NoSignatureFoundError(f"{name}: no handwritten field found on the document; give --region or --layout")
    largest = max(n for _, _, n in fields)
    fields = sorted((f for f in fields if f[2] >= 0.25 * largest), reverse=True)  # a few strokes are no field
    if len(fields) > 1 and fields[0][0] - fields[1][0] < AMBIGUOUS:
        raise NoSignatureFoundError(
            f"{name}: two handwritten fields could each be the signature; give --region or --layout"
        )
    x0, y0, x1, y1 = fields[0][1]
    return Region(round(x0 / f), round(y0 / f), round((x1 - x0) / f), round((y1 - y0) / f))
