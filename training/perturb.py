"""Copies of a dataset folder as another scanner or another workflow would have made them, for robustness.

    python -m training.perturb ../cache/splits/validation ../cache/perturbed --kinds all
    SIGVAULT_MODEL=DIR sigvault evaluate ../cache/perturbed/validation-jpeg40 --references 5 --splits 5 --json

The model will meet scans from scanners, resolutions and pens it never saw. Each kind rewrites every image
of ``SRC`` (laid out ``<writer>/{genuine,forged}/*``) into ``OUT/<name of SRC>-<kind>/`` with the same
layout, so `sigvault evaluate` measures the system on it with the same protocol and seeds as on the
original; the difference is what that change of capture costs. Kinds (fixed parameters, seeded):

- ``dpi150``: scanned at half the resolution (downscaled to 50 % with a box filter);
- ``dpi75``: scanned at a quarter of the resolution (25 %, box filter): a fax or a thumbnail archive;
- ``jpeg40``: saved as JPEG at quality 40 (a mobile capture or a cheap archive);
- ``blur``: slightly out of focus (Gaussian blur, radius 1.2 px);
- ``faint``: a light pen or an over-exposed scan (the ink's contrast with the paper halved);
- ``rotate``: placed askew (rotated by 4 degrees, alternately clockwise and anticlockwise; white fill);
- ``noise``: a grainy scanner (Gaussian noise, standard deviation 12 grey levels).

and the captures a back office receives (``sigvault.captures``, random parameters seeded per image):
``tinted`` (tinted paper, coloured ink, a 20 % brightness ramp; saved in colour), ``line`` (a printed
signature line under the ink), ``specks`` (5-40 specks of dust, 1-5 px), ``blurjpeg`` (light blur and JPEG
quality 55-85), ``skew`` (turned by up to 5 degrees), ``lowres`` (45-90 % of the resolution) and ``cheque`` (all
of them together).

and whole documents (``sigvault.cheques``): ``document-bitonal``, ``document-grey``, ``document-colour``, each
scan signed on a synthetic cheque rendered that way; measure with ``sigvault evaluate SRC --questioned
OUT/<name>-document-colour --locate``, which finds the signature on each as ``verify --locate`` does. The
``-zone`` kinds (``document-colour-zone``...) keep only the signature's true zone of the same cheque: measured
without ``--locate``, they separate what the cheque costs from what the locator's errors cost.

Only copies outside the repository: the development datasets' terms allow research use, not
redistribution.
"""

from __future__ import annotations

import argparse
import io
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def _grey(im: Image.Image) -> Image.Image:
    return im.convert("L")


