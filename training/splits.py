"""Materialise the configured writer split as dataset folders of symlinks, for `sigvault evaluate`.

    python -m training.splits --config training/configs/default.toml --out ../cache/splits

creates ``<out>/validation/``, ``<out>/calibration/`` and ``<out>/train/`` whose entries
``<dataset>__<writer>`` link to the writer folders, plus ``<out>/heldout-<dataset>/`` for each held-out
dataset. Nothing is copied: the scans stay in ../shared/datasets. Rerun after a change of the split: links
of writers that moved to another group are removed (only symlinks are ever removed), so each folder holds
exactly its group.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("training/configs/default.toml"))
    ap.add_argument("--out", type=Path, default=Path("../cache/splits"))
    args = ap.parse_args(argv)
    cfg = tomllib.loads(args.config.read_text())
    root = Path(cfg["data"]["root"]).resolve()
    calib, val = set(cfg["data"]["calibration_writers"]), set(cfg["data"]["validation_writers"])
    groups: dict[str, list[str]] = {"train": [], "calibration": [], "validation": []}
    for ds in cfg["data"]["datasets"]:
        for w in sorted(p.name for p in (root / ds).iterdir() if p.is_dir()):
            key = f"{ds}/{w}"
            groups["calibration" if key in calib else "validation" if key in val else "train"].append(key)
    for ds in cfg["data"]["heldout"]:
        groups[f"heldout-{ds}"] = [f"{ds}/{p.name}" for p in sorted((root / ds).iterdir()) if p.is_dir()]
    for name, keys in groups.items():
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        links = {key.replace("/", "__"): root / key for key in keys}
        for stale in sorted(p for p in folder.iterdir() if p.is_symlink() and p.name not in links):
            stale.unlink()
            print(f"{folder}: removed {stale.name} (no longer in this group)")
        for entry, target in links.items():
            link = folder / entry
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        print(f"{folder}: {len(keys)} writers")


if __name__ == "__main__":
    main()
