"""The enrolment gate and the plausible threshold range, measured on writers the network never trained on.

    python scripts/reference_gate.py ../shared/datasets                      # calibration writers (the card's)
    python scripts/reference_gate.py ../shared/datasets --writers validation
    python scripts/reference_gate.py ../shared/datasets --margins 0 0.05 0.1 0.2 --json gate.json
    python scripts/reference_gate.py ../shared/datasets --write-card    # calibration writers only: sets the card

For each writer (the model card's calibration or validation writers, ``<dataset>/<writer>/{genuine,forged}``,
leaving out those whose signatures are in the model's cohort)
and each of ``--splits`` seeded draws, ``--others`` genuine signatures stand for the references a person already
has (2: the first enrolment of 3 references, one of them new; 4: a fifth added later). Candidate new references
are then put to the gate exactly as ``Vault.enroll`` does (:func:`sigvault.scoring.gate_failures`: the scorer and
threshold fitted on the others, with their views, against the model's cohort):

- **good**: the writer's other genuine signatures (a refusal is a wrong refusal);
- **another writer**: one genuine signature of each of up to 5 other writers of the same set;
- **skilled forgery**: up to 5 of the writer's ``forged/`` signatures;
- **blank**: a blank signature box drawn here (paper grain, dust, a printed line, a few pen dots);
- **stamp**: a rubber stamp drawn here (a box or a ring with printed words, in stamp ink).

Blanks and stamps are drawn here with Pillow, seeded, never taken from a dataset. A candidate that the image
checks refuse before the gate (no ink) counts as refused, and is shown apart. Each candidate's margin
``score - threshold`` is kept, so one run gives the refusals at every ``--margins`` value; the card's
``scoring.gate_margin`` is the one marked. It also prints the range of the thresholds the references give
(3, 5, 8 and 12 genuine references per writer, ``--threshold-splits`` draws each), the model card's
``scoring.threshold_range``.

``--write-card`` (calibration writers only) writes into the shipped model card: ``scoring.gate_margin``, the
smallest of ``--margins`` that wrongly refuses at most ``--max-good-refused`` of the good references in every
``--others`` case; ``scoring.threshold_range``, the range of those thresholds widened to the next 0.01;
``scoring.min_references`` (``--min-references``); and these figures under ``calibration.reference_hygiene``.
Rerun it whenever the model or its scoring is recalibrated (``training.calibrate`` leaves these keys at their
defaults). The model id does not change: it hashes the graph and the preprocessing, not the scoring.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sigvault import imaging, scoring  # noqa: E402
from sigvault.embedder import load_embedder  # noqa: E402
from sigvault.errors import ImageError  # noqa: E402

KINDS = ("good", "another writer", "skilled forgery", "blank", "stamp")
STAMP_WORDS = ("PAID", "RECEIVED", "COPY", "VOID", "APPROVED", "FILED", "POSTED", "VERIFIED")


def blank_box(rng: np.random.Generator) -> np.ndarray:
    """A blank signature area: grey paper grain, dust specks, a printed signature line, maybe a pen dot."""
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(420, 720)), int(rng.integers(160, 280))
    im = Image.new("L", (w, h), int(rng.integers(215, 250)))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(5, 40))):  # dust
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.5, 2.0)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(60, 160)))
    if rng.random() < 0.7:  # the printed line one signs on
        y = int(h * rng.uniform(0.6, 0.85))
        draw.line((int(w * 0.05), y, int(w * 0.95), y), fill=int(rng.integers(40, 120)), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 3))):  # a pen touched the paper
        x, y, r = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.3 * h, 0.7 * h), rng.uniform(2, 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(10, 60)))
    grain = rng.normal(0, rng.uniform(2, 8), size=(h, w))
    return np.clip(np.asarray(im, dtype=np.float64) + grain, 0, 255).astype(np.uint8)


def stamp(rng: np.random.Generator) -> np.ndarray:
    """A rubber stamp: words in a box or a ring, printed in stamp ink, slightly turned, unevenly inked."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = int(rng.integers(420, 720)), int(rng.integers(200, 320))
    im = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(im)
    ink = int(rng.integers(40, 130))
    words = [str(rng.choice(STAMP_WORDS)), f"{int(rng.integers(1, 29)):02d} DEC 2026"]
    size = int(rng.integers(30, 56))
    font = ImageFont.load_default(size=size)
    if rng.random() < 0.5:
        m = int(rng.integers(10, 30))
        draw.rectangle((m, m, w - m, h - m), outline=ink, width=int(rng.integers(3, 8)))
    else:
        r = min(w, h) // 2 - 10
        draw.ellipse((w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r), outline=ink, width=int(rng.integers(3, 7)))
        size = max(18, r // 3)
        font = ImageFont.load_default(size=size)
    y = h // 2 - len(words) * size // 2
    for word in words:
        left, _, right, _ = draw.textbbox((0, 0), word, font=font)
        draw.text(((w - (right - left)) // 2, y), word, fill=ink, font=font)
        y += int(size * 1.1)
    im = im.rotate(float(rng.uniform(-8, 8)), fillcolor=255, expand=False)
    arr = np.asarray(im, dtype=np.float64)
    patchy = rng.uniform(0.0, 0.35, size=(h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    arr = 255 - (255 - arr) * (1 - patchy)  # uneven inking
    return np.clip(arr + rng.normal(0, 3, size=arr.shape), 0, 255).astype(np.uint8)


class Embedded:
    """Embeddings of dataset files (each computed once): the scan's vector and its views' vectors."""

    def __init__(self, embedder) -> None:  # noqa: ANN001 - an Embedder
        self.embedder = embedder
        self._memo: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    def grey(self, grey: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(vector (d,), views (len(views), d)), or None when the image checks refuse it (no ink)."""
        emb = self.embedder
        try:
            canvases, _ = imaging.preprocess_views(grey, emb.spec, emb.scoring.views, name=name)
        except ImageError:
            return None
        vecs = np.asarray(emb.embed(canvases), dtype=np.float32)
        return vecs[0], vecs[1:]

    def file(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        key = str(path)
        if key not in self._memo:
            self._memo[key] = self.grey(imaging.read_image(path.read_bytes(), name=key), key)
        return self._memo[key]


def writer_files(root: Path, writer: str) -> tuple[list[Path], list[Path]]:
    folder = root / writer
    return sorted((folder / "genuine").glob("*.png")), sorted((folder / "forged").glob("*.png"))


def measure(root: Path, writers: list[str], others: int, splits: int, seed: int, embedded: Embedded) -> dict:
    """For each candidate kind, the margins (score - threshold; None: refused before the gate) over all draws."""
    emb = embedded.embedder
    cfg, cohort = emb.scoring, emb.cohort
    margins: dict[str, list[float | None]] = {k: [] for k in KINDS}
    by_set: dict[str, list[str]] = {}
    for w in writers:
        by_set.setdefault(w.split("/")[0], []).append(w)
    for wi, writer in enumerate(writers):
        genuine, forged = writer_files(root, writer)
        for split in range(splits):
            rng = np.random.default_rng([seed, wi, split, others])
            order = rng.permutation(len(genuine))
            refs = [embedded.file(genuine[i]) for i in order[:others]]
            if any(r is None for r in refs):
                continue
            vectors = np.stack([r[0] for r in refs])  # type: ignore[index]
            views = np.stack([r[1] for r in refs]) if cfg.views else None  # type: ignore[index]
            fits = scoring.SvmFits(cohort, cfg) if cfg.method == "wd-svm" and cohort is not None else None
            threshold = scoring.person_threshold(vectors, cfg, cohort, fits, views).value
            scorer = scoring.person_scorer(vectors, cfg, cohort, fits, views)

            def judge(kind: str, item: tuple[np.ndarray, np.ndarray] | None) -> None:
                margins[kind].append(None if item is None else scorer.score(item[0]) - threshold)  # noqa: B023

            for i in order[others : others + 5]:
                judge("good", embedded.file(genuine[i]))
            for i in rng.permutation(len(forged))[:5]:
                judge("skilled forgery", embedded.file(forged[i]))
            strangers = [o for o in by_set[writer.split("/")[0]] if o != writer]
            for o in rng.permutation(len(strangers))[:5]:
                files = writer_files(root, strangers[o])[0]
                judge("another writer", embedded.file(files[int(rng.integers(len(files)))]))
            for k in range(2):
                judge("blank", embedded.grey(blank_box(rng), f"blank-{writer}-{split}-{k}"))
                judge("stamp", embedded.grey(stamp(rng), f"stamp-{writer}-{split}-{k}"))
    return margins


THRESHOLD_REFERENCES = (3, 5, 8, 12)


def thresholds(root: Path, writers: list[str], splits: int, seed: int, embedded: Embedded) -> dict[int, list[float]]:
    """The threshold each writer's own references give, with 3, 5, 8 and 12 of them (:data:`THRESHOLD_REFERENCES`),
    ``splits`` draws each."""
    emb = embedded.embedder
    cfg, cohort = emb.scoring, emb.cohort
    out: dict[int, list[float]] = {}
    for wi, writer in enumerate(writers):
        genuine, _ = writer_files(root, writer)
        for n in THRESHOLD_REFERENCES:
            for split in range(splits):
                rng = np.random.default_rng([seed, wi, split, n, 1])
                refs = [embedded.file(genuine[i]) for i in rng.permutation(len(genuine))[:n]]
                refs = [r for r in refs if r is not None]
                vectors = np.stack([r[0] for r in refs])
                views = np.stack([r[1] for r in refs]) if cfg.views else None
                out.setdefault(n, []).append(scoring.person_threshold(vectors, cfg, cohort, None, views).value)
    return out


def refused(values: list[float | None], margin: float) -> int:
    return sum(1 for v in values if v is None or v < -margin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="datasets folder (<dataset>/<writer>/{genuine,forged})")
    parser.add_argument("--writers", choices=("calibration", "validation"), default="calibration")
    parser.add_argument("--others", type=int, nargs="+", default=[2, 4], help="references the person already has")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--threshold-splits", type=int, default=5, help="draws per writer and size for the range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4])
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--write-card", action="store_true", help="write the measured rule into the shipped card")
    parser.add_argument("--max-good-refused", type=float, default=0.05)
    parser.add_argument("--min-references", type=int, default=3)
    args = parser.parse_args(argv)
    if args.write_card and args.writers != "calibration":
        parser.error("--write-card calibrates on the calibration writers only")

    emb = load_embedder()
    card_member = emb.card["training"]["members"][0]
    cohort_writers = {w.replace("__", "/") for w in emb.card.get("cohort", {}).get("writers", [])}
    listed = list(card_member[f"{args.writers}_writers"])
    # a writer whose signatures are in the cohort is a negative of every person's scorer: not a new writer
    writers = [w for w in listed if w not in cohort_writers]
    embedded = Embedded(emb)
    cfg = emb.scoring
    report: dict = {
        "model": emb.model_id,
        "writers": args.writers,
        "n_writers": len(writers),
        "left_out_in_cohort": sorted(set(listed) & cohort_writers),
        "splits": args.splits,
        "seed": args.seed,
        "gate_margin": cfg.gate_margin,
        "by_others": {},
    }
    print(f"model {emb.model_id}; {len(writers)} {args.writers} writers ({len(listed) - len(writers)} more left out: "
          f"their signatures are in the cohort); {args.splits} draws each, seed {args.seed}")
    for others in args.others:
        margins = measure(args.root, writers, others, args.splits, args.seed, embedded)
        table = {
            kind: {
                "n": len(values),
                "no_ink": sum(v is None for v in values),
                "refused": {f"{m:g}": refused(values, m) for m in sorted({*args.margins, cfg.gate_margin})},
            }
            for kind, values in margins.items()
        }
        report["by_others"][others] = table
        print(f"\nperson already has {others} references; refused by the gate at each margin (%, of n):")
        ms = sorted({*args.margins, cfg.gate_margin})
        print("| candidate | n | no ink | " + " | ".join(f"{m:g}" + ("*" if m == cfg.gate_margin else "") for m in ms) + " |")
        print("|---|---|---|" + "---|" * len(ms))
        for kind, row in table.items():
            cells = " | ".join(f"{100 * row['refused'][f'{m:g}'] / max(row['n'], 1):.1f}" for m in ms)
            print(f"| {kind} | {row['n']} | {row['no_ink']} | {cells} |")
    spread = thresholds(args.root, writers, args.threshold_splits, args.seed, embedded)
    report["thresholds"] = {n: [min(v), max(v)] for n, v in spread.items()}
    everything = [t for v in spread.values() for t in v]
    report["threshold_range"] = [min(everything), max(everything)]
    report["thresholds_all"] = spread
    if cfg.threshold_range is not None:
        lo, hi = cfg.threshold_range
        outside = {n: sum(not lo <= t <= hi for t in v) for n, v in spread.items()}
        report["outside_card_range"] = outside
        print(f"outside the card's threshold_range [{lo:g}, {hi:g}] (every decision referred): " + "; ".join(
            f"{n} refs {k} of {len(spread[n])}" for n, k in outside.items()
        ))
    print("\nthresholds from the writers' own references: " + "; ".join(
        f"{n} refs [{min(v):.4f}, {max(v):.4f}]" for n, v in spread.items()
    ) + f"; all [{min(everything):.4f}, {max(everything):.4f}]")
    if args.write_card:
        write_card(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def write_card(report: dict, args: argparse.Namespace) -> None:
    """The measured rule and its figures into the shipped model card (see the module's docstring)."""
    import math

    from sigvault.embedder import shipped_model_dir

    tables = report["by_others"]
    margin = next(
        m
        for m in sorted(args.margins)
        if all(t["good"]["refused"][f"{m:g}"] <= args.max_good_refused * t["good"]["n"] for t in tables.values())
    )
    lo, hi = report["threshold_range"]
    path = shipped_model_dir() / "model_card.json"
    card = json.loads(path.read_text())
    card["scoring"].update(
        min_references=args.min_references,
        threshold_range=[math.floor(lo * 100) / 100, math.ceil(hi * 100) / 100],
        gate_margin=margin,
    )
    card["calibration"]["reference_hygiene"] = {
        "command": "python scripts/reference_gate.py ../shared/datasets --write-card",
        "writers": report["n_writers"],
        "splits": report["splits"],
        "seed": report["seed"],
        "gate_margin_rule": f"smallest margin refusing at most {args.max_good_refused:.0%} of good references",
        "refused_at_gate_margin": {
            others: {kind: [row["refused"][f"{margin:g}"], row["n"]] for kind, row in table.items()}
            for others, table in tables.items()
        },
        "thresholds_seen": report["thresholds"],
    }
    path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"\nwrote {path}: gate_margin {margin:g}, threshold_range {card['scoring']['threshold_range']}, "
          f"min_references {args.min_references}")


if __name__ == "__main__":
    raise SystemExit(main())
