"""Fit an exported model's scoring rule on the calibration writers, and write its cohort.

    python -m training.calibrate --weights sigvault/weights --splits-dir ../cache/splits --method wd-svm

Embeds the calibration writers (never seen by the network) with the exported model through the product's
own preprocessing and onnxruntime embedder, and the cohort (``cohort.npy``, the negatives of ``wd-svm``
scoring: 2 genuine signatures and 2 skilled forgeries of each training writer, :func:`cohort_rows`; the
``train`` folder of ``--splits-dir``), fits the scoring rule with the product's scoring code
(:func:`fit_scoring`: threshold prior, ``k``, refer band, probability calibration, ``compare``
calibration) and rewrites the card's ``scoring``, ``calibration`` and ``cohort`` entries. The model id
(graph + preprocessing) does not change; vaults refit each person's scorer on first use.
``training/export.py`` calls the same functions right after export.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

log = logging.getLogger("training.calibrate")


def fit_scoring(
    emb: np.ndarray,
    writers: np.ndarray,
    forged: np.ndarray,
    *,
    method: str = "cosine",
    cohort: np.ndarray | None = None,
    n_refs: int = 5,
    seeds: int = 10,
    view_angles: tuple[float, ...] = (),
    view_blurs: tuple[float, ...] = (),
    view_blur_cap: float = 0.0,
    views: np.ndarray | None = None,
):
    """Fit a ScoringConfig with scoring ``method`` on calibration writers. Returns (config, figures dict).

    With ``wd-svm`` the cohort holds training writers only (:func:`cohort_rows`), none of the calibration
    writers being fitted, as a user is never in it. ``view_angles``, ``view_blurs`` and ``view_blur_cap``: the scoring's views
    (wd-svm, ``ScoringConfig.views``), with ``views`` (n, len(views), d) the items' embeddings in those views
    (genuine rows at least)."""
    from sklearn.linear_model import LogisticRegression

    from sigvault import scoring
    from sigvault.protocol import deployed_rates, run_split

    base = scoring.ScoringConfig(
        method=method, view_angles=tuple(view_angles), view_blurs=tuple(view_blurs), view_blur_cap=view_blur_cap
    )
    if base.views and views is None:
        raise ValueError("views given without the views' embeddings")
    views = views if base.views else None
    # 1. prior: leave-one-out statistics among n_refs references
    rng = np.random.default_rng(0)
    means, variances = [], []
    for w in sorted(set(writers.tolist())):
        g = np.flatnonzero((writers == w) & ~forged)
        for _ in range(seeds):
            if g.size < n_refs:
                break
            pick = rng.choice(g, n_refs, replace=False)
            loo = scoring.loo_scores(emb[pick], base, cohort, views=None if views is None else views[pick])
            means.append(loo.mean())
            variances.append(loo.var(ddof=1))
    prior_mean, prior_std = float(np.mean(means)), float(np.sqrt(np.mean(variances)))
    # thresholds are linear in k: thr(k) = thr(0) - k * (thr(0) - thr(1)); score every split once
    def split_at(k_value: float) -> list:
        c = replace(base, prior_mean=prior_mean, prior_std=prior_std, k=k_value, refer_band=0.0)
        return [run_split(emb, writers, forged, n_refs, s, c, cohort=cohort, views=views) for s in range(seeds)]

    at0, at1 = split_at(0.0), split_at(1.0)

    def trials_for(k_value: float) -> list:
        return [replace(t0, threshold=t0.threshold - k_value * (t0.threshold - t1.threshold)) for t0, t1 in zip(at0, at1)]

    def rates(trials: list, c) -> dict[str, float]:
        r = [deployed_rates(t, c) for t in trials]
        return {k: float(np.mean([x[k] for x in r])) for k in r[0]}

    # 2. k: balance FRR against FAR on skilled forgeries (random forgeries follow far below)
    no_band = scoring.ScoringConfig(refer_band=0.0)
    best = None
    for k in np.arange(-2.0, 4.001, 0.05):
        r = rates(trials_for(float(k)), no_band)
        cost = r["frr"] + r["far_skilled"]
        if best is None or cost < best[0] - 1e-12:
            best = (cost, round(float(k), 2), r)
    k = best[1]
    trials = trials_for(k)
    # 3. refer band: the widest band whose refer rate stays at or below 8 % on calibration writers
    band = 0.0
    for b in np.arange(0.0, 2.0001, 0.0025):  # stops at the first band over 8 %, whatever the score scale
        if rates(trials, scoring.ScoringConfig(refer_band=float(b)))["refer_rate"] <= 0.08:
            band = float(b)
        else:
            break
    # 4. probability: logistic regression on score - threshold, genuine signatures against skilled
    #    forgeries, classes balanced: the population k is fitted on, so that P(genuine) is near one half at
    #    the threshold and agrees with the decision (random forgeries, far below, would pull the logistic's
    #    midpoint down and leave a rejected signature with P(genuine) above one half)
    x, y, wts = [], [], []
    for t in trials:
        d = t.score - t.threshold
        for kind, label, share in (("genuine", 1, 0.5), ("skilled", 0, 0.5)):
            m = t.kind == kind
            x.append(d[m])
            y.append(np.full(m.sum(), label))
            wts.append(np.full(m.sum(), share / max(1, m.sum())))
    lr = LogisticRegression(C=100.0).fit(np.concatenate(x)[:, None], np.concatenate(y), sample_weight=np.concatenate(wts))
    slope, offset = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    # 5. compare: one-to-one similarities, same writer genuine pairs vs skilled and random pairs
    sims, labels, cw = [], [], []
    names = sorted(set(writers.tolist()))
    for i, w in enumerate(names):
        g = np.flatnonzero((writers == w) & ~forged)
        f = np.flatnonzero((writers == w) & forged)
        o = np.flatnonzero((writers == names[(i + 1) % len(names)]) & ~forged)
        gg = (emb[g] @ emb[g].T)[np.triu_indices(g.size, 1)]
        gf = (emb[g] @ emb[f].T).ravel()
        go = (emb[g] @ emb[o].T).ravel()
        for s, lab, share in ((gg, 1, 0.5), (gf, 0, 0.25), (go, 0, 0.25)):
            sims.append(s)
            labels.append(np.full(s.size, lab))
            cw.append(np.full(s.size, share / max(1, s.size)))
    lr2 = LogisticRegression(C=100.0).fit(np.concatenate(sims)[:, None], np.concatenate(labels), sample_weight=np.concatenate(cw))
    a, b0 = float(lr2.coef_[0, 0]), float(lr2.intercept_[0])
    final = scoring.ScoringConfig(
        method=method, svm_c=base.svm_c,
        prior_mean=round(prior_mean, 6), prior_std=round(prior_std, 6), prior_strength=base.prior_strength,
        k=round(k, 4), refer_band=round(band, 4), calib_slope=round(slope, 4), calib_offset=round(offset, 4),
        compare_threshold=round(-b0 / a, 6), compare_slope=round(a, 4), view_angles=base.view_angles,
        view_blurs=base.view_blurs, view_blur_cap=base.view_blur_cap,
    )
    figures = {"calibration_writers": len(names), "deployed_rule_on_calibration_writers": rates(trials, final)}
    return final, figures


def parse_angles(text: str) -> tuple[float, ...]:
    """'-4,4' -> (-4.0, 4.0); '' -> ()."""
    try:
        return tuple(float(a) for a in text.split(",") if a.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give angles in degrees separated by commas, e.g. -4,4") from None


def parse_blurs(text: str) -> tuple[float, ...]:
    """'1' -> (1.0,); '' -> (). Radii must be positive."""
    problem = argparse.ArgumentTypeError(f"{text!r}: give Gaussian radii in pixels above 0, separated by commas, e.g. 1")
    try:
        radii = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise problem from None
    if not all(0 < r < math.inf for r in radii):
        raise problem
    return radii


def embed_items(emb_model, items, views: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """Each item read once: its embedding (n, d), and with ``views`` (:class:`sigvault.imaging.View`, or angles)
    its embeddings in them (n, len(views), d) for the genuine items (:func:`sigvault.imaging.preprocess_views`),
    zeros for forgeries (never references)."""
    from sigvault import imaging

    canvases, out = [], np.zeros((len(items), len(views), emb_model.dim), dtype=np.float32)
    for i, it in enumerate(items):
        grey = imaging.read_image(it.path.read_bytes(), name=str(it.path))
        if views and not it.forged:
            both = imaging.preprocess_views(grey, emb_model.spec, views, name=str(it.path))[0]
            canvases.append(both[0])
            out[i] = emb_model.embed(both[1:])
        else:
            canvases.append(imaging.preprocess(grey, emb_model.spec, name=str(it.path)))
    return emb_model.embed(np.stack(canvases)), out


COHORT_GENUINE = 2  # per training writer: genuine signatures in the cohort
COHORT_FORGED = 2  # per training writer: skilled forgeries of that writer in the cohort


def cohort_rows(writers: np.ndarray, forged: np.ndarray, seed: int = 0) -> np.ndarray:
    """The cohort's rows among the training writers' signatures: per writer (sorted), ``COHORT_GENUINE`` of
    its genuine signatures and ``COHORT_FORGED`` of the skilled forgeries of it, drawn at random (seeded);
    sorted indices.

    Forgeries among the negatives teach each person's SVM what an imitation looks like as well as what
    another person's signature does: with the shipped ensemble, 2 + 2 per training writer (272 vectors, the
    size and so the enrolment cost of the 240-vector cohort before) measured 11.8 % skilled EER on the
    validation writers against 13.3 % with the calibration writers' genuine signatures, 11.0 % held-out
    both (``python -m training.scoring_compare --cohorts``); the training writers' genuine signatures alone,
    13.1 % (README, Model, "The cohort")."""
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for w in sorted(set(writers.tolist())):
        for is_forged, n in ((False, COHORT_GENUINE), (True, COHORT_FORGED)):
            pool = np.flatnonzero((writers == w) & (forged == is_forged))
            rows += rng.choice(pool, size=min(n, pool.size), replace=False).tolist()
    return np.sort(np.array(rows, dtype=np.int64))


def write_cohort(out: Path, cohort: np.ndarray, writers: np.ndarray, forged: np.ndarray) -> dict:
    """cohort.npy (the rows ``cohort`` of :func:`cohort_rows`, ``writers`` / ``forged`` theirs), and its card
    entry."""
    from sigvault.embedder import COHORT_NAME

    cohort = np.ascontiguousarray(cohort, dtype=np.float32)
    path = out / COHORT_NAME
    with open(path, "wb") as fh:
        np.save(fh, cohort, allow_pickle=False)
    return {
        "file": COHORT_NAME,
        "vectors": int(cohort.shape[0]),
        "genuine": int(np.sum(~forged)),
        "forged": int(np.sum(forged)),
        "writers": sorted(set(writers.tolist())),
        "what": f"embeddings of {COHORT_GENUINE} genuine signatures and {COHORT_FORGED} skilled forgeries of each "
        "training writer (seeded choice, training.calibrate.cohort_rows): the negatives of the writer-dependent "
        "SVMs; no calibration or validation writer is in it",
        "sha256_12": hashlib.sha256(path.read_bytes()).hexdigest()[:12],
    }


def calibration_card(method: str, cfg, figures: dict, cohort_entry: dict | None) -> dict:
    """The card entries written by calibration: scoring, calibration, cohort."""
    out = {
        "scoring": cfg.to_dict(),
        "calibration": {
            "fitted_on": "calibration writers (never seen by the network)"
            + ("; the cohort holds none of their signatures" if method == "wd-svm" else ""),
            **figures,
            "probability": "sigmoid(calib_slope * (score - threshold) + calib_offset), genuine signatures "
            "against skilled forgeries, classes balanced",
        },
    }
    if cohort_entry is not None:
        out["cohort"] = cohort_entry
    return out


def main(argv: list[str] | None = None) -> None:
    from sigvault import imaging, scoring
    from sigvault.embedder import CARD_NAME, load_embedder
    from sigvault.evaluation import scan_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("sigvault/weights"))
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"))
    ap.add_argument("--method", choices=("cosine", "wd-svm"), default="wd-svm")
    ap.add_argument("--views", type=parse_angles, default=(), metavar="DEGREES",
                    help="wd-svm: enrol each reference also turned by these angles, comma-separated (e.g. --views=-4,4); "
                         "default none")
    ap.add_argument("--view-blurs", type=parse_blurs, default=(), metavar="PIXELS",
                    help="wd-svm: enrol each reference also blurred by these Gaussian radii (pixels of the shrunk scan), "
                         "comma-separated (e.g. --view-blurs=1), after the turned views; default none")
    ap.add_argument("--view-blur-cap", type=float, default=0.0, metavar="PIXELS",
                    help="bound the blurred views' radius to this many canvas pixels (e.g. 1.5); default 0, none")
    args = ap.parse_args(argv)
    if not (args.view_blur_cap >= 0 and math.isfinite(args.view_blur_cap)):
        ap.error(f"--view-blur-cap {args.view_blur_cap}: give canvas pixels >= 0 (0: no bound)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    emb_model = load_embedder(args.weights)
    _, items = scan_dataset(args.splits_dir / "calibration")
    wanted = scoring.ScoringConfig(method=args.method, view_angles=args.views, view_blurs=args.view_blurs,
                                   view_blur_cap=args.view_blur_cap).views  # none for cosine
    emb, views = embed_items(emb_model, items, wanted)
    writers = np.array([it.writer for it in items])
    forged = np.array([it.forged for it in items])
    log.info("embedded %d calibration images of %d writers", len(items), len(set(writers.tolist())))
    cohort_entry = None
    kwargs: dict = {}
    if wanted:
        kwargs = {"view_angles": args.views, "view_blurs": args.view_blurs, "view_blur_cap": args.view_blur_cap,
                  "views": views}
        log.info("and their genuine signatures %s", scoring.describe_views(wanted))
    if args.method == "wd-svm":
        _, train_items = scan_dataset(args.splits_dir / "train")
        tw = np.array([it.writer for it in train_items])
        tf = np.array([it.forged for it in train_items])
        rows = cohort_rows(tw, tf)
        cohort = emb_model.embed(np.stack([imaging.load_canvas(train_items[i].path, emb_model.spec) for i in rows]))
        log.info("embedded the cohort: %d images of %d training writers", len(rows), len(set(tw.tolist())))
        cohort_entry = write_cohort(args.weights, cohort, tw[rows], tf[rows])
        kwargs["cohort"] = cohort
    cfg, figures = fit_scoring(emb, writers, forged, method=args.method, **kwargs)
    log.info("scoring: %s", cfg)
    card_path = args.weights / CARD_NAME
    card = json.loads(card_path.read_text())
    card.pop("cohort", None)
    card.update(calibration_card(args.method, cfg, figures, cohort_entry))
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s", card_path)


if __name__ == "__main__":
    main()
