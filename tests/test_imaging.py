"""Preprocessing: every accepted format and mode, the bad-input errors, and a golden output."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sigvault import imaging
from sigvault.errors import ImageError, ImageTooLargeError, NoInkError
from sigvault.imaging import (
    DEFAULT_SPEC,
    ImageLimits,
    PreprocessSpec,
    load_canvas,
    otsu_threshold,
    preprocess,
    read_image,
)


def scan(paper: int = 240, ink: int = 40, size=(900, 360), width: int = 6, border: bool = False) -> np.ndarray:
    """A signature-like stroke drawn with numpy-seeded points on a paper of the given grey."""
    rng = np.random.default_rng(5)
    im = Image.new("L", size, paper)
    d = ImageDraw.Draw(im)
    xs = np.linspace(150, 750, 12)
    ys = rng.uniform(120, 240, 12)
    d.line(list(zip(xs.tolist(), ys.tolist())), fill=ink, width=width, joint="curve")
    d.ellipse((300, 100, 360, 260), outline=ink, width=width)
    if border:
        d.rectangle((0, 0, 12, size[1] - 1), fill=10)  # dark scanner edge along the left side
    return np.asarray(im)


def encode(arr_or_im, fmt: str, **kw) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_golden_output_is_pinned():
    c = preprocess(scan())
    assert c.shape == (128, 256) and c.dtype == np.float32
    assert c.min() == 0.0 and c.max() <= 1.0
    rows, cols = np.flatnonzero(c.any(1)), np.flatnonzero(c.any(0))
    # the ink is centred inside the margin
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (32, 94, 10, 245)
    assert float(c.sum()) == pytest.approx(575.7, rel=0.02)
    assert float(np.median(c[c > 0])) == pytest.approx(0.335, abs=0.03)


def _digest(canvas: np.ndarray) -> str:
    """Exact output to 1e-6 (robust to a last-bit difference of a float library, nothing more)."""
    return hashlib.sha256(np.round(canvas.astype(np.float64), 6).tobytes()).hexdigest()[:16]


def _noisy(size=(1800, 800)) -> np.ndarray:
    """A 300-dpi-sized scan (shrunk to the working size) with paper noise, like benchmarks/run.py's."""
    noise = np.random.default_rng(3).normal(0, 3, (size[1], size[0]))
    return np.clip(scan(size=size).astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _specked() -> np.ndarray:
    arr = scan(border=True).copy()
    arr[20, 850] = arr[340, 30] = 0
    return arr


def _dots() -> np.ndarray:
    """1680 equal 3x3 dots: every component is a speck, the first in raster order is kept."""
    a = np.full((300, 400), 235, np.uint8)
    for y in range(10, 290, 8):
        for x in range(10 + (y // 8) % 3, 390, 8):
            a[y : y + 3, x : x + 3] = 20
    return a


@pytest.mark.parametrize(
    "make,digest",
    [
        (scan, "6736ca5a6bbea86b"),
        (lambda: scan(paper=90, ink=20), "ca6a0faa30a0cbbc"),
        (_specked, "6b44c24eec57e034"),  # border component and specks dropped
        (_noisy, "c4742d1f350fe5d1"),  # shrunk from 1800 px
        (lambda: _noisy((1763, 700)), "d6029648fab6fc55"),  # shrunk by a non-integer factor
        (_dots, "de97e62586a87d82"),
    ],
)
def test_exact_output_is_pinned(make, digest):
    """The canvases the shipped model was trained on, to 1e-6: any change to preprocessing shows up here
    (the OpenCV stages replaced PIL's blur and scipy's labelling bit for bit, see test_blur_is_pils_bit_for_bit)."""
    c = preprocess(make())
    assert _digest(c) == digest, f"canvas changed: sum {float(c.sum()):.6f}, ink pixels {int((c > 0).sum())}"


def test_blur_is_pils_bit_for_bit():
    """imaging._blur (OpenCV) == PIL's GaussianBlur(1.0), the model's training preprocessing, exactly."""
    from PIL import ImageFilter

    # one box pass depends on (left + right, centre) only: every pair, as rows "l c r" (both directions)
    s, c = np.meshgrid(np.arange(511), np.arange(256), indexing="ij")
    rows = np.stack([s // 2, c, s - s // 2], axis=-1).reshape(-1, 3).astype(np.uint8)
    pil = np.asarray(Image.fromarray(rows).filter(ImageFilter.BoxBlur((0.25, 0))))
    assert np.array_equal(imaging._pil_box_pass(rows, axis=1)[:, 1], pil[:, 1])
    cols = np.ascontiguousarray(rows.T)
    pil = np.asarray(Image.fromarray(cols).filter(ImageFilter.BoxBlur((0, 0.25))))
    assert np.array_equal(imaging._pil_box_pass(cols, axis=0)[1], pil[1])
    rng = np.random.default_rng(0)
    for img in [rng.integers(0, 256, (97, 131), dtype=np.uint8), scan(), _noisy((903, 400)), np.zeros((8, 8), np.uint8)]:
        pil = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(1.0)))
        assert np.array_equal(imaging._blur(img, 1.0), pil)
    img = scan()  # another radius goes through PIL itself
    assert np.array_equal(imaging._blur(img, 2.0), np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(2.0))))


def _scipy_clean(ink: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The speck and border filter written plainly with scipy.ndimage, the reference for the OpenCV one."""
    from scipy import ndimage

    h, w = ink.shape
    bh, bw = max(1, int(np.ceil(spec.border_band * h))), max(1, int(np.ceil(spec.border_band * w)))
    reach = max(2, int(np.ceil(spec.border_reach * max(h, w))))
    ink = ink.copy()
    erase_cols = set()
    for x in range(w):
        if (x < bw or x >= w - bw) and ink[:, x].sum() > spec.border_span * h:
            erase_cols |= {c for c in range(x - reach, x + reach + 1) if 0 <= c < bw or w - bw <= c < w}
    erase_rows = set()
    for y in range(h):
        if (y < bh or y >= h - bh) and ink[y, :].sum() > spec.border_span * w:
            erase_rows |= {r for r in range(y - reach, y + reach + 1) if 0 <= r < bh or h - bh <= r < h}
    ink[:, sorted(erase_cols)] = False
    ink[sorted(erase_rows), :] = False
    labels, n = ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= max(spec.speck_min_pixels, spec.speck_fraction * sizes.sum())
    inner = labels[bh : h - bh, bw : w - bw]
    for i, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        touches = rows.start == 0 or cols.start == 0 or rows.stop == h or cols.stop == w
        spans = rows.stop - rows.start > spec.border_span * h or cols.stop - cols.start > spec.border_span * w
        near_edges = sizes[i] - (inner == i).sum() >= spec.border_share * sizes[i]
        keep[i] &= not (touches and spans and near_edges)
    keep[0] = False
    if not keep.any():
        keep[int(np.argmax(sizes))] = True  # the first largest in scipy's (raster) order
    return keep[labels]


def test_speck_and_border_filter_matches_the_scipy_reference():
    """The component rules (specks by size, scanner borders) against a plain scipy reference; dots far from the
    writing and printed lines have tests of their own below."""
    spec = replace(DEFAULT_SPEC, dot_share=0.0, line_length=0.0)
    rng = np.random.default_rng(7)
    for i in range(300):
        h, w = int(rng.integers(3, 120)), int(rng.integers(3, 120))
        ink = rng.random((h, w)) < [0.002, 0.02, 0.2, 0.45][i % 4]  # specks only (equal sizes) ... big blobs
        if i % 3 == 0:
            ink[:, : int(rng.integers(1, 3))] = True  # a scanner border
        if not ink.any():
            continue
        crop, (y0, y1, x0, x1), _ = imaging._clean_mask(ink.astype(np.uint8) * np.uint8(255), int(ink.sum()), spec)
        got = np.zeros_like(ink)
        got[y0:y1, x0:x1] = crop > 0
        want = _scipy_clean(ink, spec)
        assert np.array_equal(got, want), i
        rows, cols = np.flatnonzero(want.any(1)), np.flatnonzero(want.any(0))
        assert (y0, y1, x0, x1) == (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    # equal specks whose first pixels are in a different order by rows than by 2x2 blocks: raster order wins
    ink = np.zeros((6, 9), np.uint8)
    ink[1, 0:2] = ink[0, 6:8] = 255
    crop, box, dropped = imaging._clean_mask(ink, 4, DEFAULT_SPEC)
    assert box == (0, 1, 6, 8) and dropped


def test_background_is_removed_exactly():
    c = preprocess(scan(paper=200))
    assert float((c == 0).mean()) > 0.8  # the paper is exactly zero


def test_paper_and_ink_shade_do_not_change_the_canvas():
    """Capture-session cues (paper grey, pen darkness) are normalised away."""
    a = preprocess(scan(paper=240, ink=40))
    b = preprocess(scan(paper=254, ink=90))
    c = preprocess(scan(paper=90, ink=20))  # light scan settings: dark paper, ink only slightly darker
    assert np.abs(a - b).mean() < 0.01
    assert np.abs(a - c).mean() < 0.02


def test_scanner_border_and_specks_are_ignored():
    clean = preprocess(scan())
    arr = scan(border=True).copy()
    arr[20, 850] = arr[340, 30] = 0  # specks
    dirty = preprocess(arr)
    assert np.abs(clean - dirty).mean() < 0.01


def _tight(arr: np.ndarray) -> np.ndarray:
    """The scan cropped to its ink: strokes touch all four edges, as in a tightly cropped signature box."""
    rows, cols = np.flatnonzero((arr < 128).any(1)), np.flatnonzero((arr < 128).any(0))
    return arr[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _dotted() -> np.ndarray:
    """scan() with a short mark apart from the main stroke (an i's dot, a second initial)."""
    arr = scan().copy()
    arr[250:260, 450:462] = 40
    return arr


def test_signature_cropped_to_touch_the_edges_is_kept():
    """A signature touching the edges and spanning the image is the signature, not a scanner border (the
    rule before dropped it and kept only its other marks, losing most of the ink of 19 % of the Dutch
    scans)."""
    clean = preprocess(_dotted())
    tight = preprocess(_tight(_dotted()))
    assert np.abs(clean - tight).mean() < 0.01
    assert float(tight.sum()) == pytest.approx(float(clean.sum()), rel=0.05)


def _ink_box(c: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(c.any(1)), np.flatnonzero(c.any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def test_scanner_edge_that_a_stroke_runs_into_is_erased_and_the_stroke_kept():
    clean = preprocess(_tight(scan()))
    arr = np.pad(_tight(scan()), ((0, 0), (6, 0)), constant_values=240)
    arr[:, :4] = 10  # a dark scanner edge along the left side...
    arr[:, 4:8] = np.minimum(arr[:, 4:8], 40)  # ...that the first stroke runs into
    dirty = preprocess(arr)
    # the edge and the few columns beside it are erased, the rest of the signature is whole
    assert float(dirty.sum()) == pytest.approx(float(clean.sum()), rel=0.05)
    assert np.abs(np.subtract(_ink_box(dirty), _ink_box(clean))).max() <= 3


def test_wavy_edge_shadow_is_dropped():
    """An edge shadow no column of which is dark enough to be a line goes too: it touches the edge, spans
    the image and lies near the edges."""
    clean = preprocess(scan())
    im = Image.fromarray(scan())
    y = np.arange(360)
    pts = list(zip((5 + 5 * np.sin(y / 15)).tolist(), y.tolist()))
    ImageDraw.Draw(im).line(pts, fill=15, width=4)
    arr = np.asarray(im)
    assert ((arr[:, :45] < 100).sum(0) < 0.8 * 360).all()  # no line to erase
    dirty = preprocess(arr)
    assert np.abs(clean - dirty).mean() < 0.01


@pytest.mark.parametrize("paper,ink", [(255, 255), (0, 0), (128, 128)])
def test_blank_images_are_no_ink_errors(paper, ink):
    with pytest.raises(NoInkError, match="no signature"):
        preprocess(scan(paper=paper, ink=ink), name="blank.png")


def test_a_one_pixel_pen_is_ink():
    """A 1-px stroke (a fine pen, or a scan at 150 dpi) is found: the contrast is measured on the strokes'
    cores (25th percentile of the ink mask), not on the median, which the blur's halo around a thin stroke
    put at the paper's level (contrast 0 here: refused as "no ink" with the median), and the ink strength is
    normalised at the cores when the median of the mask is paper."""
    c = preprocess(scan(paper=235, ink=120, width=1), name="fine-pen.png")
    assert c.shape == (128, 256) and int((c > 0).sum()) > 300


@pytest.mark.parametrize("sd,message", [
    (3, "contrast 4 grey levels"),
    (20, "marks 30 grey levels darker than the paper, whose grain alone spreads 11"),
    (30, "marks 47 grey levels darker than the paper, whose grain alone spreads 9"),
])
def test_paper_grain_alone_is_not_ink(sd, message):
    """A blank page with grain (Gaussian, standard deviation ``sd``): the darker half of the grain is not ink
    (at 20 and 30 grey levels it passes the contrast test alone)."""
    page = np.clip(235 + np.random.default_rng(0).normal(0, sd, (300, 600)), 0, 255).astype(np.uint8)
    with pytest.raises(NoInkError, match=rf"^grain.png: no signature ink found \({message}\)"):
        preprocess(page, name="grain.png")


def test_an_even_shade_is_not_ink():
    """A page lit unevenly is evened out before the ink is looked for: nothing is left but grain."""
    shade = np.tile(np.linspace(180, 250, 600), (300, 1)).astype(np.uint8)
    with pytest.raises(NoInkError, match=r"^shade.png: no signature ink found \(contrast 1 grey levels\)"):
        preprocess(shade, name="shade.png")


def test_otsu_splits_two_levels():
    v = np.array([10] * 50 + [200] * 50, dtype=np.uint8)
    t = otsu_threshold(v)
    assert 10 <= t < 200


def test_modes_are_converted_to_grey(tmp_path: Path):
    base = scan()
    expected = preprocess(base)
    rgb = Image.fromarray(base).convert("RGB")
    cases = {
        "rgb.png": encode(rgb, "PNG"),
        "palette.gif": encode(Image.fromarray(base).convert("P"), "GIF"),
        "cmyk.tiff": encode(rgb.convert("CMYK"), "TIFF"),
        "bmp.bmp": encode(rgb, "BMP"),
        "jpeg.jpg": encode(rgb, "JPEG", quality=95),
        "grey16.png": encode(Image.fromarray(base.astype(np.uint16) * 257), "PNG"),
    }
    # RGBA: black ink only in the alpha channel on a transparent background
    alpha = 255 - base
    rgba = Image.merge("RGBA", [Image.new("L", rgb.size, 0)] * 3 + [Image.fromarray(alpha)])
    cases["alpha.png"] = encode(rgba, "PNG")
    for name, data in cases.items():
        got = load_canvas(data, name=name)
        assert np.abs(got - expected).mean() < 0.02, name


def test_grey_png_with_a_transparent_grey_level_becomes_paper_there():
    base = scan()
    ink = int(base.min())
    data = encode(Image.fromarray(base), "PNG", transparency=ink)  # tRNS: the ink level is transparent
    got = read_image(data)
    assert (got[base == ink] == 255).all() and (got[base != ink] == base[base != ink]).all()


def test_exif_orientation_is_honoured():
    base = scan()
    im = Image.fromarray(base).rotate(90, expand=True)  # stored rotated, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    data = encode(im.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())
    assert read_image(data).shape == base.shape


def test_first_frame_and_a_chosen_page():
    """A GIF's first frame is used; a TIFF of several pages is refused unless a page is chosen."""
    first, second = Image.fromarray(scan()), Image.fromarray(scan(ink=0, width=20))
    gif = encode(first.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")])
    tif = encode(first, "TIFF", save_all=True, append_images=[second])
    expected = preprocess(scan())
    assert np.abs(load_canvas(gif) - expected).mean() < 0.02
    with pytest.raises(ImageError, match=r"^scan\.tif: a TIFF of 2 pages; say which page holds the signature"):
        read_image(tif, name="scan.tif")
    assert np.abs(preprocess(read_image(tif, page=1)) - expected).mean() < 0.02
    assert np.array_equal(read_image(tif, page=2), read_image(encode(second, "TIFF")))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def _tiff_with_fractional_strip_offset() -> bytes:
    """A TIFF whose StripOffsets tag is stored as a RATIONAL (found by scripts/fuzz.py): Pillow raised a
    TypeError loading it, which escaped as a crash instead of an ImageError."""
    buf = io.BytesIO()
    Image.new("L", (64, 32), 200).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, _, _, value = struct.unpack_from("<HHII", data, entry)
        if tag == 273:  # StripOffsets: type 5 (RATIONAL), its 8 bytes appended
            struct.pack_into("<HHII", data, entry, 273, 5, 1, len(data))
            data += struct.pack("<II", value, 1)
    return bytes(data)


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda p: p / "missing.png", ImageError, "no such file"),
        (lambda p: _write(p / "odd.tif", _tiff_with_fractional_strip_offset()), ImageError, "damaged image"),
        (lambda p: p, ImageError, "is a directory"),
        (lambda p: _write(p / "empty.png", b""), ImageError, "empty"),
        (lambda p: _write(p / "text.png", b"<html>not an image</html>"), ImageError, "not a readable image"),
        (lambda p: _write(p / "cut.png", encode(scan(), "PNG")[:400]), ImageError, "damaged or truncated"),
        (lambda p: _write(p / "bomb.png", _png_header_only(40000, 40000)), ImageTooLargeError, "above the limit"),
        (lambda p: _write(p / "tiny.png", encode(np.zeros((1, 1), np.uint8), "PNG")), ImageError, "too small"),
        (lambda p: _write(p / "doc.pdf", encode(Image.fromarray(scan()).convert("RGB"), "PDF")), ImageError, "not"),
    ],
)
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path: Path, make, error, message):
    path = make(tmp_path)
    with pytest.raises(error) as info:
        read_image(path)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert str(path) in text


def test_byte_limit_is_configurable(tmp_path: Path):
    p = _write(tmp_path / "ok.png", encode(scan(), "PNG"))
    with pytest.raises(ImageTooLargeError, match="bytes, above the limit of 100"):
        read_image(p, limits=ImageLimits(max_bytes=100))


def test_spec_round_trips_and_fingerprints():
    spec = PreprocessSpec(canvas_height=64)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert spec.fingerprint() != DEFAULT_SPEC.fingerprint()
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        PreprocessSpec.from_dict({"canvas_height": 1, "colour": 3})


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------ views


def _ink_angle(canvas: np.ndarray) -> float:
    """Angle (degrees, anticlockwise as seen) of the ink's principal axis, weighted by ink strength."""
    ys, xs = np.nonzero(canvas)
    w = canvas[ys, xs].astype(np.float64)
    x, y = xs - np.average(xs, weights=w), ys - np.average(ys, weights=w)
    cxx, cyy, cxy = np.average(x * x, weights=w), np.average(y * y, weights=w), np.average(x * y, weights=w)
    return float(np.degrees(-0.5 * np.arctan2(2 * cxy, cxx - cyy)))  # image y points down


def _wave(x0: int, x1: int, y: int, amplitude: float) -> list[tuple[float, float]]:
    """A long pen stroke from x0 to x1 around row y, one and a half waves: straight enough to have a clear
    direction, too bowed to be taken for a printed line."""
    xs = np.linspace(x0, x1, 200)
    return list(zip(xs.tolist(), (y + amplitude * np.sin(3 * np.pi * (xs - x0) / (x1 - x0))).tolist()))


def test_views_are_the_scan_turned_then_preprocessed():
    im = Image.new("L", (900, 300), 230)
    ImageDraw.Draw(im).line(_wave(100, 800, 150, 15), fill=30, width=5)  # a pen stroke, not a ruled line
    grey = np.asarray(im)
    views, capture = imaging.preprocess_views(grey, imaging.DEFAULT_SPEC, (-10.0, 10.0))
    assert capture == imaging.measure_capture(grey)
    assert views.shape == (3, imaging.DEFAULT_SPEC.canvas_height, imaging.DEFAULT_SPEC.canvas_width)
    np.testing.assert_array_equal(views[0], imaging.preprocess(grey))
    assert _ink_angle(views[0]) == pytest.approx(0.0, abs=0.1)
    assert _ink_angle(views[1]) == pytest.approx(-10.0, abs=0.5)
    assert _ink_angle(views[2]) == pytest.approx(10.0, abs=0.5)
    assert imaging.preprocess_views(grey, imaging.DEFAULT_SPEC, ())[0].shape[0] == 1
    turned_only = imaging.preprocess_views(grey, imaging.DEFAULT_SPEC, (-10.0, 10.0), original=False)
    np.testing.assert_array_equal(turned_only[0], views[1:])
    assert turned_only[1] == capture
    # a scan larger than the working size is shrunk once for everything; its capture is still the scan's own
    big = np.asarray(im.resize((2700, 900), Image.Resampling.BILINEAR))
    for original in (True, False):
        assert imaging.preprocess_views(big, imaging.DEFAULT_SPEC, (4.0,), original=original)[1] == imaging.measure_capture(big)


def test_a_blurred_view_is_the_shrunk_scan_blurred_then_preprocessed():
    from PIL import ImageFilter

    im = Image.new("L", (2700, 900), 230)
    ImageDraw.Draw(im).line(_wave(300, 2400, 450, 45), fill=30, width=15)
    grey = np.asarray(im)
    spec = imaging.DEFAULT_SPEC
    views, capture = imaging.preprocess_views(grey, spec, (imaging.View(turn=4.0), imaging.View(blur=1.0)))
    assert capture == imaging.measure_capture(grey)
    shrunk = im.resize((900, 300), Image.Resampling.BOX)  # the working size: spec.work_max_side = 900
    soft = np.asarray(shrunk.filter(ImageFilter.GaussianBlur(1.0)))
    np.testing.assert_array_equal(views[0], imaging.preprocess(grey, spec))
    np.testing.assert_array_equal(views[2], imaging.preprocess(soft, spec))
    np.testing.assert_array_equal(views[1], imaging.preprocess_views(grey, spec, (4.0,), original=False)[0][0])
    assert not np.array_equal(views[2], views[0])  # the blur reaches the canvas
    both = imaging.View(turn=4.0, blur=1.0).apply(np.asarray(shrunk))  # blurred, then turned
    np.testing.assert_array_equal(both, imaging.turn(soft, 4.0))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="a view turns by finite degrees and blurs by a radius >= 0"):
            imaging.View(blur=bad)


def test_a_blurred_views_radius_is_bounded_in_canvas_pixels():
    from PIL import ImageFilter

    view = imaging.View(blur=1.0, blur_cap=1.5)
    assert [view.radius(s) for s in (0.5, 1.5, 3.0, 0.0)] == [1.0, 1.0, 0.5, 1.0]
    assert imaging.View(blur=1.0).radius(3.0) == 1.0
    im = Image.new("L", (200, 90), 230)  # a small scan: its ink is enlarged 2.33 times into the 256x128 canvas
    ImageDraw.Draw(im).line([(50, 50), (100, 30), (150, 55)], fill=40, width=3)
    grey = np.asarray(im)
    scale = imaging.measure_capture(grey).scale
    assert scale == pytest.approx(2.331881, abs=1e-6)
    views, _ = imaging.preprocess_views(grey, imaging.DEFAULT_SPEC, (view, imaging.View(blur=1.0)), original=False)
    soft = np.asarray(im.filter(ImageFilter.GaussianBlur(1.5 / scale)))
    np.testing.assert_array_equal(views[0], imaging.preprocess(soft))
    np.testing.assert_array_equal(views[1], imaging.preprocess(np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)))))
    assert not np.array_equal(views[0], views[1])
    with pytest.raises(ValueError, match="blurs by a radius >= 0"):
        imaging.View(blur=1.0, blur_cap=-1.0)


