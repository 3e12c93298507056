"""How well the signature is found on whole cheque images: synthetic cheques carrying real scans.

    python -m training.cheque_eval ../cache/splits/validation --documents 100 --out ../cache/cheques/validation

For each of ``--documents`` cheques per rendering (``sigvault.cheques.RENDERINGS``: bitonal 200-dpi G4 TIFF, grey
JPEG at 100-200 dpi, colour), a genuine scan of one writer of the folder is signed on the signature line and
genuine scans of three other writers fill the payee, the amount and the amount in words (seeded; ``--seed``).
``sigvault.locate.locate_signature`` then looks for the signature, and the script prints, per rendering, how
often the box it returns overlaps the true signature box with IoU >= 0.7, how often it chose another handwritten
field (IoU >= 0.3 with the payee, amount or words), how often it refused, and the median time per document.
With ``--out`` the cheques are written there (``<writer>/genuine/<file>.<tif|jpg>``, the scans' layout) with a
``truth.json`` of their boxes: outside the repository, since they carry the datasets' scans.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    from sigvault import cheques
    from sigvault.errors import NoSignatureFoundError
    from sigvault.evaluation import scan_dataset
    from sigvault.imaging import read_image
    from sigvault.locate import locate_signature

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="a folder laid out <writer>/{genuine,forged}/*")
    ap.add_argument("--documents", type=int, default=100, help="cheques per rendering")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    _, items = scan_dataset(args.dataset)
    genuine = [i for i in items if not i.forged]
    rng = np.random.default_rng(args.seed)
    truth = {}
    print(f"{args.dataset}: {len(genuine)} genuine scans of {len({i.writer for i in genuine})} writers, "
          f"{args.documents} cheques per rendering, seed {args.seed}\n")
    print("| rendering | IoU >= 0.7 | median IoU | another field chosen | refused | median ms |")
    print("|---|---|---|---|---|---|")
    for rendering in cheques.RENDERINGS:
        ious, wrong, refused, times = [], 0, 0, []
        for n in range(args.documents):
            sig = genuine[int(rng.integers(len(genuine)))]
            others = [g for g in genuine if g.writer != sig.writer]
            hands = [read_image(others[int(rng.integers(len(others)))].path) for _ in range(3)]
            doc = cheques.render(read_image(sig.path), hands, rendering, int(rng.integers(2**31)))
            grey = read_image(doc.data)
            t0 = time.perf_counter()
            try:
                found = locate_signature(grey)
            except NoSignatureFoundError:
                refused += 1
                ious.append(0.0)
                continue
            finally:
                times.append(time.perf_counter() - t0)
            box = cheques.Box(*found.box)
            ious.append(doc.signature.iou(box))
            wrong += any(f.iou(box) >= 0.3 for f in doc.fields.values())
            if args.out is not None:
                name = f"{rendering}-{n:04d}{doc.suffix}"
                path = args.out / sig.writer / "genuine" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(doc.data)
                truth[str(path.relative_to(args.out))] = vars(doc.signature)
        iou = np.array(ious)
        print(f"| {rendering} | {100 * np.mean(iou >= 0.7):.1f} % | {np.median(iou):.2f} | {100 * wrong / len(iou):.1f} % | "
              f"{100 * refused / len(iou):.1f} % | {1000 * np.median(times):.1f} |", flush=True)
    if args.out is not None:
        (args.out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    main()
