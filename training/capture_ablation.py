"""What each effect of the cheque capture costs in combination: the chain with one effect left out at a time.

    python -m training.capture_ablation ../cache/splits/validation --out ../cache/ablate

``sigvault.captures.cheque`` chains a printed line, tinted paper (with a brightness ramp and coloured ink), skew,
lower resolution, dust, then light blur and JPEG. For ``none`` (the whole chain) and each effect left out, every
scan of the dataset folder is written captured that way under ``OUT/no-<effect>/`` (same layout, PNG; the seeds
of ``training.perturb``'s ``cheque`` kind, so ``no-none`` is that kind's copy), then measured with ``sigvault
evaluate DATASET --questioned OUT/no-<effect>`` (references clean, questioned items captured; 5 references,
5 splits, seed 0). Prints one line per variant: skilled and random EER, FRR, FAR on skilled forgeries, refer
rate and images skipped. Copies stay outside the repository (the datasets' terms).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

EFFECTS = ("line", "tinted", "skew", "lowres", "specks", "blurjpeg")


def chain(grey: np.ndarray, rng: np.random.Generator, leave_out: str) -> np.ndarray:
    """``sigvault.captures.cheque`` on a clean grey scan without ``leave_out`` ("none": all of it), as grey."""
    from sigvault import captures as c

    steps = {
        "line": c.line, "tinted": c.tinted, "skew": c.skew, "lowres": c.lowres, "specks": c._specks_any,
        "blurjpeg": c.blurjpeg,
    }  # fmt: skip
    out = grey
    for name in EFFECTS:  # the order of captures.cheque
        if name != leave_out:
            out = steps[name](out, rng)
    return c._to_grey(out)


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    from sigvault.evaluation import scan_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="a folder laid out <writer>/{genuine,forged}/*")
    ap.add_argument("--out", type=Path, required=True, help="where the captured copies go (outside the repository)")
    ap.add_argument("--leave-out", default="none," + ",".join(EFFECTS), help="comma-separated: none and effects")
    args = ap.parse_args(argv)
    _, items = scan_dataset(args.dataset)
    salt = zlib.crc32(b"cheque")
    for leave_out in args.leave_out.split(","):
        dst = args.out / f"no-{leave_out}"
        for n, item in enumerate(items):
            target = dst / item.writer / ("forged" if item.forged else "genuine") / f"{item.path.stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(item.path) as im:
                grey = np.asarray(im.convert("L"))
            Image.fromarray(chain(grey, np.random.default_rng((salt, n)), leave_out)).save(target)
        cmd = [sys.executable, "-m", "sigvault", "evaluate", str(args.dataset), "--references", "5", "--splits", "5",
               "--seed", "0", "--questioned", str(dst), "--json"]  # fmt: skip
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(
            f"left out {leave_out}: EER skilled {100 * r['eer_skilled']:.1f} random {100 * r['eer_random']:.1f}, FRR "
            f"{100 * r['frr']:.1f}, FAR skilled {100 * r['far_skilled']:.1f}, refer {100 * r['refer_rate']:.1f}, "
            f"{len(r['skipped'])} images skipped",
            flush=True,
        )


if __name__ == "__main__":
    main()
