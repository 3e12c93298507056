"""The model under each capture a back office receives: one `sigvault evaluate` per capture and side.

    python -m training.perturb ../cache/splits/validation ../cache/perturbed --kinds tinted,line,specks,blurjpeg,skew,lowres,cheque
    python -m training.capture_table --weights sigvault/weights --out ../cache/captures/<model id>

For each dataset folder (``--sets``, default the validation writers and the held-out SigComp 2009 writers)
and each capture of ``sigvault.captures`` whose copy ``training.perturb`` wrote under ``--perturbed``, runs
the product's own ``run_evaluation`` twice: **both sides** (references and questioned items from the copy, as
when specimens and cheques come through the same channel) and **questioned only** (references from the clean
scans, questioned items from the copy, as ``sigvault evaluate --questioned`` does). Each report is kept as
``<out>/<set>/<capture>-<side>.json`` and a rerun skips the reports already written (resumable). Prints a
Markdown table in which every row states how many images were refused and how many writers could not be
evaluated, since a figure that skips a quarter of the items is not a figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CAPTURES = ("clean", "tinted", "line", "specks", "blurjpeg", "skew", "lowres", "cheque")
SIDES = ("both", "questioned")


def _pct(d: dict, key: str) -> str:
    v = d.get(key)
    return "n/a" if v is None else f"{100 * v:.1f}"


def refused(folder: Path, spec: object) -> tuple[int, int]:
    """(images refused as holding no ink, images) of a dataset folder, for a capture so damaging that too few
    writers are left to evaluate."""
    from sigvault.errors import NoInkError
    from sigvault.evaluation import scan_dataset
    from sigvault.imaging import load_canvas

    _, items = scan_dataset(folder)
    n = 0
    for item in items:
        try:
            load_canvas(item.path, spec)  # type: ignore[arg-type]
        except NoInkError:
            n += 1
    return n, len(items)


def row(capture: str, side: str, d: dict) -> str:
    """One Markdown row of a report: refused images, writers not evaluated, and the figures on the rest."""
    if "error" in d:
        return f"| {capture} | {side} | {d['refused']} of {d['images']} | all: {d['error']} | | | | | |"
    c = d["counts"]
    refused = f"{c['skipped']} of {c['images']}"
    lost = len(d.get("writers_not_evaluated", []))
    return (
        f"| {capture} | {side} | {refused} | {lost} of {c['writers']} | {_pct(d, 'eer_skilled')} | {_pct(d, 'eer_random')} | "
        f"{_pct(d, 'frr')} | {_pct(d, 'far_skilled')} | {_pct(d, 'refer_rate')} |"
    )


HEADER = (
    "| capture | side | images refused | writers not evaluated | EER skilled | EER random | FRR | FAR skilled | refer |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    from sigvault.embedder import load_embedder
    from sigvault.errors import UsageError
    from sigvault.evaluation import run_evaluation

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("sigvault/weights"))
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"))
    ap.add_argument("--perturbed", type=Path, default=Path("../cache/perturbed"))
    ap.add_argument("--sets", default="validation,heldout-sigcomp2009-preview")
    ap.add_argument("--captures", default=",".join(CAPTURES))
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True, help="one JSON report per set, capture and side (kept: reruns resume)")
    ap.add_argument("--card", action="store_true",
                    help="also store the reports under captures in WEIGHTS/model_card.json (for the README's tables)")
    args = ap.parse_args(argv)
    emb = load_embedder(args.weights)
    captures = args.captures.split(",")
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for name in args.sets.split(","):
        clean = args.splits_dir / name
        refs = 4 if name.startswith("heldout-sigcomp2009") else 5  # 5 genuine per writer there: 4 references and 1 questioned
        print(f"\n{name} (model {emb.model_id}, {refs} references, {args.splits} splits, seed 0)\n\n{HEADER}", flush=True)
        for capture in captures:
            for side in SIDES if capture != "clean" else ("both",):
                path = args.out / name / f"{capture}-{side}.json"
                if not path.exists():
                    copy = clean if capture == "clean" else args.perturbed / f"{name}-{capture}"
                    try:
                        rep = run_evaluation(
                            copy if side == "both" else clean,
                            embedder=emb,
                            references=refs,
                            splits=args.splits,
                            seed=0,
                            questioned_dir=copy if side == "questioned" else None,
                        ).to_json()
                    except UsageError as exc:  # too few writers left with usable scans
                        n, total = refused(copy, emb.spec)
                        rep = {"error": str(exc).split(": ", 1)[-1], "refused": n, "images": total}
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(rep, indent=1) + "\n")
                report = json.loads(path.read_text())
                print(row(capture, side, report), flush=True)
                for bulky in ("per_split", "probes", "files", "skipped"):
                    report.pop(bulky, None)
                table.setdefault(name, {}).setdefault(capture, {})[side] = report
    if args.card:
        card_path = args.weights / "model_card.json"
        card = json.loads(card_path.read_text())
        card["captures"] = {**card.get("captures", {}), **table}  # the sets measured now replace their old reports
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
