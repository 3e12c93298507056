"""The signature zone of a whole document: an explicit region, a named layout, or the located signature.

A back office receives whole cheques and forms. :func:`signature_source` turns such an image into the crop that
is verified or enrolled, and says which box it used:

- ``region="X,Y,W,H"``: that box, in pixels, or as percentages of the image's width and height when a value
  ends in ``%`` (``"58%,54%,40%,27%"``): the same zone whatever the scan's resolution;
- ``layout=NAME``: the zone of that layout in a layouts file (TOML; :func:`load_layouts`), because a bank has a
  handful of cheque and form layouts:

      [[layout]]
      name = "personal-cheque"
      zone = "58%,54%,40%,27%"     # a region as above
      dpi = 200                     # optional: the resolution the layout expects

- neither, and ``locate=True`` (``--locate``): when the image is a document rather than a signature box
  (:func:`looks_like_document`: printed text in quantity), :func:`sigvault.locate.locate_signature` finds the
  signature; a signature box is used whole. Locating is asked for, never assumed: the locator finds the
  signature on about half of synthetic cheques carrying real scans (docs/documents.md), too few to guess on a
  bank's behalf; with no option every image is taken for a signature box, as before.
"""

from __future__ import annotations

import io
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sigvault.errors import ImageError, NoSignatureFoundError, UsageError
from sigvault.imaging import DEFAULT_LIMITS, ImageLimits
from sigvault.locate import Region

# A document carries printed text: at least this many components of one character's size...
PRINTED_CHARACTERS = 40
MARGIN = 0.08  # a located signature's box is widened by this fraction of its size on every side


@dataclass(frozen=True)
class Layout:
    """A named document layout: where its signature zone lies (a region string) and, optionally, its dpi."""

    name: str
    zone: str
    dpi: int | None = None


def parse_region(text: str, width: int, height: int, *, what: str = "--region") -> Region:
    """``"X,Y,W,H"`` (pixels, or percentages of the image's width and height where a value ends in ``%``) as a
    :class:`Region` of an image ``width`` x ``height``, clipped to it.

    Raises:
        UsageError: not four numbers, a negative size, or a box outside the image.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise UsageError(f"{what} {text!r}: give X,Y,W,H in pixels or percentages, e.g. 700,300,470,145 or 58%,54%,40%,27%")
    values = []
    for k, p in enumerate(parts):
        scale = (width, height)[k % 2]
        try:
            v = float(p[:-1]) * scale / 100.0 if p.endswith("%") else float(p)
        except ValueError:
            raise UsageError(f"{what} {text!r}: {p!r} is not a number; give X,Y,W,H in pixels or percentages") from None
        if not np.isfinite(v) or v < 0:
            raise UsageError(f"{what} {text!r}: {p!r} must be a number >= 0")
        values.append(round(v))
    x, y, w, h = values
    x1, y1 = min(x + w, width), min(y + h, height)
    if w == 0 or h == 0 or x >= width or y >= height or x1 - x < 8 or y1 - y < 8:
        raise UsageError(f"{what} {text!r}: the box lies outside the {width}x{height} image or is under 8 px; check it")
    return Region(x, y, x1 - x, y1 - y)


def load_layouts(path: Path) -> dict[str, Layout]:
    """The layouts of a TOML file (``[[layout]]`` tables with ``name``, ``zone`` and an optional ``dpi``).

    Raises:
        UsageError: the file is missing, not TOML, or a layout is malformed (the message names it).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no layouts file; write one (docs/documents.md) or give --region") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not a readable TOML layouts file ({exc})") from None
    out: dict[str, Layout] = {}
    for n, table in enumerate(data.get("layout", []), 1):
        name, zone, dpi = table.get("name"), table.get("zone"), table.get("dpi")
        if not isinstance(name, str) or not name or not isinstance(zone, str):
            raise UsageError(f"{path}: layout {n} needs a name and a zone (\"X,Y,W,H\" in pixels or percentages)")
        if dpi is not None and (not isinstance(dpi, int) or dpi <= 0):
            raise UsageError(f"{path}: layout {name}: dpi must be a positive whole number")
        if name in out:
            raise UsageError(f"{path}: layout {name} is defined twice")
        parse_region(zone, 10_000, 10_000, what=f"{path}: layout {name}: zone")  # checked once, on a large image
        out[name] = Layout(name, zone, dpi)
    if not out:
        raise UsageError(f"{path}: no [[layout]] table; write one or give --region")
    return out


def looks_like_document(grey: np.ndarray) -> bool:
    """Whether a scan is a document (a cheque, a form) rather than a signature box: it carries printed text, at
    least PRINTED_CHARACTERS components of the commonest component height give or take 30 %, no wider than 1.5
    times that height. A signature, even broken into many strokes, has far fewer of one size."""
    import cv2

    from sigvault.imaging import DEFAULT_SPEC, flatten_background

    h0, w0 = grey.shape
    f = 1200 / max(h0, w0)
    work = cv2.resize(grey, (max(1, round(w0 * f)), max(1, round(h0 * f))), interpolation=cv2.INTER_AREA)
    work = flatten_background(work, DEFAULT_SPEC)
    _, ink = cv2.threshold(cv2.GaussianBlur(work, (3, 3), 0), 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    hs, ws, areas = stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_AREA]
    real = areas >= 20
    if np.count_nonzero(real) < PRINTED_CHARACTERS:
        return False
    text = float(np.median(hs[real]))
    chars = real & (np.abs(hs - text) <= 0.3 * text) & (ws <= 1.5 * text)
    return int(np.count_nonzero(chars)) >= PRINTED_CHARACTERS