def test_a_view_that_loses_the_ink_is_the_scans_own_canvas():
    """A stroke 25 grey levels darker than the paper is ink; 3 px wide and blurred by 1 px it is not (16
    levels), turned it still is; 1 px wide, turned by 4 degrees, it is not either (14 levels). Such a view is
    the scan's own canvas, so the reference enrols (before, a thin faint scan was refused for its turned view)."""
    from PIL import ImageFilter

    spec = imaging.DEFAULT_SPEC
    for width, turn_lost in ((3, False), (1, True)):
        im = Image.new("L", (900, 300), 230)
        ImageDraw.Draw(im).line([(100, 150), (400, 120), (800, 160)], fill=205, width=width)
        grey = np.asarray(im)
        blurred = np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)))
        turned = imaging.turn(grey, 4.0)
        with pytest.raises(NoInkError, match=f"contrast {16 if width == 3 else 10} grey levels"):
            imaging.preprocess(blurred, spec)
        own = imaging.preprocess(grey, spec)
        for original in (True, False):
            views, capture = imaging.preprocess_views(grey, spec, (imaging.View(blur=1.0), 4.0), original=original)
            assert capture == imaging.measure_capture(grey)
            assert views.shape[0] == 2 + original
            np.testing.assert_array_equal(views[-2], own)  # the blurred view: the scan as it is
            np.testing.assert_array_equal(views[-1], own if turn_lost else imaging.preprocess(turned, spec))
    with pytest.raises(NoInkError):  # a scan without ink is still refused, views or not
        imaging.preprocess_views(np.full((300, 900), 230, np.uint8), spec, (imaging.View(blur=1.0),))


