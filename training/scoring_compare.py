"""Compare scoring methods on the validation writers with one exported model (the issue's s-norm question).

    python -m training.scoring_compare --weights sigvault/weights --splits-dir ../cache/splits

Embeds the validation writers once (the cohort is the model's own, ``cohort.npy``), then for each seeded
split (5 references per writer, the evaluation protocol's choice of questioned items) scores every
questioned item by:

- ``cosine``: mean cosine similarity to the references (the scoring before cohorts);
- ``z-norm``: that score normalised by the person's impostor statistics over the cohort;
- ``s-norm``: symmetric normalisation (z-norm averaged with the query's own statistics over the cohort);
- ``wd-svm``: the product's writer-dependent linear SVM against the cohort (``sigvault.scoring``);
- ``wd-svm rbf``: the same with an RBF kernel (gamma 1 on the unit-norm embeddings, C 1), the kernel of
  sigver's writer-dependent protocol;
- with ``--cohorts``, the linear SVM against other cohorts: the calibration writers' genuine signatures (the
  shipped cohort before the one with forgeries), every training writer's genuine signatures, and every training writer's genuine
  signatures and skilled forgeries (those writers shaped the network, so their embeddings are tighter
  than a user's; the shipped cohort is 2 + 2 of each, ``training.calibrate.cohort_rows``).

Prints EER (one global threshold, as in the literature) for skilled and random forgeries, mean and std
over splits. The product keeps what wins (``scoring.method`` in the model card).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _embed_folder(folder: Path, embedder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sigvault import imaging
    from sigvault.evaluation import scan_dataset

    _, items = scan_dataset(folder)
    canvases = np.stack([imaging.load_canvas(it.path, embedder.spec) for it in items])
    return (
        embedder.embed(canvases).astype(np.float64),
        np.array([it.writer for it in items]),
        np.array([it.forged for it in items]),
    )


def _znorm(refs: np.ndarray, cohort: np.ndarray):
    imp = (cohort @ refs.T).mean(axis=1)
    mu, sd = imp.mean(), imp.std()
    return lambda q: ((q @ refs.T).mean(axis=1) - mu) / sd


def _snorm(refs: np.ndarray, cohort: np.ndarray):
    z = _znorm(refs, cohort)

    def score(q: np.ndarray) -> np.ndarray:
        s = (q @ refs.T).mean(axis=1)
        qc = q @ cohort.T
        return 0.5 * (z(q) + (s - qc.mean(axis=1)) / qc.std(axis=1))

    return score


def _rbf_svm(refs: np.ndarray, cohort: np.ndarray, gamma: float = 1.0, c: float = 1.0):
    from sklearn.svm import SVC

    x = np.vstack([refs, cohort])
    y = np.r_[np.ones(len(refs)), np.zeros(len(cohort))]
    return SVC(kernel="rbf", gamma=gamma, C=c, class_weight="balanced").fit(x, y).decision_function


def compare(
    emb, writers, forged, cohort, n_refs: int = 5, splits: int = 5, cohorts: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, list[float]]]:
    """{method: {"skilled": [EER per split], "random": [...]}}; ``cohorts`` adds "wd-svm, cohort: NAME"."""
    from sigvault import metrics, scoring

    wd = scoring.ScoringConfig(method="wd-svm")
    methods = {
        "cosine": lambda r: (lambda q: (q @ r.T).mean(axis=1)),
        "z-norm": lambda r: _znorm(r, cohort),
        "s-norm": lambda r: _snorm(r, cohort),
        "wd-svm": lambda r: scoring.person_scorer(r, wd, cohort).scores,
        "wd-svm rbf": lambda r: _rbf_svm(r, cohort),
    }
    for name, other in (cohorts or {}).items():
        methods[f"wd-svm, cohort: {name}"] = lambda r, c=other: scoring.person_scorer(r, wd, c).scores
    out = {m: {"skilled": [], "random": []} for m in methods}
    names = sorted(set(writers.tolist()))
    for seed in range(splits):
        rng = np.random.default_rng(seed)
        refs, rest = {}, {}
        for w in names:
            g = np.flatnonzero((writers == w) & ~forged)
            if g.size > n_refs:
                refs[w] = rng.choice(g, n_refs, replace=False)
                rest[w] = np.setdiff1d(g, refs[w])
        pick = {w: int(rng.choice(rest[w])) for w in refs}
        for m, make in methods.items():
            gen, sk, rd = [], [], []
            for w in refs:
                f = make(emb[refs[w]])
                gen.append(f(emb[rest[w]]))
                skilled = np.flatnonzero((writers == w) & forged)
                if skilled.size:
                    sk.append(f(emb[skilled]))
                rd.append(f(emb[[pick[o] for o in refs if o != w]]))
            g = np.concatenate(gen)
            out[m]["skilled"].append(metrics.eer(g, np.concatenate(sk))[0] if sk else float("nan"))
            out[m]["random"].append(metrics.eer(g, np.concatenate(rd))[0])
    return out


def main(argv: list[str] | None = None) -> None:
    from sigvault.embedder import load_embedder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("sigvault/weights"))
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"))
    ap.add_argument("--subset", default="validation", help="split folder to measure (default validation)")
    ap.add_argument("--references", type=int, default=5)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--cohorts", action="store_true", help="also: the SVM against other cohorts (see above)")
    args = ap.parse_args(argv)
    embedder = load_embedder(args.weights)
    if embedder.cohort is None:
        raise SystemExit(f"{args.weights}: the model has no cohort (cosine scoring); nothing to compare")
    emb, writers, forged = _embed_folder(args.splits_dir / args.subset, embedder)
    extra = None
    if args.cohorts:
        cal, _, cal_f = _embed_folder(args.splits_dir / "calibration", embedder)
        tr, _, tr_f = _embed_folder(args.splits_dir / "train", embedder)
        extra = {
            f"calibration writers' genuine ({int((~cal_f).sum())})": cal[~cal_f],
            f"training writers' genuine ({int((~tr_f).sum())})": tr[~tr_f],
            f"training writers' genuine and forged ({len(tr)})": tr,
        }
    cohort = embedder.cohort.astype(np.float64)
    res = compare(emb, writers, forged, cohort, args.references, args.splits, extra)
    print(f"{args.subset}: {len(set(writers.tolist()))} writers, {args.references} references, {args.splits} splits, "
          f"the model's cohort: {len(cohort)} vectors ({embedder.card.get('cohort', {}).get('what', '?')})")
    print("| scoring | EER skilled | EER random |\n|---|---|---|")
    for m, r in res.items():
        sk, rd = np.array(r["skilled"]), np.array(r["random"])
        print(f"| {m} | {100 * sk.mean():.1f} ± {100 * sk.std():.1f} % | {100 * rd.mean():.1f} ± {100 * rd.std():.1f} % |")


if __name__ == "__main__":
    main()
