"""Synthetic handwritten signatures: a writer's signature with natural variation, and imitations of it.

Used by ``sigvault demo`` and by the tests, because no scan from a real dataset may be shipped. Pure
(Pillow + numpy) and deterministic: the same seed gives the same pixels.

How a signature is made
-----------------------
A :class:`SyntheticWriter` draws, once from its seed, a *style*: a name-like sequence of cursive letter
shapes (arches, ovals, ascender and descender loops, a tall capital), an optional initial, pen lifts
between some letters, a slant, a baseline tilt, letter widths, stroke width, a pressure rhythm, an ink
shade and an optional flourish under the name. Control points are joined by Catmull-Rom splines and
drawn with a pressure-dependent width.

- :meth:`SyntheticWriter.genuine` draws the style with the small variation of a person signing again:
  jitter of the control points, slant, scale, rotation, stroke width, position, ink and paper.
- :meth:`SyntheticWriter.forgery` draws an imitation: the same overall shape, but with the systematic
  errors of a forger (letter proportions and slant off, shapes misread), a tremor along the stroke, blunt
  stroke ends, hesitation (pen lifts and ink blots where the writer's pen ran on) and more uniform pressure.
  ``skill`` in [0, 1] scales these errors down.

Paper, ink shade, noise and image size come from a :class:`Capture`, identical for genuine signatures and
forgeries unless the caller asks otherwise (the tests inject a capture cue on purpose to check that
``sigvault evaluate`` notices it).

Images are greyscale (mode ``"L"``), about 900x400 pixels: a 300-dpi scan of a signature box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Capture", "DatasetInfo", "SyntheticWriter", "write_dataset", "writer_seed"]

# Letter shapes, in units of the x-height: x to the right, y up from the baseline. Each enters at the
# left and leaves at the right near the baseline, so consecutive letters join into cursive.
_LOWER: dict[str, list[tuple[float, float]]] = {
    "n": [(0.0, 0.1), (0.15, 0.9), (0.4, 1.0), (0.55, 0.45), (0.6, 0.0), (0.8, 0.1)],
    "m": [(0.0, 0.1), (0.1, 0.9), (0.3, 0.95), (0.4, 0.05), (0.5, 0.9), (0.7, 0.95), (0.8, 0.05), (1.0, 0.15)],
    "u": [(0.0, 0.3), (0.1, 0.95), (0.15, 0.1), (0.4, 0.05), (0.5, 0.95), (0.55, 0.1), (0.75, 0.15)],
    "o": [(0.0, 0.3), (0.55, 0.95), (0.25, 1.0), (0.05, 0.55), (0.3, 0.0), (0.6, 0.5), (0.55, 0.95), (0.85, 0.8)],
    "e": [(0.0, 0.1), (0.5, 0.55), (0.45, 0.95), (0.15, 0.75), (0.2, 0.1), (0.65, 0.05)],
    "a": [
        (0.0, 0.3),
        (0.5, 0.9),
        (0.2, 0.95),
        (0.05, 0.4),
        (0.3, 0.0),
        (0.55, 0.6),
        (0.6, 1.0),
        (0.6, 0.1),
        (0.8, 0.1),
    ],
    "r": [(0.0, 0.2), (0.2, 1.0), (0.35, 0.75), (0.55, 1.0), (0.6, 0.05), (0.75, 0.15)],
    "l": [(0.0, 0.1), (0.45, 1.4), (0.55, 2.35), (0.3, 2.4), (0.2, 1.4), (0.3, 0.05), (0.6, 0.15)],
    "h": [
        (0.0, 0.1),
        (0.4, 1.5),
        (0.45, 2.3),
        (0.2, 2.2),
        (0.2, 0.0),
        (0.35, 0.85),
        (0.6, 0.9),
        (0.65, 0.0),
        (0.8, 0.1),
    ],
    "b": [
        (0.0, 0.1),
        (0.4, 1.5),
        (0.45, 2.3),
        (0.2, 2.2),
        (0.2, 0.05),
        (0.5, 0.2),
        (0.6, 0.8),
        (0.35, 0.7),
        (0.8, 0.6),
    ],
    "g": [
        (0.0, 0.5),
        (0.45, 1.0),
        (0.1, 0.85),
        (0.15, 0.2),
        (0.5, 0.95),
        (0.5, -0.5),
        (0.3, -1.3),
        (0.1, -0.9),
        (0.55, -0.1),
        (0.8, 0.2),
    ],
    "y": [
        (0.0, 0.4),
        (0.1, 0.95),
        (0.2, 0.1),
        (0.5, 0.95),
        (0.45, -0.6),
        (0.2, -1.25),
        (0.05, -0.8),
        (0.6, -0.05),
        (0.8, 0.2),
    ],
    "s": [(0.0, 0.1), (0.3, 1.0), (0.45, 0.5), (0.5, 0.1), (0.2, 0.05), (0.7, 0.1)],
    "v": [(0.0, 0.8), (0.15, 0.95), (0.3, 0.0), (0.55, 1.0), (0.45, 0.85), (0.75, 0.85)],
    "i": [(0.0, 0.2), (0.2, 1.0), (0.25, 0.05), (0.45, 0.15)],
    "t": [(0.0, 0.2), (0.3, 1.8), (0.3, 0.1), (0.5, 0.05), (0.65, 0.3)],
}
_CAPITAL: dict[str, list[tuple[float, float]]] = {
    "C": [(1.0, 2.2), (0.6, 2.8), (0.15, 2.3), (0.0, 1.0), (0.35, 0.0), (0.9, 0.4), (1.1, 0.5)],
    "L": [
        (0.3, 1.0),
        (0.85, 2.7),
        (0.55, 3.0),
        (0.35, 2.3),
        (0.35, 0.5),
        (0.1, 0.0),
        (0.0, 0.25),
        (0.5, 0.1),
        (1.1, 0.1),
    ],
    "M": [(0.0, 0.0), (0.15, 2.6), (0.35, 0.6), (0.6, 2.6), (0.75, 0.2), (0.95, 0.05), (1.2, 0.3)],
    "S": [(0.9, 2.3), (0.5, 2.8), (0.15, 2.3), (0.5, 1.4), (0.85, 0.6), (0.4, 0.0), (0.0, 0.3), (0.6, 0.3), (1.2, 0.4)],
    "B": [(0.2, 0.0), (0.3, 2.7), (0.8, 2.5), (0.7, 1.5), (0.3, 1.4), (0.9, 1.0), (0.7, 0.1), (0.2, 0.2), (1.2, 0.3)],
    "R": [(0.2, 0.0), (0.25, 2.7), (0.85, 2.4), (0.6, 1.4), (0.3, 1.35), (0.75, 0.6), (1.0, 0.0), (1.2, 0.2)],
    "D": [(0.3, 2.5), (0.3, 0.0), (0.0, 0.3), (0.6, 0.05), (1.1, 1.2), (0.7, 2.6), (0.0, 2.4), (0.6, 2.0)],
    "J": [(0.3, 2.4), (1.0, 2.8), (0.7, 2.6), (0.6, 0.2), (0.4, -1.0), (0.05, -0.7), (0.5, 0.0), (1.1, 0.3)],
}
_LOWER_KEYS = tuple(sorted(_LOWER))
_CAPITAL_KEYS = tuple(sorted(_CAPITAL))


@dataclass(frozen=True)
class Capture:
    """How a signature is scanned: paper, ink, noise and image size (uniform ranges, grey levels 0-255).

    The default is shared by genuine signatures and forgeries, so nothing but the signature tells them
    apart. Pass another ``Capture`` to inject a capture-session cue on purpose.
    """

    paper: tuple[float, float] = (226.0, 248.0)  # paper grey level
    paper_gradient: float = 4.0  # at most this many grey levels of shading across the page
    noise: tuple[float, float] = (1.5, 4.0)  # std of the scanner noise
    ink_shift: float = 0.0  # added to the pen's ink grey level (negative: darker ink)
    size: tuple[int, int] = (900, 400)  # nominal width, height in pixels
    size_jitter: tuple[int, int] = (40, 20)  # +/- pixels on width, height


DEFAULT_CAPTURE = Capture()


@dataclass(frozen=True)
class _Style:
    """A writer's signature, drawn once from the seed."""

    strokes: tuple[np.ndarray, ...]  # control points (n, 2) per pen-down stroke, x-height units
    letter_of_point: tuple[np.ndarray, ...]  # letter index of each control point, per stroke
    n_letters: int
    slant: float  # shear: x += slant * y
    tilt_deg: float  # baseline rotation
    x_height: float  # pixels
    stroke_width: float  # pixels
    ink: float  # grey level of the pen
    pressure_phase: float
    pressure_wavelength: float  # pixels of path per pressure cycle
    taper: float  # fraction of a stroke over which a fluent writer's pen lands and lifts