def test_turning_fills_the_corners_with_the_paper_grey():
    grey = np.full((100, 300), 200, dtype=np.uint8)
    grey[40:60, 20:280] = 10
    turned = imaging.turn(grey, 20.0)
    assert turned.shape[0] > 100 and turned.shape[1] > 300
    assert (turned[0, 0], turned[-1, -1], turned[0, -1], turned[-1, 0]) == (200, 200, 200, 200)


def test_capture_scale_is_the_enlargement_into_the_canvas():
    a = np.full((300, 800), 240, dtype=np.uint8)
    a[100:140, 100:700] = 40  # ink 600 x 40 px: the canvas's inner width (256 * 0.92) limits it
    canvas, capture = imaging.preprocess_measured(a)
    assert np.array_equal(canvas, preprocess(a))
    assert capture == imaging.measure_capture(a)
    assert capture.scale == pytest.approx(256 * 0.92 / 600, rel=0.01)
    assert capture.stroke == 2 * 600 * 40 / (2 * 600 + 2 * 40)  # twice the area over the outline's pixel edges
    big = np.kron(a, np.ones((3, 3), dtype=np.uint8))  # 2400 px wide: shrunk to 900 first, measured relative to it
    assert imaging.measure_capture(big).scale == pytest.approx(capture.scale / 3, rel=0.01)
    assert imaging.measure_capture(big).stroke == pytest.approx(3 * capture.stroke, rel=0.03)  # resampled edges
    half = np.asarray(Image.fromarray(a).resize((400, 150), Image.Resampling.BOX))  # half the resolution
    assert imaging.measure_capture(half).scale == pytest.approx(2 * capture.scale, rel=0.02)
    assert imaging.measure_capture(half).stroke == 2 * 300 * 20 / (2 * 300 + 2 * 20)
    with pytest.raises(NoInkError):
        imaging.measure_capture(np.full((50, 50), 240, dtype=np.uint8))


