"""Finding the signature on a whole document: a cheque or form image rather than a cropped signature.

:func:`locate_signature` returns the box of the one handwritten signature on a document image, or raises
:class:`~sigvault.errors.NoSignatureFoundError` when it cannot tell one (no handwriting, or two handwritten
fields equally placed to be the signature): guessing between a payee and a signature would verify the wrong ink.

How (numpy, OpenCV and SciPy's graph components, on a copy whose longer side is 1200 px, about a cheque at
200 dpi):

1. the paper is evened out (``imaging.flatten_background``) and ink is what is clearly darker than it;
2. round stamps are erased: a component as wide as tall whose convex hull is a circle and which is inked all
   round; and, when handwriting touches the stamp, the rings Hough's transform finds with their inner and
   outer concentric rings and what lies wholly inside them (the strokes crossing a ring keep their parts
   outside it);
3. printed rules are erased: level runs of ink 150 px long along a row (a field's line; a long run that bends
   by a pixel or more along most of its length is a pen's tail and stays), 45 px down a column (a box), and
   the scraps of a blurred rule's edges beside it;
4. printed text is told from handwriting by size: printed characters are the commonest component height, and
   a component at least 1.8 times as tall, or 4 times as wide, is handwriting (cursive joins its letters);
5. the ink is grouped into fields: pieces within 12 px across and 4 px up or down are one piece of writing
   (letters; a faint stroke broken by bitonal thresholding), and a group holding handwriting takes in what
   lies within 90 px across and 2 px up or down of any of its members, round after round (a tall signature's
   loops reach the line above, and must not join the handwriting there). Groups without handwriting are
   printed text;
6. of the fields, the signature is the one lowest on the document and, among those as low, the rightmost: on
   cheques and forms the signature comes last. Two fields whose places score within ``AMBIGUOUS`` of each other
   are refused rather than guessed between, and so is a document whose lowest handwriting ends in its upper
   half (the signature was lost, e.g. too faint for a bitonal capture: the payee is not a signature).

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
LOWEST_SIGNATURE = 0.5  # a signature ends below this share of the page's height: higher fields are the payee's...
AMBIGUOUS = 0.04  # two fields whose place scores differ by less than this: refuse
MIN_CONTRAST = 25  # grey levels darker than the paper to be ink
GROUP_ROUNDS = 4  # a field gathers pieces this many steps of GROUP away from its handwriting
PIECE = (12, 4)  # two pieces of ink this close are one piece of writing (letters of a word, a broken stroke)
RULE_EDGE = 3  # px beside a rule where the scraps of its blurred edges lie
RULE_PRINTED = 0.5  # a horizontal run this share of the page wide is a printed rule, however it lies
STRAIGHT = 1  # px: a shorter run is a rule only if its upper edge is this level (a pen's tail bends)...
RULE_STRAIGHT_SHARE = 0.7  # ...along this share of its length
STAMP_RADII = (36, 90)  # px at WORK_SIDE: a round stamp's outer radius
RING_INKED = 0.8  # a stamp's ring: ink on this share of its circumference
RING_BAND = 2.0  # px either side of an inked radius of a stamp's ring erased with it


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


def _label(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's 8-connected components with their stats, by Grana's block-based algorithm (BBDT): the same
    components as the default's, 3 to 4 times faster on a document's mask."""
    import cv2

    return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_BBDT)


def _rules(ink: np.ndarray) -> np.ndarray:
    """Printed rules of a binary ink mask (uint8, 255 = ink): horizontal runs of RULE_LENGTH px (a field's line)
    and vertical runs of BOX_SIDE px (a box's side), less the horizontal runs that are pen strokes
    (:func:`_is_printed`)."""
    import cv2

    h = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (RULE_LENGTH, 1)))
    n, labels, stats, _ = _label(h)
    strokes = [i for i in range(1, n) if not _is_printed(ink, stats[i])]
    if strokes:
        h = np.where(np.isin(labels, strokes), np.uint8(0), h)
    v = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, BOX_SIDE)))
    return cv2.bitwise_or(h, v)


