"""Writer-level k-fold cross-validation of a training recipe, and the paired comparison of two recipes.

    python -m training.cv run --recipe s7-220 --member s7                 # every fold; a rerun resumes
    python -m training.cv run --recipe s7-220-line --member s7 --set augment.line_p=0.3 --folds 0,1
    python -m training.cv compare s7-220 s7-220-line                      # paired, writer by writer
    python -m training.cv compare s7-220 s7-220-line --on cheque          # questioned scans as cheque images

**Folds.** Every writer with skilled forgeries in the development datasets (``--datasets``: CEDAR 1-30, SigComp
2011 Dutch, SigComp 2009; about 106 writers) is dealt into ``--k`` folds, dataset by dataset in a seeded order,
so each fold holds about as many writers of each. Fold ``f`` is evaluated on its writers by a model trained on
none of them: the writers of fold ``f + 1`` lend ``--calibration`` of theirs as calibration writers (checkpoint
selection and the scoring fit, never trained on) and every other writer trains.

**A recipe** is the training config (``--config``) with one ensemble member's values (``--member``; none: the
config's top-level values) and ``--set`` overrides: ``training.ship`` trains it, exports it, adds the mid-level
features and fits the scoring, in ``<runs>/<recipe>/fold<f>/``; an interrupted fold resumes from its checkpoint.
Each fold's writers are then measured with the product's own ``sigvault evaluate`` protocol (5 references, 4 on
SigComp 2009 whose writers have 5 genuine signatures; 5 splits, seed 0), and every scored item is kept
(``trials-<group>.json``) so that two recipes can be compared writer by writer. Each fold is also measured with
its questioned scans through the captures of ``--captures`` (default ``cheque``: tinted paper under uneven
light, a printed line, dust, skew, lower resolution, blur and JPEG together; references clean, as ``sigvault
evaluate --questioned`` does; ``trials-<group>-<capture>.json``).

**The comparison** pairs the two recipes' results on the folds both have finished, writer by writer: for each
figure, both values, their difference (B - A) and its 95 % bootstrap interval over writers (2,000 resamples,
the same writers drawn for both recipes, within each fold; a figure is computed per fold, from that fold's model,
and averaged over folds weighted by writers). A difference whose interval holds 0 is not shown to exist.
Figures: skilled and random EER (one global threshold per fold, the literature's figure), and at the deployed
rule (each writer's own threshold) FRR, FAR on skilled forgeries, FAR on random forgeries and the refer rate.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DATASETS = ("cedar-1-30", "sigcomp2011-dutch", "sigcomp2009-preview")
FIGURES = ("eer_skilled", "eer_random", "frr", "far_skilled", "far_random", "refer")


def writers_with_forgeries(root: Path, datasets: Sequence[str]) -> dict[str, list[str]]:
    """dataset -> its writers (sorted) that have both genuine signatures and skilled forgeries."""
    out = {}
    for ds in datasets:
        ws = []
        for w in sorted(p.name for p in (root / ds).iterdir() if p.is_dir()):
            g, f = root / ds / w / "genuine", root / ds / w / "forged"
            if g.is_dir() and f.is_dir() and any(g.iterdir()) and any(f.iterdir()):
                ws.append(f"{ds}/{w}")
        out[ds] = ws
    return out


def make_folds(by_dataset: dict[str, list[str]], k: int, seed: int) -> list[list[str]]:
    """Deal each dataset's writers, in a seeded order, round the ``k`` folds (continuing where the previous
    dataset stopped, so fold sizes differ by at most one)."""
    folds: list[list[str]] = [[] for _ in range(k)]
    rng = np.random.default_rng(seed)
    turn = 0
    for ds in sorted(by_dataset):
        for w in rng.permutation(by_dataset[ds]).tolist():
            folds[turn % k].append(w)
            turn += 1
    return [sorted(f) for f in folds]


def _link_group(folder: Path, root: Path, keys: Sequence[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key in keys:
        link = folder / key.replace("/", "__")
        if not link.exists():
            link.symlink_to(root / key, target_is_directory=True)


def fold_plan(folds: list[list[str]], f: int, n_calibration: int) -> tuple[list[str], list[str], list[str]]:
    """(evaluation, calibration, training) writers of fold ``f``: calibration writers are taken from the next
    fold, alternating datasets (the fold's own order), so none of them trains or is evaluated here."""
    evaluation = folds[f]
    nxt = folds[(f + 1) % len(folds)]
    by_ds: dict[str, list[str]] = {}
    for w in nxt:
        by_ds.setdefault(w.split("/")[0], []).append(w)
    calibration: list[str] = []
    while len(calibration) < min(n_calibration, len(nxt)):
        for ds in sorted(by_ds):
            if by_ds[ds] and len(calibration) < n_calibration:
                calibration.append(by_ds[ds].pop(0))
    taken = set(evaluation) | set(calibration)
    training = sorted(w for fold in folds for w in fold if w not in taken)
    return evaluation, sorted(calibration), training


def recipe_config(config: Path, member: str | None, overrides: list[str]) -> dict:
    """The config with one ensemble member's values and the overrides applied, as one network."""
    from training.train import apply_overrides

    base = tomllib.loads(config.read_text())
    members = base.pop("ensemble", {}).get("members", [])
    if member is not None:
        chosen = [m for m in members if m.get("name") == member]
        if not chosen:
            raise SystemExit(f"{config}: no ensemble member named {member!r}; choose among {[m.get('name') for m in members]}")
        for section, values in chosen[0].items():
            if section != "name":
                base[section].update(values)
    return apply_overrides(base, overrides)


def run_fold(args: argparse.Namespace, folds: list[list[str]], f: int, root: Path) -> None:
    """Train, export and measure the recipe on fold ``f`` (resumable)."""
    from sigvault.embedder import load_embedder
    from sigvault.evaluation import run_evaluation
    from training import ship
    from training.train import dump_toml

    run = args.runs / args.recipe / f"fold{f}"
    done = run / "measured.json"
    wanted = [run / f"trials-{g}-{kind}.json" for g in ("refs5", "refs4") for kind in args.captures]
    if done.exists() and all(p.exists() or not (run / "splits" / p.name.split("-")[1]).is_dir() for p in wanted):
        print(f"fold {f}: measured already ({done})", flush=True)
        return
    evaluation, calibration, training = fold_plan(folds, f, args.calibration)
    splits = run / "splits"
    _link_group(splits / "train", root, training)
    _link_group(splits / "calibration", root, calibration)
    groups = {"refs5": [w for w in evaluation if not w.startswith("sigcomp2009")],
              "refs4": [w for w in evaluation if w.startswith("sigcomp2009")]}
    for name, keys in groups.items():
        _link_group(splits / name, root, keys)
    cfg = recipe_config(args.config, args.member, args.set)
    cfg["data"].update(datasets=list(args.datasets), heldout=[], calibration_writers=calibration,
                       validation_writers=evaluation, root=str(root))
    run.mkdir(parents=True, exist_ok=True)
    cfg_path = run / "recipe.toml"
    cfg_path.write_text(dump_toml(copy.deepcopy(cfg)))
    print(f"fold {f}: {len(training)} training, {len(calibration)} calibration, {len(evaluation)} evaluated writers",
          flush=True)
    if not (run / "model" / "model_card.json").exists():  # trained, exported and calibrated once
        ship.main(["--config", str(cfg_path), "--runs", str(run / "members"), "--out", str(run / "model"),
                   "--splits-dir", str(splits)])
    emb = load_embedder(run / "model")
    summary = json.loads(done.read_text()) if done.exists() else {"fold": f, "model": emb.model_id, "writers": evaluation,
                                                                    "groups": {}}
    for name, keys in groups.items():
        if len(keys) < 2:
            continue
        for kind in ("clean", *args.captures):
            trials = run / (f"trials-{name}.json" if kind == "clean" else f"trials-{name}-{kind}.json")
            if trials.exists():
                continue
            questioned = None
            if kind != "clean":  # the fold's writers' questioned scans through the capture, references clean
                from training.perturb import perturb_folder

                questioned = run / "captures" / f"{name}-{kind}"
                if not questioned.is_dir():
                    perturb_folder(splits / name, questioned, kind)
            rep = run_evaluation(splits / name, embedder=emb, references=5 if name == "refs5" else 4, splits=5, seed=0,
                                 questioned_dir=questioned)
            trials.write_text(json.dumps([list(t) for t in rep.trials]))
            data = rep.to_json()
            data.pop("per_split", None)
            summary["groups"][name if kind == "clean" else f"{name}-{kind}"] = data
            print(f"fold {f} {name} {kind}: {len(keys)} writers, {data['counts']['skipped']} images refused, EER skilled "
                  f"{100 * data['eer_skilled']:.1f} %, random {100 * data['eer_random']:.1f} %, FRR {100 * data['frr']:.1f} %, "
                  f"FAR skilled {100 * data['far_skilled']:.1f} %, refer {100 * data['refer_rate']:.1f} %", flush=True)
    done.write_text(json.dumps(summary, indent=1) + "\n")


# ---- the comparison -------------------------------------------------------------------------------------------


def load_trials(runs: Path, recipe: str, on: str = "clean") -> dict[int, list[tuple]]:
    """fold -> every scored item of the fold's groups measured ``on`` clean scans or a capture of the questioned
    ones: (split, writer, kind, score, threshold, decision). Folds without that measurement are left out."""
    out: dict[int, list[tuple]] = {}
    suffix = "" if on == "clean" else f"-{on}"
    for done in sorted((runs / recipe).glob("fold*/measured.json")):
        f = int(done.parent.name[4:])
        paths = [done.parent / f"trials-{g}{suffix}.json" for g in ("refs5", "refs4")]
        if not paths[0].exists():
            continue
        rows: list[tuple] = []
        for path in paths:
            if path.exists():
                rows.extend(tuple(r) for r in json.loads(path.read_text()))
        out[f] = rows
    return out


def _eer(g: np.ndarray, i: np.ndarray) -> float:
    from sigvault.metrics import eer

    return float(eer(g, i)[0]) if g.size and i.size else float("nan")


class FoldTrials:
    """One fold's items as arrays, indexed by writer so a bootstrap resample is a gather."""

    def __init__(self, rows: list[tuple]) -> None:
        self.writers = sorted({r[1] for r in rows})
        index = {w: n for n, w in enumerate(self.writers)}
        self.w = np.array([index[r[1]] for r in rows])
        self.kind = np.array([r[2] for r in rows])
        self.score = np.array([r[3] for r in rows], dtype=np.float64)
        self.decision = np.array([r[5] for r in rows])
        self.by_writer = [np.flatnonzero(self.w == n) for n in range(len(self.writers))]

    def figures(self, draw: np.ndarray) -> dict[str, float]:
        """The figures over the writers ``draw`` (indices, repeats allowed)."""
        take = np.concatenate([self.by_writer[n] for n in draw])
        kind, score, dec = self.kind[take], self.score[take], self.decision[take]
        g, s, r = kind == "genuine", kind == "skilled", kind == "random"

        def rate(mask: np.ndarray, what: str) -> float:
            return float(np.mean(dec[mask] == what)) if mask.any() else float("nan")

        return {
            "eer_skilled": _eer(score[g], score[s]),
            "eer_random": _eer(score[g], score[r]),
            "frr": rate(g, "reject"),
            "far_skilled": rate(s, "accept"),
            "far_random": rate(r, "accept"),
            "refer": float(np.mean(dec == "refer")) if dec.size else float("nan"),
        }


def _pooled(per_fold: list[dict[str, float]], weights: list[int]) -> dict[str, float]:
    return {k: float(np.average([p[k] for p in per_fold], weights=weights)) for k in FIGURES}


def compare(runs: Path, a: str, b: str, resamples: int = 2000, seed: int = 0, on: str = "clean") -> str:
    """The Markdown table comparing recipes ``a`` and ``b`` on the folds both have measured (``on`` clean scans, or
    with the questioned scans through a capture)."""
    ta, tb = load_trials(runs, a, on), load_trials(runs, b, on) if b != a else {}
    folds = sorted(set(ta) & set(tb)) if b != a else sorted(ta)
    if not folds:
        raise SystemExit(f"no fold measured by both {a} and {b} under {runs}; run python -m training.cv run first")
    fa = {f: FoldTrials(ta[f]) for f in folds}
    fb = {f: FoldTrials(tb[f]) for f in folds} if b != a else fa
    for f in folds:
        if fa[f].writers != fb[f].writers:
            raise SystemExit(f"fold {f}: the two recipes were measured on different writers (another --k or --seed?)")
    sizes = [len(fa[f].writers) for f in folds]
    whole = {f: np.arange(len(fa[f].writers)) for f in folds}
    base_a = _pooled([fa[f].figures(whole[f]) for f in folds], sizes)
    base_b = _pooled([fb[f].figures(whole[f]) for f in folds], sizes)
    rng = np.random.default_rng(seed)
    diffs = {k: [] for k in FIGURES}
    for _ in range(resamples):
        draws = {f: rng.integers(0, len(fa[f].writers), len(fa[f].writers)) for f in folds}
        pa = _pooled([fa[f].figures(draws[f]) for f in folds], sizes)
        pb = _pooled([fb[f].figures(draws[f]) for f in folds], sizes)
        for k in FIGURES:
            diffs[k].append(pb[k] - pa[k])
    n_items = sum(len(ta[f]) for f in folds)
    lines = [f"{a} against {b} ({on}): {len(folds)} fold(s) {folds}, {sum(sizes)} writers, {n_items} scored items of {a}; "
             f"95 % interval of B - A over {resamples} paired writer resamples (within folds)", "",
             f"| figure (%) | A: {a} | B: {b} | B - A | 95 % interval |", "|---|---|---|---|---|"]
    for k in FIGURES:
        lo, hi = np.nanpercentile(diffs[k], [2.5, 97.5])
        lines.append(f"| {k} | {100 * base_a[k]:.2f} | {100 * base_b[k]:.2f} | {100 * (base_b[k] - base_a[k]):+.2f} | "
                     f"[{100 * lo:+.2f}, {100 * hi:+.2f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and measure a recipe on the folds (resumable)")
    r.add_argument("--recipe", required=True, help="a name for this recipe: its folds go to RUNS/RECIPE/fold<f>")
    r.add_argument("--config", type=Path, default=Path("training/configs/default.toml"))
    r.add_argument("--member", default=None, help="an [[ensemble.members]] name whose values the recipe takes")
    r.add_argument("--set", action="append", default=[], help="override a config value, e.g. train.steps=220")
    r.add_argument("--folds", default="all", help="comma-separated fold numbers, or all")
    r.add_argument("--k", type=int, default=5)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--calibration", type=int, default=15, help="calibration writers borrowed from the next fold")
    r.add_argument("--datasets", default=",".join(DATASETS))
    r.add_argument("--root", type=Path, default=Path("../shared/datasets"))
    r.add_argument("--captures", default="cheque",
                   help="also measure with the questioned scans through these captures (sigvault.captures; '' for none)")
    r.add_argument("--runs", type=Path, default=Path("../runs/cv"))
    c = sub.add_parser("compare", help="paired comparison of two recipes, writer by writer")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--runs", type=Path, default=Path("../runs/cv"))
    c.add_argument("--resamples", type=int, default=2000)
    c.add_argument("--on", default="clean", help="clean, or a capture measured with run --captures (e.g. cheque)")
    args = ap.parse_args(argv)
    if args.command == "compare":
        print(compare(args.runs, args.a, args.b, args.resamples, on=args.on))
        return
    args.datasets = args.datasets.split(",")
    args.captures = [k for k in args.captures.split(",") if k]
    root = args.root.resolve()
    folds = make_folds(writers_with_forgeries(root, args.datasets), args.k, args.seed)
    args.runs.mkdir(parents=True, exist_ok=True)
    plan = args.runs / f"folds-k{args.k}-seed{args.seed}.json"
    if plan.exists() and json.loads(plan.read_text()) != folds:
        raise SystemExit(f"{plan}: the writers' folds changed since the runs under {args.runs} began; use another --runs")
    plan.write_text(json.dumps(folds, indent=1) + "\n")
    chosen = range(args.k) if args.folds == "all" else [int(x) for x in args.folds.split(",")]
    for f in chosen:
        run_fold(args, folds, f, root)
    print(compare(args.runs, args.recipe, args.recipe, resamples=200), file=sys.stderr)


if __name__ == "__main__":
    main()
