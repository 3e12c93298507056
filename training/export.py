"""Calibrate the scoring rule on calibration writers, export the network to ONNX, write the model card.

    python -m training.export --run ../runs/main --out sigvault/weights

1. embeds the calibration writers (never seen by the network) and fits, with the product's own scoring
   code: the prior of the per-person threshold (mean and spread of leave-one-out scores among 5
   references), the threshold rule ``k``, the refer band, the probability calibration (logistic on
   ``score - threshold``) and the one-to-one ``compare`` calibration;
2. exports the network to ONNX (dynamic batch) and checks onnxruntime against torch on validation canvases;
3. saves parity inputs and the torch embeddings of them (``parity.npz``) so a test can check the exported
   graph without torch;
4. writes ``model_card.json`` (evaluation figures are added by ``training/card.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

log = logging.getLogger("training.export")


def fit_scoring(emb: np.ndarray, writers: np.ndarray, forged: np.ndarray, n_refs: int = 5, seeds: int = 10):
    """Fit a ScoringConfig on calibration writers. Returns (config, figures dict)."""
    from sklearn.linear_model import LogisticRegression

    from sigvault import scoring
    from sigvault.protocol import deployed_rates, run_split

    base = scoring.ScoringConfig()
    # 1. prior: leave-one-out statistics among n_refs references
    rng = np.random.default_rng(0)
    means, variances = [], []
    for w in sorted(set(writers.tolist())):
        g = np.flatnonzero((writers == w) & ~forged)
        for _ in range(seeds):
            if g.size < n_refs:
                break
            loo = scoring.loo_scores(emb[rng.choice(g, n_refs, replace=False)], base)
            means.append(loo.mean())
            variances.append(loo.var(ddof=1))
    prior_mean, prior_std = float(np.mean(means)), float(np.sqrt(np.mean(variances)))
    # thresholds are linear in k: thr(k) = thr(0) - k * (thr(0) - thr(1)); score every split once
    def split_at(k_value: float) -> list:
        c = scoring.ScoringConfig(prior_mean=prior_mean, prior_std=prior_std, k=k_value, refer_band=0.0)
        return [run_split(emb, writers, forged, n_refs, s, c) for s in range(seeds)]

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
    for b in np.arange(0.0, 0.2001, 0.0025):
        if rates(trials, scoring.ScoringConfig(refer_band=float(b)))["refer_rate"] <= 0.08:
            band = float(b)
        else:
            break
    # 4. probability: logistic regression on score - threshold, classes balanced, forgeries half
    #    skilled and half random
    x, y, wts = [], [], []
    for t in trials:
        d = t.score - t.threshold
        for kind, label, share in (("genuine", 1, 0.5), ("skilled", 0, 0.25), ("random", 0, 0.25)):
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
        prior_mean=round(prior_mean, 6), prior_std=round(prior_std, 6), prior_strength=base.prior_strength,
        k=round(k, 4), refer_band=round(band, 4), calib_slope=round(slope, 4), calib_offset=round(offset, 4),
        compare_threshold=round(-b0 / a, 6), compare_slope=round(a, 4),
    )
    figures = {"calibration_writers": len(names), "deployed_rule_on_calibration_writers": rates(trials, final)}
    return final, figures


def parity_inputs(spec) -> np.ndarray:
    """Deterministic synthetic strokes through the product's preprocessing: (8, H, W) float32."""
    from PIL import Image, ImageDraw

    from sigvault.imaging import preprocess

    rng = np.random.default_rng(1234)
    out = []
    for _ in range(8):
        im = Image.new("L", (900, 380), 235)
        d = ImageDraw.Draw(im)
        pts = np.cumsum(rng.normal(0, 25, size=(40, 2)), axis=0) + [200, 190]
        pts[:, 0] = np.linspace(80, 820, 40) + rng.normal(0, 10, 40)
        d.line([tuple(p) for p in pts], fill=int(rng.integers(20, 90)), width=int(rng.integers(2, 6)), joint="curve")
        out.append(preprocess(np.asarray(im), spec))
    return np.stack(out).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    import torch

    from sigvault.imaging import DEFAULT_SPEC
    from training.model import build_model
    from training.train import embed_all, load_splits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("sigvault/weights"))
    ap.add_argument("--name", default="siglite")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(2)
    cfg = tomllib.loads((args.run / "config.toml").read_text())
    m = cfg["model"]
    model = build_model(m["arch"], m["embed_dim"], False, m["drop_rate"])
    weights = args.run / "best.pt" if (args.run / "best.pt").exists() else args.run / "model.pt"
    log.info("exporting %s", weights)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    spec, _, tr, cal, val = load_splits(cfg, args.run / "config.toml")

    log.info("fitting the scoring rule on %d calibration images", len(cal.writers))
    scoring_cfg, cal_figures = fit_scoring(embed_all(model, cal.canvases), cal.writers, cal.forged)
    log.info("scoring: %s", scoring_cfg)

    args.out.mkdir(parents=True, exist_ok=True)
    graph = args.out / "model.onnx"
    x = torch.zeros(1, 1, spec.canvas_height, spec.canvas_width)
    torch.onnx.export(model, (x,), str(graph), input_names=["canvas"], output_names=["embedding"],
                      dynamic_axes={"canvas": {0: "n"}, "embedding": {0: "n"}}, opset_version=17, dynamo=False)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    v = val.canvases[:64].astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(v).unsqueeze(1)).numpy()
    got = sess.run(None, {"canvas": v[:, None]})[0]
    diff = float(np.abs(ref - got).max())
    log.info("onnxruntime vs torch on 64 validation canvases: max abs diff %.2e", diff)
    if diff > 1e-4:
        raise SystemExit(f"exported graph differs from torch by {diff}")
    # the test recomputes embeddings from float16-stored inputs, so the reference uses the same rounding
    pin = parity_inputs(DEFAULT_SPEC).astype(np.float16)
    with torch.no_grad():
        pout16 = model(torch.from_numpy(pin.astype(np.float32)).unsqueeze(1)).numpy()
    np.savez_compressed(args.out / "parity.npz", inputs=pin, torch_embeddings=pout16)

    trained = json.loads((args.run / "trained.json").read_text())
    n_params = sum(p.numel() for p in model.parameters())
    card = {
        "name": args.name,
        "architecture": {"backbone": m["arch"], "embed_dim": m["embed_dim"], "parameters": n_params,
                          "imagenet_init": m["imagenet_init"], "head": "linear + batchnorm + L2 normalisation"},
        "embed_dim": m["embed_dim"],
        "input": {"name": "canvas", "shape": ["n", 1, spec.canvas_height, spec.canvas_width], "range": [0, 1],
                  "meaning": "ink bright on an exactly-zero background (sigvault.imaging.preprocess)"},
        "preprocess": spec.to_dict(),
        "scoring": scoring_cfg.to_dict(),
        "calibration": {"fitted_on": "calibration writers (never seen by the network)", **cal_figures,
                        "probability": "sigmoid(calib_slope * (score - threshold) + calib_offset), classes balanced, forgeries half skilled, half random"},
        "training": {
            "data": cfg["data"]["datasets"],
            "terms": "CEDAR and ICDAR SigComp sets: research and evaluation use; no image is shipped",
            "train_writers": sorted(set(tr.writers.tolist())),
            "calibration_writers": sorted(set(cal.writers.tolist())),
            "validation_writers": sorted(set(val.writers.tolist())),
            "heldout_datasets": cfg["data"]["heldout"],
            "loss": cfg["train"]["loss"] + (f" + {cfg['train']['aux_triplet']} x batch-hard triplet" if cfg["train"]["loss"] == "arcface" and cfg["train"]["aux_triplet"] else ""),
            "loss_detail": "ArcFace over 2C classes: each training writer's genuine signatures, and the skilled forgeries of each writer as their own class (hard negatives)",
            "steps": trained["steps"], "minutes_on_2_cpu_cores": round(trained["minutes"], 1),
            "selected_checkpoint": {k: v for k, v in trained.get("best", {}).items() if k != "selection"} or "final",
            "augmentation": cfg["augment"],
            "config": cfg,
        },
        "export": {"format": "ONNX opset 17", "onnxruntime_vs_torch_max_abs_diff": diff,
                   "size_bytes": graph.stat().st_size},
    }
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s (%.1f MB) and model_card.json", graph, graph.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
