"""Calibrate the scoring rule on calibration writers, export the network to ONNX, write the model card.

    python -m training.export --run ../runs/main --out sigvault/weights

1. embeds the calibration writers (never seen by the network), writes their genuine signatures as the
   cohort of ``wd-svm`` scoring (``cohort.npy``) and fits (``training/calibrate.py``), with the product's own
   scoring code: the prior of the per-person threshold (mean and spread of leave-one-out scores among 5
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
from pathlib import Path

import numpy as np

log = logging.getLogger("training.export")


def parity_inputs(spec) -> np.ndarray:
    """Deterministic synthetic strokes through the product's preprocessing: (8, H, W) float32."""
    from PIL import Image, ImageDraw

    from sigvault.imaging import preprocess

    rng = np.random.default_rng(1234)
    out = []
    for _ in range(8):
        im = Image.new("L", (900, 380), 235)
        d = ImageDraw.Draw(im)
        pts = np.cumsum(rng.normal(0, 25, size=(40, 2)), axis=0) + np.array([200, 190])
        pts[:, 0] = np.linspace(80, 820, 40) + rng.normal(0, 10, 40)
        d.line([tuple(p) for p in pts], fill=int(rng.integers(20, 90)), width=int(rng.integers(2, 6)), joint="curve")
        out.append(preprocess(np.asarray(im), spec))
    return np.stack(out).astype(np.float32)