def _rng(*key: int) -> np.random.Generator:
    """An independent random stream for each key (seed, purpose, sample...): call order never matters."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _catmull_rom(points: np.ndarray, samples_per_segment: int = 12) -> np.ndarray:
    """Uniform Catmull-Rom spline through (n, 2) points -> ((n - 1) * s + 1, 2)."""
    n = len(points)
    if n < 2:
        return points.copy()
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    p0, p1, p2, p3 = padded[:-3], padded[1:-2], padded[2:-1], padded[3:]
    # (segments, samples, 2)
    seg = 0.5 * (
        (2 * p1)[:, None, :]
        + (p2 - p0)[:, None, :] * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None, :] * t2
        + (-p0 + 3 * p1 - 3 * p2 + p3)[:, None, :] * t3
    )
    return np.vstack([seg.reshape(-1, 2), points[-1:]])


def _resample(path: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a polyline to (about) equal arc-length spacing; returns points and arc length of each."""
    d = np.hypot(*np.diff(path, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(d)])
    total = float(s[-1])
    if total <= spacing:
        return path[[0, -1]], np.array([0.0, total])
    n = math.ceil(total / spacing) + 1
    u = np.linspace(0.0, total, n)
    return np.column_stack([np.interp(u, s, path[:, 0]), np.interp(u, s, path[:, 1])]), u