def dpi150(im: Image.Image, _: int) -> Image.Image:
    g = _grey(im)
    return g.resize((max(1, g.width // 2), max(1, g.height // 2)), Image.Resampling.BOX)


def dpi75(im: Image.Image, _: int) -> Image.Image:
    g = _grey(im)
    return g.resize((max(1, g.width // 4), max(1, g.height // 4)), Image.Resampling.BOX)


def jpeg40(im: Image.Image, _: int) -> Image.Image:
    buf = io.BytesIO()
    _grey(im).save(buf, format="JPEG", quality=40)
    buf.seek(0)
    return Image.open(buf).convert("L")


def blur(im: Image.Image, _: int) -> Image.Image:
    return _grey(im).filter(ImageFilter.GaussianBlur(1.2))


def faint(im: Image.Image, _: int) -> Image.Image:
    a = np.asarray(_grey(im), dtype=np.float32)
    paper = float(np.percentile(a, 90))
    return Image.fromarray(np.clip(paper - (paper - a) * 0.5, 0, 255).astype(np.uint8))


def rotate(im: Image.Image, index: int) -> Image.Image:
    return _grey(im).rotate(4.0 if index % 2 else -4.0, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255)


def noise(im: Image.Image, index: int) -> Image.Image:
    a = np.asarray(_grey(im), dtype=np.float32)
    rng = np.random.default_rng(index)
    return Image.fromarray(np.clip(a + rng.normal(0.0, 12.0, a.shape), 0, 255).astype(np.uint8))


def _capture(kind: str) -> Callable[[Image.Image, int], Image.Image]:
    """The capture ``kind`` of ``sigvault.captures`` as a kind of this module, seeded by the image's index."""
    from sigvault.captures import CAPTURES

    fn, salt = CAPTURES[kind], zlib.crc32(kind.encode())

    def perturb(im: Image.Image, index: int) -> Image.Image:
        grey = np.asarray(_grey(im), dtype=np.uint8)
        return Image.fromarray(fn(grey, np.random.default_rng((salt, index))))

    return perturb


def _document(rendering: str, *, zone: bool = False) -> Callable[[Image.Image, int], Image.Image]:
    """The scan signed on a synthetic cheque (``sigvault.cheques.render``, ``rendering``), as the clearing system
    delivers it and decoded again: the payee, amount and words handwritten by the project's synthetic writers
    (``sigvault.synth``, seeded by the image's index), a stamp 30 % of the time. Saved as PNG (lossless, the
    rendering's own compression already applied). With ``zone``: only the signature's true box on it, with the
    margin ``--locate`` adds (what a perfect ``--layout`` would cut: the locator's error left out)."""
    from sigvault import cheques
    from sigvault.documents import Region, widened
    from sigvault.imaging import read_image
    from sigvault.synth import SyntheticWriter

    salt = zlib.crc32(rendering.encode())  # the same cheque with and without ``zone``

    def perturb(im: Image.Image, index: int) -> Image.Image:
        hands = [np.asarray(SyntheticWriter(10_000 + 3 * index + j).genuine(0)) for j in range(3)]
        doc = cheques.render(np.asarray(_grey(im), dtype=np.uint8), hands, rendering, (salt + index) % 2**31)
        grey = read_image(doc.data)
        if zone:
            b = doc.signature
            grey = widened(Region(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0), grey.shape[1], grey.shape[0]).crop(grey)
        return Image.fromarray(grey)

    return perturb


KINDS: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "dpi150": dpi150, "dpi75": dpi75, "jpeg40": jpeg40, "blur": blur, "faint": faint, "rotate": rotate, "noise": noise,
    **{k: _capture(k) for k in ("tinted", "line", "specks", "blurjpeg", "skew", "lowres", "cheque")},
    **{f"document-{r}": _document(r) for r in ("bitonal", "grey", "colour")},
    **{f"document-{r}-zone": _document(r, zone=True) for r in ("bitonal", "grey", "colour")},
}


def perturb_folder(src: Path, out: Path, kind: str) -> int:
    """Write every image of ``src`` perturbed by ``kind`` under ``out`` (same layout, PNG); -> images written."""
    from sigvault.evaluation import scan_dataset

    fn = KINDS[kind]
    _, items = scan_dataset(src)
    for n, item in enumerate(items):
        target = out / item.writer / ("forged" if item.forged else "genuine") / f"{item.path.stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(item.path) as im:
            fn(im, n).save(target)
    return len(items)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="a dataset folder: <writer>/{genuine,forged}/*")
    ap.add_argument("out", type=Path, help="the copies go to OUT/<name of SRC>-<kind>/")
    ap.add_argument("--kinds", default="all", help=f"comma-separated among {','.join(KINDS)}, or all")
    args = ap.parse_args(argv)
    kinds = list(KINDS) if args.kinds == "all" else args.kinds.split(",")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"--kinds: unknown {unknown}; choose among {', '.join(KINDS)}")
    if not args.src.is_dir():
        raise SystemExit(f"{args.src}: not a folder; give a dataset folder laid out <writer>/{{genuine,forged}}/*")
    for kind in kinds:
        dest = args.out / f"{args.src.resolve().name}-{kind}"
        print(f"{dest}: {perturb_folder(args.src.resolve(), dest, kind)} images ({kind})")


if __name__ == "__main__":
    main()