def _png(grey: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    return buf.getvalue()


def widened(box: Region, width: int, height: int) -> Region:
    """``box`` widened by MARGIN of its size on every side, within a ``width`` x ``height`` image: what is cut
    around a located signature (the locator's box hugs the ink)."""
    mx, my = round(MARGIN * box.w), round(MARGIN * box.h)
    x0, y0 = max(0, box.x - mx), max(0, box.y - my)
    return Region(x0, y0, min(width, box.x + box.w + mx) - x0, min(height, box.y + box.h + my) - y0)


def signature_box(
    grey: np.ndarray,
    *,
    name: str,
    region: str | None = None,
    layout: Layout | None = None,
    locate: bool = True,
) -> tuple[Region | None, str]:
    """The signature's zone of a decoded scan (uint8 grey, 0 = ink) and how it was chosen ("region", "layout",
    "located"); ``(None, "whole")`` when the scan is used as it is (a signature box, or ``locate=False``).

    Raises:
        UsageError: both ``region`` and ``layout``, or a malformed region.
        NoSignatureFoundError: a document on which one signature could not be told (give a region or layout).
        ImageError: the zone is empty.
    """
    h, w = grey.shape
    if region is not None and layout is not None:
        raise UsageError("give --region or --layout, not both")
    if region is not None:
        box, how = parse_region(region, w, h), "region"
    elif layout is not None:
        box, how = parse_region(layout.zone, w, h, what=f"layout {layout.name}: zone"), "layout"
    elif locate and looks_like_document(grey):
        from sigvault.locate import locate_signature

        box, how = widened(locate_signature(grey, name=name), w, h), "located"
    else:
        return None, "whole"
    if box.crop(grey).size == 0:
        raise ImageError(f"{name}: the signature zone {box.to_json()} is empty; check the region or layout")
    return box, how


def signature_source(
    grey: np.ndarray,
    *,
    name: str,
    region: str | None = None,
    layout: Layout | None = None,
    locate: bool = True,
) -> tuple[bytes | None, Region | None, str]:
    """:func:`signature_box` with the zone's crop as PNG bytes: ``(crop, box, how)``, or ``(None, None,
    "whole")`` when the scan is used as it is.

    Raises:
        UsageError, NoSignatureFoundError, ImageError: as :func:`signature_box`.
    """
    box, how = signature_box(grey, name=name, region=region, layout=layout, locate=locate)
    if box is None:
        return None, None, how
    return _png(box.crop(grey)), box, how


@dataclass(frozen=True)
class DocumentOptions:
    """How the signature zone of an image is chosen (``--region``, ``--layout`` with ``--layouts``, ``--locate``);
    all unset: the image is a signature box and is used whole."""

    region: str | None = None
    layout: str | None = None
    layouts: Path | None = None  # the layouts file; default <home>/layouts.toml
    locate: bool = False

    @property
    def active(self) -> bool:
        return self.region is not None or self.layout is not None or self.locate


def signature_zone(
    source: Path | str | bytes,
    options: DocumentOptions,
    *,
    home: Path,
    limits: ImageLimits = DEFAULT_LIMITS,
    page: int | None = None,
    name: str | None = None,
) -> tuple[Path | str | bytes, dict[str, Any] | None]:
    """What ``verify`` and ``enroll`` take from an image file under ``options``: the file itself and no region
    when no option is set, else the signature zone's crop (PNG bytes) and the region it was cut from
    (``{"x", "y", "w", "h", "how", "layout"}`` in the image's pixels, kept with the decision). ``page`` (from
    1, ``--page``): that page of a multi-page TIFF, as PNG bytes (:func:`sigvault.imaging.page_png`) or cut.
    ``name``: how errors name the image (default: the path).

    Raises:
        UsageError: a malformed region, an unknown layout, both a region and a layout.
        ImageError: an unreadable image, no such page; NoSignatureFoundError: ``locate`` found no single signature.
    """
    from sigvault.imaging import page_png, read_image

    if not options.active:
        return (source if page is None else page_png(source, page, name=name or str(source), limits=limits)), None

    layout = None
    if options.layout is not None:
        layouts = load_layouts(options.layouts or home / "layouts.toml")
        if options.layout not in layouts:
            raise UsageError(f"--layout {options.layout!r}: not in the layouts file; choose among {', '.join(sorted(layouts))}")
        layout = layouts[options.layout]
    name = name or str(source)
    grey = read_image(source, name=name, limits=limits, page=page)
    data, box, how = signature_source(grey, name=name, region=options.region, layout=layout, locate=options.locate)
    if data is None or box is None:  # --locate on a signature box: used whole
        return (source if page is None else _png(grey)), None
    return data, {**box.to_json(), "how": how, "layout": options.layout}


__all__ = ["DocumentOptions", "Layout", "NoSignatureFoundError", "Region", "load_layouts", "looks_like_document",
           "parse_region", "signature_box", "signature_source", "signature_zone", "widened"]