def _without_rules(ink: np.ndarray) -> np.ndarray:
    """The ink mask without its printed rules (:func:`_rules`) and without the scraps of their edges that an
    anti-aliased or JPEG-blurred rule leaves beside it (components lying wholly within RULE_EDGE px of a rule;
    a stroke that crosses the rule reaches beyond and stays)."""
    import cv2

    rules = _rules(ink)
    out = cv2.bitwise_and(ink, cv2.bitwise_not(rules))
    near = cv2.dilate(rules, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * RULE_EDGE + 1, 2 * RULE_EDGE + 1)))
    n, labels, _, _ = _label(out)
    outside = np.bincount(labels[(out > 0) & (near == 0)], minlength=n)
    scraps = np.flatnonzero(outside == 0)
    scraps = scraps[scraps > 0]
    return np.where(np.isin(labels, scraps), np.uint8(0), out) if scraps.size else out


def _is_printed(ink: np.ndarray, stat: np.ndarray) -> bool:
    """Whether a horizontal run of ink (its OpenCV ``stat`` row in the opened mask) is a printed rule rather than
    a long pen stroke (a signature's tail): a rule is as long as RULE_PRINTED of the page, or its upper edge is
    level (within STRAIGHT px of its median on RULE_STRAIGHT_SHARE of its columns); a pen stroke bends. The runs
    come from an opening along rows, so only a level rule is found in the first place (a document is deskewed
    before its rules can be told)."""
    x, y, w, h = (int(v) for v in stat[:4])
    if w >= RULE_PRINTED * ink.shape[1]:
        return True
    band = ink[max(0, y - 3) : y + h, x : x + w] > 0
    top = np.argmax(band, axis=0)  # first ink row of each column, above the run or on it
    # the handwriting that crosses or touches a rule moves its upper edge in places, not along most of it
    return bool(np.mean(np.abs(top - np.median(top)) <= STRAIGHT) >= RULE_STRAIGHT_SHARE)


def _ring(labels: np.ndarray, label: int, stat: np.ndarray) -> bool:
    """Whether component ``label`` (its OpenCV ``stat`` row) is a round stamp: at least 40 px, about as wide as
    tall, its convex hull a circle (circularity 0.85 or more) filling the circle its box holds; whatever text
    the stamp carries inside its ring may be joined to it."""
    import cv2

    x, y, w, h = (int(v) for v in stat[:4])
    if not 0.8 <= w / max(h, 1) <= 1.25 or min(w, h) < 40:
        return False
    mask = (labels[y : y + h, x : x + w] == label).astype(np.uint8)
    hull = cv2.convexHull(cv2.findNonZero(mask))
    area, perimeter = cv2.contourArea(hull), cv2.arcLength(hull, True)
    circle = np.pi * (min(w, h) / 2.0) ** 2
    if not (perimeter > 0 and 4 * np.pi * area / perimeter**2 >= 0.85 and area >= 0.8 * circle):
        return False
    # and inked all round just inside its edge: a ring, not a round scribble
    r = min(w, h) / 2.0
    return any(_inked(mask, w / 2.0, h / 2.0, r - d) >= RING_INKED for d in range(1, 6))


def _without_rings(ink: np.ndarray) -> np.ndarray:
    """The ink mask (uint8, 255 = ink) without round stamps. A stamp on its own is one component
    (:func:`_ring`) and goes whole. A stamp that handwriting touches is found by its ring instead
    (:func:`_circles`): the ring's band is erased, with what lies wholly inside it (the stamp's text, an inner
    ring), and the strokes that cross it keep their parts outside."""

    n, labels, stats, _ = _label(ink)
    rings = [i for i in range(1, n) if _ring(labels, i, stats[i])]
    if rings:
        ink = np.where(np.isin(labels, rings), np.uint8(0), ink)
    circles = _circles(ink)
    yy, xx = np.ogrid[: ink.shape[0], : ink.shape[1]]
    for cx, cy, r in circles:
        ink = np.where(np.abs(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - r) <= RING_BAND, np.uint8(0), ink)
    for cx, cy in {(cx, cy) for cx, cy, _ in circles}:
        r = max(rr for x, y, rr in circles if (x, y) == (cx, cy))
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        n, labels, stats, _ = _label(ink)
        x0, y0, x1, y1 = stats[:, 0], stats[:, 1], stats[:, 0] + stats[:, 2], stats[:, 1] + stats[:, 3]
        inside = (x0 >= cx - r) & (x1 <= cx + r) & (y0 >= cy - r) & (y1 <= cy + r)
        inside[0] = False
        if inside.any():
            ink = np.where(np.isin(labels, np.flatnonzero(inside)) & (d < r), np.uint8(0), ink)
    return ink


