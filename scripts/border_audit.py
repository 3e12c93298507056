"""How much ink the speck and scanner-border filter drops, per dataset: the check that found the border defect.

    python scripts/border_audit.py ../shared/datasets            # the product's rule
    python scripts/border_audit.py ../shared/datasets --legacy   # the rule before the fix of 2026-11-26, for comparison

For every image of every dataset under ROOT (the project's layout, ``<dataset>/<writer>/{genuine,forged}/``)
it finds the ink as ``sigvault.imaging.preprocess`` does (working size, Otsu on the blurred copy), applies the
filter (``imaging._clean_mask``, or with ``--legacy`` the old rule: drop every component that touches an edge
and spans more than ``border_span`` of a side) and counts the images that lose more than ``--lost`` of their
ink pixels. A signature loses little to specks; a large loss means a signature stroke was taken for a
scanner border (or a border line was the ink lost: look at the worst files listed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sigvault.imaging import PreprocessSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _legacy_kept(ink: np.ndarray, n_ink: int, spec: PreprocessSpec) -> int:
    """Ink pixels kept by the border rule before its fix (every long edge-touching component dropped)."""
    import cv2

    _, _labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8, ltype=cv2.CV_32S)
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    sizes = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    sizes[0] = 0
    h, w = ink.shape
    touches = (top == 0) | (left == 0) | (bottom == h) | (right == w)
    spans = (bottom - top > spec.border_span * h) | (right - left > spec.border_span * w)
    keep = (sizes >= max(spec.speck_min_pixels, spec.speck_fraction * n_ink)) & ~(touches & spans)
    keep[0] = False
    if not keep.any():
        return int(sizes.max())
    return int(sizes[keep].sum())


def audit(root: Path, lost: float, legacy: bool, worst: int) -> dict[str, tuple[int, int, list[tuple[float, str]]]]:
    """{dataset: (images, images losing more than ``lost`` of their ink, the ``worst`` such files)}."""
    from sigvault import imaging

    spec = imaging.DEFAULT_SPEC
    out = {}
    for ds in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in ds.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
        losses = []
        for f in files:
            work = imaging._shrink(imaging.read_image(f, name=str(f)), spec.work_max_side)
            ink, n_ink, _, _ = imaging._ink_mask(work, spec, str(f))
            if legacy:
                kept = _legacy_kept(ink, n_ink, spec)
            else:
                kept = int(np.count_nonzero(imaging._clean_mask(ink, n_ink, spec, str(f))[0]))
            losses.append((1 - kept / n_ink, f.relative_to(root).as_posix()))
        bad = sorted((x for x in losses if x[0] > lost), reverse=True)
        out[ds.name] = (len(files), len(bad), bad[:worst])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--lost", type=float, default=0.10, help="share of the ink lost that counts (default 0.10)")
    ap.add_argument("--legacy", action="store_true", help="the border rule before its fix of 2026-11-26")
    ap.add_argument("--worst", type=int, default=3)
    args = ap.parse_args(argv)
    rule = "legacy rule" if args.legacy else "product rule"
    for ds, (n, bad, worst) in audit(args.root, args.lost, args.legacy, args.worst).items():
        print(f"{ds}: {bad} of {n} images lose more than {100 * args.lost:.0f} % of their ink ({rule})")
        for share, name in worst:
            print(f"    {100 * share:5.1f} %  {name}")


if __name__ == "__main__":
    main()