def _pen_line(size: tuple[int, int], width: int) -> np.ndarray:
    im = Image.new("L", size, 235)
    w, h = size
    ImageDraw.Draw(im).line([(0.1 * w, 0.7 * h), (0.4 * w, 0.2 * h), (0.6 * w, 0.8 * h), (0.9 * w, 0.3 * h)], fill=30, width=width)
    return np.asarray(im)


def test_capture_stroke_tells_a_coarser_scan_from_a_smaller_signature():
    scan = _pen_line((600, 200), 6)
    base = imaging.measure_capture(scan)
    assert 4 < base.stroke < 6  # a 6-px pen: a slanted stroke's outline is a staircase, longer than the stroke
    coarse = imaging.measure_capture(np.asarray(Image.fromarray(scan).resize((300, 100), Image.Resampling.BOX)))
    smaller = imaging.measure_capture(_pen_line((300, 100), 6))  # the same pen, half the size
    assert coarse.scale == pytest.approx(2 * base.scale, rel=0.02) and smaller.scale == pytest.approx(2 * base.scale, rel=0.02)
    assert base.stroke / coarse.stroke == pytest.approx(2, rel=0.1)  # half the resolution: strokes half as wide
    assert base.stroke / smaller.stroke == pytest.approx(1, abs=0.05)  # same scanner, same pen
    assert imaging.InkCapture.median([base, coarse, smaller]) == imaging.InkCapture(
        float(np.median([base.scale, coarse.scale, smaller.scale])), float(np.median([base.stroke, coarse.stroke, smaller.stroke]))
    )