def _circles(ink: np.ndarray) -> list[tuple[float, float, float]]:
    """The inked rings of round stamps in the ink mask, as (centre x, centre y, radius): circles found by
    Hough's transform on a half-size copy (fast), kept when ink lies on RING_INKED of their circumference (a
    pen's loop is neither so round nor so closed), with every concentric ring as inked from 0.6 to 1.6 times
    the radius found (a stamp's inner and outer rings)."""
    import cv2

    small = cv2.resize(ink, (ink.shape[1] // 2, ink.shape[0] // 2), interpolation=cv2.INTER_AREA)
    lo, hi = STAMP_RADII
    found = cv2.HoughCircles(
        cv2.GaussianBlur(small, (5, 5), 0), cv2.HOUGH_GRADIENT, dp=1, minDist=lo // 2,
        param1=100, param2=30, minRadius=lo // 2, maxRadius=hi // 2,
    )  # fmt: skip
    out: list[tuple[float, float, float]] = []
    for hx, hy, hr in (found[0] if found is not None else [])[:4]:
        # the half-size circle is +-1 px off: the centre and radius that put most of the circle on ink
        _, cx, cy, r = max(
            (_inked(ink, 2 * hx + dx, 2 * hy + dy, 2 * hr + dr), 2 * hx + dx, 2 * hy + dy, 2 * hr + dr)
            for dx in (-2, 0, 2) for dy in (-2, 0, 2) for dr in (-2, 0, 2)
        )  # fmt: skip
        rings = [rr for rr in np.arange(0.6 * r, 1.6 * r, 1.0) if _inked(ink, cx, cy, rr) >= RING_INKED]
        if any(abs(rr - r) <= 2 for rr in rings):  # the circle found is itself a ring
            out.extend((float(cx), float(cy), float(rr)) for rr in rings)
    return out


def _components(linked: np.ndarray) -> np.ndarray:
    """The connected components of a symmetric boolean adjacency matrix: each node's smallest member index."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(csr_matrix(linked), directed=False)
    first = np.full(labels.max() + 1, linked.shape[0])
    np.minimum.at(first, labels, np.arange(linked.shape[0]))
    return first[labels]


_ANGLES = np.linspace(0, 2 * np.pi, 180, endpoint=False)


def _inked(ink: np.ndarray, cx: float, cy: float, r: float) -> float:
    """The share of a circle's circumference (180 points) that lies on ink."""
    xs = np.clip(np.round(cx + r * np.cos(_ANGLES)).astype(int), 0, ink.shape[1] - 1)
    ys = np.clip(np.round(cy + r * np.sin(_ANGLES)).astype(int), 0, ink.shape[0] - 1)
    return float(np.mean(ink[ys, xs] > 0))


def _fields(stats: np.ndarray, hand: np.ndarray, real: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Handwritten fields: groups of components (boxes ``stats[i, :4]``, the ``real`` ones). Pieces within PIECE
    of each other are one piece of writing (the letters of a word; a faint stroke that bitonal thresholding
    broke); a group holding handwriting (``hand``) also takes in whatever lies within GROUP across and up or
    down of any of its members, over GROUP_ROUNDS rounds, so a signature's small letters between its tall ones
    are part of it. A group without handwriting is printed text and is dropped. Returns (x0, y0, x1, y1, ink
    pixels) of each field."""
    idx = np.flatnonzero(real)
    x0, y0 = stats[idx, 0], stats[idx, 1]
    x1, y1 = x0 + stats[idx, 2], y0 + stats[idx, 3]
    gx = np.maximum(0, np.maximum(x0[:, None], x0[None, :]) - np.minimum(x1[:, None], x1[None, :]))
    gy = np.maximum(0, np.maximum(y0[:, None], y0[None, :]) - np.minimum(y1[:, None], y1[None, :]))
    near = (gx <= GROUP[0]) & (gy <= GROUP[1])
    pieces = (gx <= PIECE[0]) & (gy <= PIECE[1])
    h = hand[idx]
    group = np.arange(idx.size)
    for _ in range(GROUP_ROUNDS):  # a field reaches out from every piece it has gathered
        handed = np.zeros(idx.size, bool)
        np.logical_or.at(handed, group, h)
        reach = handed[group]
        merged = _components(pieces | near & (reach[:, None] | reach[None, :]))
        if np.array_equal(merged, group):
            break
        group = merged
    out = []
    for g in np.unique(group):
        m = np.flatnonzero(group == g)
        if not h[m].any():
            continue
        area = int(stats[idx[m], 4].sum())
        out.append((int(x0[m].min()), int(y0[m].min()), int(x1[m].max()), int(y1[m].max()), area))
    return out


def locate_signature(grey: np.ndarray, *, name: str = "image") -> Region:
    """The box of the handwritten signature on a document image (uint8 grey (H, W), 0 = ink), in its pixels.

    Raises:
        NoSignatureFoundError: no handwriting on the document, or two handwritten fields equally placed to be
            its signature.
    """
    import cv2

    from sigvault.imaging import DEFAULT_SPEC, _hist_median, flatten_background

    h0, w0 = grey.shape
    f = WORK_SIDE / max(h0, w0)
    work = cv2.resize(grey, (max(1, round(w0 * f)), max(1, round(h0 * f))), interpolation=cv2.INTER_AREA)
    work = flatten_background(work, DEFAULT_SPEC)
    blurred = cv2.GaussianBlur(work, (3, 3), 0)
    # ink: clearly darker than the paper (a faint pen at 100 dpi is far lighter than printed text: Otsu's split
    # between print and paper would lose it)
    paper = _hist_median(np.bincount(blurred.ravel(), minlength=256))
    # the paper's grain: the median distance of a pixel from the paper's level (counted, not sorted: fast)
    grain = _hist_median(np.bincount(cv2.absdiff(blurred, np.full_like(blurred, round(paper))).ravel(), minlength=256))
    ink = cv2.threshold(blurred, paper - max(MIN_CONTRAST, 4 * grain), 255, cv2.THRESH_BINARY_INV)[1]
    ink = _without_rings(ink)  # before the rules: a rule's opening would cut a ring's sides
    ink = _without_rules(ink)
    _, _, stats, _ = _label(ink)
    widths, heights, areas = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_AREA]
    real = areas >= 20  # not JPEG noise or dust
    if not real.any():
        raise NoSignatureFoundError(f"{name}: no handwriting found on the document; give --region or --layout")
    text = float(np.median(heights[real]))  # printed characters are the commonest component
    # tall, or wide and taller than print (printed digits run together at 100 dpi, one line high)
    hand = real & ((heights >= TALLER * text) | (widths >= WIDER * heights) & (heights >= 1.2 * text))
    if not hand.any():
        raise NoSignatureFoundError(f"{name}: no handwriting found on the document; give --region or --layout")
    hh, ww = work.shape
    fields = []
    for x0, y0, x1, y1, area in _fields(stats[1:], hand, real):
        if x1 - x0 < 3 * text or y1 - y0 < 1.5 * text:
            continue  # a stray mark, not a field
        place = (y1 / hh) + 0.35 * ((x0 + x1) / 2 / ww)  # lowest first, then rightmost
        fields.append((place, (x0, y0, x1, y1), area))
    if not fields:
        raise NoSignatureFoundError(f"{name}: no handwritten field found on the document; give --region or --layout")
    largest = max(n for _, _, n in fields)
    fields = sorted((f for f in fields if f[2] >= 0.25 * largest), reverse=True)  # a few strokes are no field
    if len(fields) > 1 and fields[0][0] - fields[1][0] < AMBIGUOUS:
        raise NoSignatureFoundError(
            f"{name}: two handwritten fields could each be the signature; give --region or --layout"
        )
    x0, y0, x1, y1 = fields[0][1]
    if y1 < LOWEST_SIGNATURE * hh:
        raise NoSignatureFoundError(
            f"{name}: no handwriting in the lower half of the document, where a signature would be; "
            "give --region or --layout"
        )
    return Region(round(x0 / f), round(y0 / f), round((x1 - x0) / f), round((y1 - y0) / f))