def _smooth_noise(rng: np.random.Generator, n: int, correlation: int) -> np.ndarray:
    """n values of unit-scale noise, smooth over about ``correlation`` samples."""
    knots = rng.standard_normal(n // max(correlation, 1) + 3)
    x = np.linspace(0.0, len(knots) - 3, n)
    return np.interp(x, np.arange(len(knots)), knots)


def _normals(path: np.ndarray) -> np.ndarray:
    tangent = np.gradient(path, axis=0)
    norm = np.hypot(tangent[:, 0], tangent[:, 1])[:, None]
    tangent = tangent / np.maximum(norm, 1e-9)
    return np.column_stack([-tangent[:, 1], tangent[:, 0]])


@dataclass(frozen=True)
class _Pen:
    """Per-sample drawing parameters."""

    point_jitter: float  # std of control-point jitter, x-height units
    letter_scale: np.ndarray  # (n_letters, 2): x and y scale of each letter
    letter_shift: np.ndarray  # (n_letters, 2): offset of each letter, x-height units
    slant: float
    rotation_deg: float
    scale: float
    stroke_width: float
    ink: float
    tremor: float  # pixels
    tremor_wavelength: float  # pixels
    blunt: bool  # no taper at stroke ends
    pressure_depth: float  # 0 = uniform pressure; the mean pressure is the same whatever the depth
    hesitations: int  # extra pen lifts with a blot
    blot_scale: float


class SyntheticWriter:
    """A synthetic person with a signature style fixed by ``seed``.

    >>> w = SyntheticWriter(7)
    >>> w.genuine(0).size  # doctest: +SKIP
    (912, 393)
    """

    def __init__(self, seed: int) -> None:
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed = int(seed)
        self.style = self._make_style(_rng(self.seed, 0))

    def __repr__(self) -> str:
        return f"SyntheticWriter(seed={self.seed})"

    # -- style ---------------------------------------------------------------------------------------

    @staticmethod
    def _make_style(rng: np.random.Generator) -> _Style:
        strokes: list[np.ndarray] = []
        letters_of: list[np.ndarray] = []
        letter = 0
        lift_prob = rng.uniform(0.0, 0.3)
        width_factor = rng.uniform(1.0, 1.6)
        spacing = rng.uniform(0.1, 0.35)

        def word(capital: str, lower: Sequence[str], x0: float) -> float:
            nonlocal letter
            current: list[np.ndarray] = []
            current_letters: list[int] = []
            x = x0
            shapes = [(_CAPITAL[capital], rng.uniform(0.8, 1.15))] + [(_LOWER[c], 1.0) for c in lower]
            for k, (shape, size) in enumerate(shapes):
                pts = np.asarray(shape, dtype=np.float64)
                # The writer's own version of the letter: a fixed deformation of the template.
                pts = pts + rng.normal(0.0, 0.1, pts.shape)
                pts[:, 0] *= width_factor * size
                pts[:, 1] *= size
                pts[:, 0] += x
                if current and k > 0 and rng.random() < lift_prob:
                    strokes.append(np.vstack(current))
                    letters_of.append(np.asarray(current_letters))
                    current, current_letters = [], []
                current.append(pts)
                current_letters.extend([letter] * len(pts))
                x = float(pts[:, 0].max()) + spacing
                letter += 1
            strokes.append(np.vstack(current))
            letters_of.append(np.asarray(current_letters))
            return x

        x = 0.0
        if rng.random() < 0.5:  # an initial: a capital, sometimes with a letter or two
            cap = _CAPITAL_KEYS[rng.integers(len(_CAPITAL_KEYS))]
            tail = [_LOWER_KEYS[i] for i in rng.integers(len(_LOWER_KEYS), size=int(rng.integers(0, 3)))]
            x = word(cap, tail, x) + rng.uniform(0.4, 0.9)
        cap = _CAPITAL_KEYS[rng.integers(len(_CAPITAL_KEYS))]
        surname = [_LOWER_KEYS[i] for i in rng.integers(len(_LOWER_KEYS), size=int(rng.integers(3, 8)))]
        start = x
        x = word(cap, surname, x)
        last = strokes[-1]
        if rng.random() < 0.7:  # a flourish: from the last letter, a sweep back under the name
            depth = rng.uniform(-0.9, -0.4)
            end = last[-1]
            sweep = np.array(
                [
                    [end[0] + rng.uniform(0.3, 0.9), end[1] + rng.uniform(0.2, 0.8)],
                    [end[0] + rng.uniform(0.2, 0.6), depth + rng.uniform(-0.2, 0.2)],
                    [(start + x) / 2 + rng.uniform(-0.5, 0.5), depth + rng.uniform(-0.3, 0.1)],
                    [start + rng.uniform(-0.5, 0.5), depth + rng.uniform(-0.1, 0.4)],
                ]
            )
            strokes[-1] = np.vstack([last, sweep])
            letters_of[-1] = np.concatenate([letters_of[-1], np.full(len(sweep), letters_of[-1][-1])])
        return _Style(
            strokes=tuple(strokes),
            letter_of_point=tuple(letters_of),
            n_letters=letter,
            slant=float(rng.uniform(-0.1, 0.5)),
            tilt_deg=float(rng.uniform(-4.0, 4.0)),
            x_height=float(rng.uniform(44.0, 66.0)),
            stroke_width=float(rng.uniform(2.5, 5.0)),
            ink=float(rng.uniform(20.0, 90.0)),
            pressure_phase=float(rng.uniform(0.0, 2 * math.pi)),
            pressure_wavelength=float(rng.uniform(60.0, 160.0)),
            taper=float(rng.uniform(0.04, 0.1)),
        )

    # -- samples -------------------------------------------------------------------------------------

    def genuine(self, i: int, *, capture: Capture = DEFAULT_CAPTURE) -> Image.Image:
        """The ``i``-th genuine signature: the style with a person's natural variation. Mode ``"L"``."""
        st = self.style
        rng = _rng(self.seed, 1, i)
        pen = _Pen(
            point_jitter=0.035,
            letter_scale=rng.normal(1.0, 0.04, (st.n_letters, 2)),
            letter_shift=rng.normal(0.0, 0.03, (st.n_letters, 2)),
            slant=st.slant + rng.normal(0.0, 0.03),
            rotation_deg=st.tilt_deg + rng.normal(0.0, 1.2),
            scale=float(np.exp(rng.normal(0.0, 0.05))),
            stroke_width=st.stroke_width * float(np.exp(rng.normal(0.0, 0.08))),
            ink=st.ink + rng.normal(0.0, 6.0),
            tremor=0.0,
            tremor_wavelength=10.0,
            blunt=False,
            pressure_depth=0.55,
            hesitations=0,
            blot_scale=1.0,
        )
        return self._render(pen, st.strokes, rng, capture)

    def forgery(self, i: int, *, skill: float = 0.7, capture: Capture = DEFAULT_CAPTURE) -> Image.Image:
        """The ``i``-th imitation by a forger who has seen the signature. Mode ``"L"``.

        ``skill`` in [0, 1]: 1 is a practised forger (small distortions), 0 a clumsy one. Four forgers
        take turns (``i % 4``); each makes its own systematic errors in every imitation.
        """
        if not 0.0 <= skill <= 1.0:
            raise ValueError(f"skill must be in [0, 1], got {skill}")
        st = self.style
        a = 1.25 - skill  # amount of distortion, 0.25 .. 1.25
        forger = _rng(self.seed, 2, i % 4)
        rng = _rng(self.seed, 3, i, round(skill * 1000))
        # The forger's systematic errors: letter proportions, slant, and a misreading of the shapes.
        letter_scale = forger.normal(1.0, 0.14 * a, (st.n_letters, 2)) * rng.normal(1.0, 0.05, (st.n_letters, 2))
        letter_shift = forger.normal(0.0, 0.1 * a, (st.n_letters, 2)) + rng.normal(0.0, 0.04, (st.n_letters, 2))
        misread = [forger.normal(0.0, 0.12 * a, s.shape) for s in st.strokes]
        slant_error = forger.choice([-1.0, 1.0]) * forger.uniform(0.08, 0.2) * a
        pen = _Pen(
            point_jitter=0.05 + 0.03 * a,
            letter_scale=letter_scale,
            letter_shift=letter_shift,
            slant=st.slant + slant_error + rng.normal(0.0, 0.04),
            rotation_deg=st.tilt_deg + forger.normal(0.0, 2.0 * a) + rng.normal(0.0, 1.5),
            scale=float(np.exp(forger.normal(0.0, 0.1 * a) + rng.normal(0.0, 0.05))),
            stroke_width=st.stroke_width * float(np.exp(forger.normal(0.0, 0.08) + rng.normal(0.0, 0.08))),
            ink=st.ink + rng.normal(0.0, 6.0),
            tremor=float(forger.uniform(0.5, 1.0) * (0.6 + 0.9 * a)),
            tremor_wavelength=float(forger.uniform(7.0, 14.0)),
            blunt=True,
            pressure_depth=0.2,
            hesitations=int(rng.integers(1, 3 + round(2 * a))),
            blot_scale=float(forger.uniform(1.3, 1.8)),
        )
        strokes = tuple(s + m for s, m in zip(st.strokes, misread, strict=True))
        return self._render(pen, strokes, rng, capture)

    # -- drawing -------------------------------------------------------------------------------------

    def _render(
        self, pen: _Pen, strokes: tuple[np.ndarray, ...], rng: np.random.Generator, capture: Capture
    ) -> Image.Image:
        st = self.style
        width = capture.size[0] + int(rng.integers(-capture.size_jitter[0], capture.size_jitter[0] + 1))
        height = capture.size[1] + int(rng.integers(-capture.size_jitter[1], capture.size_jitter[1] + 1))

        # Control points -> splines in x-height units. Each letter is scaled about its left edge (and the
        # middle of the x-height); the letters after it move along, as when a hand writes wider.
        allp = np.vstack(strokes)
        alll = np.concatenate(st.letter_of_point)
        left = np.full(st.n_letters, np.inf)
        right = np.full(st.n_letters, -np.inf)
        np.minimum.at(left, alll, allp[:, 0])
        np.maximum.at(right, alll, allp[:, 0])
        extra = (pen.letter_scale[:, 0] - 1.0) * np.maximum(right - left, 0.0)
        carry = np.concatenate([[0.0], np.cumsum(extra)[:-1]])
        paths: list[np.ndarray] = []
        for pts, letters in zip(strokes, st.letter_of_point, strict=True):
            ls = pen.letter_scale[letters]
            p = np.empty_like(pts)
            p[:, 0] = left[letters] + (pts[:, 0] - left[letters]) * ls[:, 0] + carry[letters]
            p[:, 1] = 0.5 + (pts[:, 1] - 0.5) * ls[:, 1]
            p = p + pen.letter_shift[letters] + rng.normal(0.0, pen.point_jitter, p.shape)
            paths.append(_catmull_rom(p))

        # Global geometry: slant, size, rotation (y flipped to image rows).
        theta = math.radians(pen.rotation_deg)
        cos, sin = math.cos(theta), math.sin(theta)
        px_per_unit = st.x_height * pen.scale
        placed = []
        for path in paths:
            x = (path[:, 0] + pen.slant * path[:, 1]) * px_per_unit
            y = -path[:, 1] * px_per_unit
            placed.append(np.column_stack([cos * x - sin * y, sin * x + cos * y]))
        allpts = np.vstack(placed)
        lo, hi = allpts.min(axis=0), allpts.max(axis=0)
        margin = 0.06 * min(width, height) + pen.stroke_width * 2
        fit = min(1.0, (width - 2 * margin) / max(hi[0] - lo[0], 1.0), (height - 2 * margin) / max(hi[1] - lo[1], 1.0))
        span = (hi - lo) * fit
        room = np.array([width, height]) - 2 * margin - span
        offset = margin + room * np.clip(rng.normal(0.5, 0.12, 2), 0.0, 1.0) - lo * fit
        placed = [p * fit + offset for p in placed]
        stroke_width = pen.stroke_width * max(fit, 0.6)

        # Pen-down segments with arc length, tremor, hesitations.
        segments: list[tuple[np.ndarray, np.ndarray, bool, bool]] = []  # points, arc length, blot at start, at end
        for path in placed:
            pts, s = _resample(path, 2.0)
            if pen.tremor > 0 and len(pts) > 3:
                wobble = 0.6 * np.sin(2 * math.pi * s / pen.tremor_wavelength + rng.uniform(0, 2 * math.pi))
                wobble += 0.5 * _smooth_noise(rng, len(pts), 3)
                pts = pts + _normals(pts) * (pen.tremor * wobble)[:, None]
            segments.append((pts, s, False, False))
        for _ in range(pen.hesitations):
            k = int(np.argmax([len(seg[0]) for seg in segments]))
            pts, s, b0, b1 = segments[k]
            if len(pts) < 40:
                break
            cut = int(rng.integers(15, len(pts) - 15))
            gap = int(rng.integers(0, 3))
            segments[k : k + 1] = [(pts[:cut], s[:cut], b0, True), (pts[cut + gap :], s[cut + gap :], True, b1)]

        # Ink strength layer: 0 = no ink, 255 = full ink; width and strength follow the pressure.
        layer = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(layer)
        for pts, s, blot_start, blot_end in segments:
            n = len(pts)
            if n < 2:
                continue
            local = s - s[0]
            length = max(float(local[-1]), 1.0)
            pressure = 0.75 - 0.5 * pen.pressure_depth * np.sin(
                2 * math.pi * s / st.pressure_wavelength + st.pressure_phase
            )
            if not pen.blunt:
                ramp = np.clip(
                    np.minimum(local, length - local) / max(st.taper * length, 6.0 * stroke_width / 3.0), 0.0, 1.0
                )
                pressure = pressure * (0.35 + 0.65 * ramp)
            widths = stroke_width * (0.55 + 0.6 * pressure)
            strength = 150.0 + 105.0 * pressure
            step = 6
            for j in range(0, n - 1, step):
                chunk = pts[j : j + step + 1]
                w = max(1, round(float(widths[j])))
                draw.line([tuple(q) for q in chunk.tolist()], fill=int(strength[j]), width=w, joint="curve")
            for flag, q in ((blot_start, pts[0]), (blot_end, pts[-1])):
                if flag:
                    r = 0.5 * stroke_width * pen.blot_scale
                    draw.ellipse([q[0] - r, q[1] - r, q[0] + r, q[1] + r], fill=255)

        # Paper: grey level, a faint shading across the page, scanner noise (uniform: cheap, and its
        # shape does not matter); then the ink, softened like a scan's optics, laid on top.
        paper = float(rng.uniform(*capture.paper))
        gx, gy = rng.uniform(-1.0, 1.0, 2) * capture.paper_gradient
        sigma = float(rng.uniform(*capture.noise))
        grey = rng.random((height, width), dtype=np.float32)
        grey -= np.float32(0.5)
        grey *= np.float32(sigma * math.sqrt(12.0))
        grey += np.linspace(paper - gx / 2, paper + gx / 2, width, dtype=np.float32)[None, :]
        grey += np.linspace(-gy / 2, gy / 2, height, dtype=np.float32)[:, None]
        ink = np.float32(np.clip(pen.ink + capture.ink_shift, 0.0, 200.0))
        box = layer.getbbox()
        if box is not None:
            pad = 3
            x0, y0 = max(box[0] - pad, 0), max(box[1] - pad, 0)
            x1, y1 = min(box[2] + pad, width), min(box[3] + pad, height)
            soft = layer.crop((x0, y0, x1, y1)).filter(ImageFilter.GaussianBlur(0.7))
            alpha = np.asarray(soft, dtype=np.float32) * np.float32(1.0 / 255.0)
            region = grey[y0:y1, x0:x1]
            region += alpha * (ink - region)
        grey += np.float32(0.5)
        return Image.fromarray(np.clip(grey, 0.0, 255.0).astype(np.uint8), mode="L")


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`write_dataset` wrote."""

    root: Path
    writers: tuple[str, ...]
    genuine: int  # per writer
    forged: int  # per writer


def writer_seed(seed: int, k: int) -> int:
    """The seed of the ``k``-th writer of a dataset made with ``seed``."""
    return int(np.random.SeedSequence([int(seed), 0x5157, k]).generate_state(1)[0])


def write_dataset(
    root: Path | str,
    writers: int,
    genuine: int,
    forged: int,
    seed: int = 0,
    *,
    skill: float = 0.7,
    capture: Capture = DEFAULT_CAPTURE,
    forged_capture: Capture | None = None,
) -> DatasetInfo:
    """Write a synthetic dataset in the layout ``<root>/<writer>/{genuine,forged}/*.png``.

    Writers are named ``w000``, ``w001``...; files ``g000.png``... and ``f000.png``... The same arguments
    give the same files. ``forged_capture`` (default: ``capture``) lets a test give the forgeries another
    scanner, paper or pen, the capture bias that ``sigvault evaluate`` must detect.
    """
    root = Path(root)
    names = []
    for k in range(writers):
        name = f"w{k:03d}"
        names.append(name)
        w = SyntheticWriter(writer_seed(seed, k))
        gdir = root / name / "genuine"
        fdir = root / name / "forged"
        gdir.mkdir(parents=True, exist_ok=True)
        fdir.mkdir(parents=True, exist_ok=True)
        for j in range(genuine):
            w.genuine(j, capture=capture).save(gdir / f"g{j:03d}.png", format="PNG", compress_level=1)
        for j in range(forged):
            w.forgery(j, skill=skill, capture=forged_capture or capture).save(
                fdir / f"f{j:03d}.png", format="PNG", compress_level=1
            )
    return DatasetInfo(root=root, writers=tuple(names), genuine=genuine, forged=forged)
