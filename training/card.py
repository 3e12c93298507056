"""Measure the exported model with `sigvault evaluate` and write the figures into its model card.

    python -m training.card --weights sigvault/weights --splits-dir ../cache/splits

Runs the product's own ``run_evaluation`` (5 references, 5 splits, seed 0) on the validation writers (all,
then per dataset) and on every held-out dataset, and stores each report (figures, capture-bias probes,
shortcut test) under ``evaluation`` in ``model_card.json`` together with the command that reproduces it.
Also prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

KEYS = ("eer_skilled", "eer_random", "auc_skilled", "frr_at_far1_skilled", "frr", "far_skilled", "far_random", "refer_rate", "eer_skilled_swapped",
        "auc_skilled_swapped_writer")


def subsets(splits_dir: Path) -> dict[str, Path]:
    """validation, validation per dataset (temporary symlink folders), and held-out datasets."""
    out = {"validation": splits_dir / "validation"}
    by_ds: dict[str, list[Path]] = {}
    for link in sorted((splits_dir / "validation").iterdir()):
        by_ds.setdefault(link.name.split("__")[0], []).append(link)
    tmp = Path(tempfile.mkdtemp(prefix="sigvault-card-"))
    for ds, links in by_ds.items():
        folder = tmp / f"validation-{ds}"
        folder.mkdir()
        for link in links:
            (folder / link.name).symlink_to(link.resolve(), target_is_directory=True)
        out[f"validation-{ds}"] = folder
    for held in sorted(splits_dir.glob("heldout-*")):
        out[held.name] = held
    return out


def main(argv: list[str] | None = None) -> None:
    from sigvault.embedder import load_embedder
    from sigvault.evaluation import run_evaluation

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("sigvault/weights"))
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"))
    ap.add_argument("--references", type=int, default=5)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("../cache/card-eval"))
    args = ap.parse_args(argv)
    emb = load_embedder(args.weights)
    card_path = args.weights / "model_card.json"
    card = json.loads(card_path.read_text())
    results = {}
    rows = []
    for name, folder in subsets(args.splits_dir).items():
        refs = min(args.references, 4) if name.startswith("heldout-sigcomp2009") else args.references
        rep = run_evaluation(folder, embedder=emb, references=refs, splits=args.splits, seed=0, out_dir=args.out / name)
        data = rep.to_json()
        data.pop("per_split", None)
        data["command"] = f"sigvault evaluate <{name} writers> --references {refs} --splits {args.splits} --seed 0"
        results[name] = data
        rows.append((name, data))
        print(f"{name}: " + ", ".join(f"{k} {data.get(k)}" for k in KEYS if k in data), flush=True)
    card["evaluation"] = results
    card_path.write_text(json.dumps(card, indent=2) + "\n")

    def pct(d: dict, k: str) -> str:
        v, s = d.get(k), d.get(f"{k}_std")
        return "n/a" if v is None else f"{100 * v:.1f} ± {100 * (s or 0):.1f}"

    def num(d: dict, k: str) -> str:
        v, s = d.get(k), d.get(f"{k}_std")
        return "n/a" if v is None else f"{v:.2f} ± {s or 0:.2f}"

    print("\n| writers | refs | EER skilled | EER random | FRR | FAR skilled | FAR random | refer | EER skilled, swapped refs | AUC per writer, swapped refs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, d in rows:
        print(f"| {name} ({d['counts'].get('writers', '?')}) | {d['references']} | {pct(d, 'eer_skilled')} | {pct(d, 'eer_random')} | "
              f"{pct(d, 'frr')} | {pct(d, 'far_skilled')} | {pct(d, 'far_random')} | {pct(d, 'refer_rate')} | {pct(d, 'eer_skilled_swapped')} | "
              f"{num(d, 'auc_skilled_swapped_writer')} |")


if __name__ == "__main__":
    main()
