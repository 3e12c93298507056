"""The bad-input corpus of issue 5, generated on the fly with Pillow (no scan is shipped or copied).

:func:`build` writes every case into a folder and returns name -> :class:`Case`: the path, and either the
exact one-line message of the expected error (exit code 1) or ``None`` for an unusual but valid image that
must give the same result as a plain PNG of the same signature. Used by tests/test_bad_input.py.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import signature_png
from PIL import Image

WRITER, VARIANT = 1, 5  # the valid cases all carry writer 1's signature, variant 5


@dataclass(frozen=True)
class Case:
    path: Path
    message: str | None  # None: a valid image; else the exact error message ('(...)' stands for any detail)


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a tiny IDAT (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def signature(variant: int = VARIANT) -> Image.Image:
    return Image.open(io.BytesIO(signature_png(WRITER, variant))).convert("L")


def build(root: Path) -> dict[str, Case]:
    root.mkdir(parents=True, exist_ok=True)
    sig = signature()
    other = Image.open(io.BytesIO(signature_png(7, 3))).convert("L")
    blank = Image.new("L", (400, 200), 255)
    files: dict[str, bytes] = {
        # unreadable
        "zero-byte.png": b"",
        "zero-byte.jpg": b"",
        "zero-byte.tiff": b"",
        "truncated.png": _encode(sig, "PNG")[:300],
        "truncated.jpg": _encode(sig.convert("RGB"), "JPEG", quality=90)[:700],
        "truncated.tiff": _encode(sig, "TIFF")[:2000],
        "text.png": b"Dear customer, please find the signature attached.\n",
        "page.png": b"<!DOCTYPE html><html><body><img src='sig.png'></body></html>\n",
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="200">'
        b'<path d="M10 100 C 100 10, 200 190, 390 100" stroke="black" fill="none"/></svg>\n',
        "scan.pdf": _encode(sig.convert("RGB"), "PDF"),
        "scan.ppm": _encode(sig, "PPM"),
        "one-pixel.png": _encode(Image.new("L", (1, 1), 0), "PNG"),
        "all-white.png": _encode(blank, "PNG"),
        "all-black.png": _encode(Image.new("L", (400, 200), 0), "PNG"),
        "bomb.png": _png_header_only(40_000, 40_000),
        # two pages: which one holds the signature is not guessed
        "pages.tiff": _encode(sig, "TIFF", save_all=True, append_images=[other]),
        # unusual but valid: the same signature as the plain PNG
        "grey16.png": _encode(Image.fromarray(np.asarray(sig).astype(np.uint16) * 257), "PNG"),
        "cmyk.tiff": _encode(sig.convert("RGB").convert("CMYK"), "TIFF"),
        "cmyk.jpg": _encode(sig.convert("RGB").convert("CMYK"), "JPEG", quality=95),
        "alpha-ink.png": _encode(
            Image.merge("RGBA", [Image.new("L", sig.size, 0)] * 3 + [Image.eval(sig, lambda v: 255 - v)]), "PNG"
        ),
        "animated.gif": _encode(sig.convert("P"), "GIF", save_all=True, append_images=[other.convert("P")]),
        "exif-rotated.jpg": _exif_rotated(sig),
        "signé Ωμέγα 签名.png": _encode(sig, "PNG"),
    }
    cases: dict[str, Case] = {}
    for name, data in files.items():
        path = root / name
        path.write_bytes(data)
        cases[name] = Case(path, _MESSAGES.get(name, "").format(p=path) or None)
    folder = root / "folder.png"
    folder.mkdir(exist_ok=True)
    cases["directory"] = Case(folder, f"{folder}: is a directory, not an image file; give the path of a scan")
    missing = root / "absent.png"
    cases["missing"] = Case(missing, f"{missing}: no such file; check the path")
    loop = root / "loop.png"
    if not loop.is_symlink():
        os.symlink(root / "loop-b.png", loop)
        os.symlink(loop, root / "loop-b.png")
    cases["symlink-loop"] = Case(loop, f"{loop}: cannot be read (Too many levels of symbolic links); check the path")
    return cases


def _exif_rotated(sig: Image.Image) -> bytes:
    """Stored turned by 90 degrees; EXIF orientation 6 says how to turn it back for display."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(sig.rotate(90, expand=True).convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())


_MESSAGES = {
    "zero-byte.png": "{p}: file is empty (0 bytes); supply the scanned image",
    "zero-byte.jpg": "{p}: file is empty (0 bytes); supply the scanned image",
    "zero-byte.tiff": "{p}: file is empty (0 bytes); supply the scanned image",
    "truncated.png": "{p}: damaged or truncated image (...); rescan or re-export it",
    "truncated.jpg": "{p}: damaged or truncated image (...); rescan or re-export it",
    "truncated.tiff": "{p}: damaged or truncated image (...); rescan or re-export it",
    "text.png": "{p}: not a readable image; supply a PNG, JPEG, TIFF, BMP or GIF scan",
    "page.png": "{p}: not a readable image; supply a PNG, JPEG, TIFF, BMP or GIF scan",
    "drawing.svg": "{p}: not a readable image; supply a PNG, JPEG, TIFF, BMP or GIF scan",
    "scan.pdf": "{p}: not a readable image; supply a PNG, JPEG, TIFF, BMP or GIF scan",
    "scan.ppm": "{p}: PPM images are not supported; supply a PNG, JPEG, TIFF, BMP or GIF scan",
    "one-pixel.png": "{p}: 1x1 pixels is too small to hold a signature",
    "all-white.png": "{p}: no signature ink found (the image is blank); scan the signed area",
    "all-black.png": "{p}: no signature ink found (the image is blank); scan the signed area",
    "bomb.png": "{p}: image dimensions are above the limit of 40000000 pixels; scan at a lower resolution or raise "
    "SIGVAULT_MAX_IMAGE_PIXELS",
    "pages.tiff": "{p}: a TIFF of 2 pages; say which page holds the signature (--page 1 to 2, or a page column in an audit manifest)",
}

VALID = [
    "grey16.png",
    "cmyk.tiff",
    "cmyk.jpg",
    "alpha-ink.png",
    "animated.gif",
    "exif-rotated.jpg",
    "signé Ωμέγα 签名.png",
]
BAD = [*_MESSAGES, "directory", "missing", "symlink-loop"]
