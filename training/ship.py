"""Build the shipped model end to end: train each ensemble member, export it, fuse them (``make train``).

    python -m training.splits --out ../cache/splits      # the calibration writers' folder, once
    python -m training.ship --config training/configs/default.toml --runs ../runs/ship --out ../runs/ship/model

The config's ``[[ensemble.members]]`` tables name the members; each holds the config values that member
changes (``[ensemble.members.train]``, ``[ensemble.members.data]``...), over the rest of the config. Each member
trains (``training.train``, in ``RUNS/NAME``; an interrupted run resumes from its checkpoint, a finished one is
not retrained) and is exported (``training.export``, in ``RUNS/NAME/export``); the members are then fused into
one graph (``training.ensemble``; ``[ensemble] weights = "float16"`` stores its weights as float16); the config's ``[midlevel]`` stages are then added to the embedding
(``training.midlevel``), the scoring is fitted on the calibration writers (with the ``[scoring]`` views), and
the model lands in ``--out``.
A config without members ships one network. ``--set section.key=value`` overrides a value for every member (after the
member's own values). Use the result with ``SIGVAULT_MODEL=OUT``, measure it with ``python -m training.card
--weights OUT``, ship it with ``--out sigvault/weights``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import tomllib
from pathlib import Path

log = logging.getLogger("training.ship")


def member_configs(path: Path, overrides: list[str]) -> list[tuple[str, dict]]:
    """-> [(member name, its full training config)] from the config file's ``[[ensemble.members]]``."""
    from training.train import apply_overrides

    base = tomllib.loads(path.read_text())
    members = base.pop("ensemble", {}).get("members", [])
    if not members:
        return [("single", apply_overrides(base, overrides))]
    out = []
    for i, member in enumerate(members):
        name = str(member.get("name", f"member-{i + 1}"))
        cfg = copy.deepcopy(base)
        for section, values in member.items():
            if section == "name":
                continue
            if section not in cfg or not isinstance(values, dict):
                raise SystemExit(f"{path}: ensemble member {name}: [{section}] is not a section of the config")
            for key, value in values.items():
                if key not in cfg[section]:
                    raise SystemExit(f"{path}: ensemble member {name}: unknown key {section}.{key}")
                cfg[section][key] = value
        out.append((name, apply_overrides(cfg, overrides)))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: ensemble members need distinct names, got {names}")
    return out


def main(argv: list[str] | None = None) -> None:
    from training import calibrate, ensemble, export, midlevel
    from training.train import dump_toml, setup_logging, train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("training/configs/default.toml"))
    ap.add_argument("--runs", type=Path, default=Path("../runs/ship"), help="one run folder per member in here")
    ap.add_argument("--out", type=Path, default=Path("../runs/ship/model"))
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"),
                    help="calibration writers for the fused model's scoring (python -m training.splits)")
    ap.add_argument("--set", action="append", default=[], help="override a config value for every member")
    args = ap.parse_args(argv)
    members = member_configs(args.config, args.set)
    storage = tomllib.loads(args.config.read_text()).get("ensemble", {}).get("weights", "float32")
    if storage not in ("float32", "float16"):
        raise SystemExit(f"{args.config}: [ensemble] weights = {storage!r}: give \"float32\" or \"float16\"")
    if len(members) > 1 and not (args.splits_dir / "calibration").is_dir():
        raise SystemExit(f"{args.splits_dir / 'calibration'}: no calibration writers; run python -m training.splits first")
    mid = members[0][1].get("midlevel", {})
    wanted = members[0][1].get("scoring", {})
    view_args = [  # training.calibrate's (through training.midlevel's) options for the [scoring] views
        "--views=" + ",".join(f"{float(a):g}" for a in wanted.get("views", [])),
        "--view-blurs=" + ",".join(f"{float(r):g}" for r in wanted.get("view_blurs", [])),
        f"--view-blur-cap={float(wanted.get('view_blur_cap', 0.0)):g}",
    ]
    if mid.get("stages") and not (args.splits_dir / "train").is_dir():
        raise SystemExit(f"{args.splits_dir / 'train'}: no training writers; run python -m training.splits first")
    exports = []
    for name, cfg in members:
        run = args.runs / name
        setup_logging(run)
        if (run / "trained.json").exists():
            log.info("member %s: trained already in %s", name, run)
        else:
            (run / "config.toml").write_text(dump_toml(copy.deepcopy(cfg)))
            train(cfg, run, args.config)
        out = run / "export"
        export.main(["--run", str(run), "--out", str(out)])
        exports.append(out)
    model = exports[0]
    if len(members) > 1:
        model = args.runs / "fused"
        shutil.rmtree(model, ignore_errors=True)
        ensemble.main(["--members", *map(str, exports), "--out", str(model), "--splits-dir", str(args.splits_dir),
                       *(["--float16-weights"] if storage == "float16" else [])])
    if mid.get("stages"):
        with_mid = args.runs / "midlevel"
        shutil.rmtree(with_mid, ignore_errors=True)
        options = [f"--{key}={mid[key]}" for key in ("weight", "whiten") if key in mid]  # else midlevel's defaults
        midlevel.main(["--model", str(model), "--out", str(with_mid), "--splits-dir", str(args.splits_dir),
                       "--stages", *map(str, mid["stages"]), *options, *view_args])
        model = with_mid
    elif wanted.get("views") or wanted.get("view_blurs"):  # the members' scoring was fitted without views: refit
        method = json.loads((model / "model_card.json").read_text()).get("scoring", {}).get("method", "wd-svm")
        calibrate.main(["--weights", str(model), "--splits-dir", str(args.splits_dir), "--method", method,
                        *view_args])
    args.out.mkdir(parents=True, exist_ok=True)
    for file in ("model.onnx", "cohort.npy", "parity.npz", "model_card.json"):  # the card last: it names the rest
        if (model / file).exists():
            shutil.copy(model / file, args.out / file)
    log.info("model in %s; measure it with python -m training.card --weights %s", args.out, args.out)


if __name__ == "__main__":
    main()