def onnx_graph(model, height: int, width: int) -> bytes:
    """The network as an ONNX graph (opset 17, dynamic batch): input ``canvas`` (n, 1, height, width),
    output ``embedding``."""
    import io

    import torch

    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 1, height, width),), buf, input_names=["canvas"], output_names=["embedding"],
                      dynamic_axes={"canvas": {0: "n"}, "embedding": {0: "n"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    import torch

    from training.calibrate import calibration_card, cohort_rows, fit_scoring, write_cohort
    from training.model import PooledFeatures, build_model
    from training.train import embed_all, load_splits
    from training.whitening import fit_whitening

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("sigvault/weights"))
    ap.add_argument("--name", default="siglite")
    ap.add_argument("--method", choices=("cosine", "wd-svm"), default="wd-svm", help="scoring method to fit")
    ap.add_argument("--embedding", choices=("projection", "pooled"), default="pooled",
                    help="what the graph outputs: the trained projection (embed_dim) or the backbone's pooled "
                         "features, square-rooted and L2-normalised (training.model.PooledFeatures)")
    ap.add_argument("--whiten", type=int, default=None, metavar="K",
                    help="with --embedding pooled: PCA-whiten to K dimensions, fitted on the training writers' "
                         "genuine signatures (default 256, the shipped model; 0 = no whitening)")
    ap.add_argument("--interpolate", type=float, default=1.0, metavar="ALPHA",
                    help="export ALPHA x the trained backbone + (1 - ALPHA) x its ImageNet initialisation, every "
                         "tensor (weight-space ensemble, WiSE-FT, Wortsman et al. 2022); 1 = the trained network")
    ap.add_argument("--checkpoint", choices=("best", "last"), default=None,
                    help="best: best.pt, the checkpoint the calibration writers' EER selected; last: model.pt, the "
                         "end of training (default: the run config's train.checkpoint, else best when present)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(2)
    if not 0.0 <= args.interpolate <= 1.0:
        raise SystemExit(f"--interpolate {args.interpolate}: give a value between 0 and 1")
    cfg = tomllib.loads((args.run / "config.toml").read_text())
    m = cfg["model"]
    model = build_model(m["arch"], m["embed_dim"], False, m["drop_rate"])
    choice = args.checkpoint or cfg["train"].get("checkpoint", "best")
    if choice not in ("best", "last"):
        raise SystemExit(f"{args.run / 'config.toml'}: train.checkpoint = {choice!r}: give \"best\" or \"last\"")
    weights = args.run / "best.pt" if choice == "best" and (args.run / "best.pt").exists() else args.run / "model.pt"
    log.info("exporting %s", weights)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    if args.interpolate < 1.0:
        if not m["imagenet_init"]:
            raise SystemExit("--interpolate needs a run initialised from ImageNet weights (model.imagenet_init)")
        init = build_model(m["arch"], m["embed_dim"], True, m["drop_rate"]).backbone.state_dict()
        mixed = {k: (args.interpolate * v + (1.0 - args.interpolate) * init[k]).to(v.dtype) if v.is_floating_point() else v
                 for k, v in model.backbone.state_dict().items()}
        model.backbone.load_state_dict(mixed, strict=True)
        log.info("backbone = %.2f x trained + %.2f x ImageNet initialisation", args.interpolate, 1.0 - args.interpolate)
    model.eval()
    head = "linear + batchnorm + L2 normalisation"
    spec, _, tr, cal, val = load_splits(cfg, args.run / "config.toml")
    if args.embedding == "pooled":
        whiten = 256 if args.whiten is None else args.whiten
        backbone = model.backbone
        model = PooledFeatures(backbone).eval()
        head = "global-average-pooled backbone features, square root, L2 normalisation (projection used in training only)"
        if whiten:
            pooled = embed_all(model, tr.canvases[~tr.forged]).astype(np.float64)
            model = PooledFeatures(backbone, fit_whitening(pooled, whiten)).eval()
            head += f", PCA whitening to {whiten} dimensions fitted on the training writers' genuine signatures, L2 normalisation"
    elif args.whiten:
        raise SystemExit("--whiten needs --embedding pooled")

    log.info("fitting the %s scoring rule on %d calibration images", args.method, len(cal.writers))
    cal_emb = embed_all(model, cal.canvases)
    embed_dim = int(cal_emb.shape[1])
    args.out.mkdir(parents=True, exist_ok=True)
    cohort_entry, kwargs = None, {}
    if args.method == "wd-svm":
        rows = cohort_rows(tr.writers, tr.forged)
        cohort = embed_all(model, tr.canvases[rows])
        cohort_entry = write_cohort(args.out, cohort, tr.writers[rows], tr.forged[rows])
        kwargs = {"cohort": cohort}
    scoring_cfg, cal_figures = fit_scoring(cal_emb, cal.writers, cal.forged, method=args.method, **kwargs)
    log.info("scoring: %s", scoring_cfg)

    graph = args.out / "model.onnx"
    graph.write_bytes(onnx_graph(model, spec.canvas_height, spec.canvas_width))
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
    pin = parity_inputs(spec).astype(np.float16)
    with torch.no_grad():
        pout16 = model(torch.from_numpy(pin.astype(np.float32)).unsqueeze(1)).numpy()
    np.savez_compressed(args.out / "parity.npz", inputs=pin, torch_embeddings=pout16)

    trained = json.loads((args.run / "trained.json").read_text())
    n_params = sum(p.numel() for p in model.parameters())
    card = {
        "name": args.name,
        "architecture": {"backbone": m["arch"], "embed_dim": embed_dim, "parameters": n_params,
                          "imagenet_init": m["imagenet_init"], "head": head,
                          "interpolation_with_imagenet_init": args.interpolate},
        "embed_dim": embed_dim,
        "input": {"name": "canvas", "shape": ["n", 1, spec.canvas_height, spec.canvas_width], "range": [0, 1],
                  "meaning": "ink bright on an exactly-zero background (sigvault.imaging.preprocess)"},
        "preprocess": spec.to_dict(),
        **calibration_card(args.method, scoring_cfg, cal_figures, cohort_entry),
        "training": {
            "data": cfg["data"]["datasets"],
            "terms": "CEDAR and ICDAR SigComp sets: research and evaluation use; no image is shipped",
            "train_writers": sorted(set(tr.writers.tolist())),
            "synthetic_writers": {
                "count": cfg["data"].get("synthetic_writers", 0),
                "genuine_each": cfg["data"].get("synthetic_genuine", 0),
                "forged_each": cfg["data"].get("synthetic_forged", 0),
                "source": "sigvault.synth, drawn here (seeds from training.data.SYNTH_SEED0); extra training classes only",
            },
            "calibration_writers": sorted(set(cal.writers.tolist())),
            "validation_writers": sorted(set(val.writers.tolist())),
            "heldout_datasets": cfg["data"]["heldout"],
            "loss": cfg["train"]["loss"] + (f" + {cfg['train']['aux_triplet']} x batch-hard triplet" if cfg["train"]["loss"] == "arcface" and cfg["train"]["aux_triplet"] else ""),
            "loss_detail": "ArcFace over 2C classes: each training writer's genuine signatures, and the skilled forgeries of each writer as their own class (hard negatives)",
            "steps": trained["steps"], "minutes_on_2_cpu_cores": round(trained["minutes"], 1),
            "selected_checkpoint": ({k: v for k, v in trained.get("best", {}).items() if k != "selection"}
                                    if weights.name == "best.pt" else None) or "final",
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
