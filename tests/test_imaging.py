"""Preprocessing: every accepted format and mode, the bad-input errors, and a golden output."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sigvault.errors import ImageError, ImageTooLargeError, NoInkError
from sigvault.imaging import DEFAULT_SPEC, ImageLimits, PreprocessSpec, load_canvas, otsu_threshold, preprocess, read_image


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


@pytest.mark.parametrize("paper,ink", [(255, 255), (0, 0), (128, 128)])
def test_blank_images_are_no_ink_errors(paper, ink):
    with pytest.raises(NoInkError, match="no signature"):
        preprocess(scan(paper=paper, ink=ink), name="blank.png")


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


def test_exif_orientation_is_honoured():
    base = scan()
    im = Image.fromarray(base).rotate(90, expand=True)  # stored rotated, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    data = encode(im.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())
    assert read_image(data).shape == base.shape


def test_first_frame_and_first_page():
    first, second = Image.fromarray(scan()), Image.fromarray(scan(ink=0, width=20))
    gif = encode(first.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")])
    tif = encode(first, "TIFF", save_all=True, append_images=[second])
    expected = preprocess(scan())
    assert np.abs(load_canvas(gif) - expected).mean() < 0.02
    assert np.abs(load_canvas(tif) - expected).mean() < 0.02


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda p: p / "missing.png", ImageError, "no such file"),
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
