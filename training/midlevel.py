"""Add mid-level features to an exported model's embedding: ONNX graph surgery, no torch.

    python -m training.midlevel --model DIR --out DIR [--stages 3 4] [--weight 0.7] [--splits-dir ../cache/splits]

The exported embedding is the average-pooled output of the backbone's last stage: what the network learnt
to tell writers apart, at a resolution of 4 x 8 cells on the 128 x 256 canvas. The earlier stages of the
same network see strokes (stage 3: 80 channels on 8 x 16 cells, stage 4: 112 channels) and what a forger
gets wrong is often there: tremor, pen lifts, stroke width, the shape of a loop, not the overall layout.
For each member network of the model (a fused ensemble has several, ``m0_``, ``m1_``...) and each stage in
``--stages``, the graph gets:

    stage output (n, C, h, w) -> global average pool -> signed square root -> L2
      -> PCA whitening (mean, projection fitted on the training writers' genuine signatures; min(C, --whiten)
         dimensions) -> L2 -> x weight / sqrt(members)

and the new embedding is the old one concatenated with those blocks, L2-normalised: a cosine is then
(old cosine + weight^2 x the mean of the blocks' cosines per stage) / (1 + stages x weight^2). The extra
cost is a pooling and a small matrix product per block (the stage outputs are computed anyway).
The wd-svm scoring, threshold rule, probability and cohort are refitted on the new embedding
(``training.calibrate``). Measured with the shipped pair in docs/model.md, "Mid-level features".

The parity file keeps the torch networks' embeddings of its inputs (``torch_embeddings``) with
``network_scale``, the constant by which the new embedding's first columns must be multiplied to give them
back, and adds ``embeddings``: the whole new embedding computed in numpy from the stage outputs, which the
test compares with the graph's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path

import numpy as np

log = logging.getLogger("training.midlevel")

STAGE_NODE = re.compile(r"^(.*)/backbone/blocks/blocks\.(\d+)/")
EPS = 1e-12


def stage_taps(nodes, stages: list[int]) -> list[tuple[str, int, str]]:
    """[(member prefix, stage, output tensor of the stage's last node)] in member order, then stage order.

    ``nodes``: the graph's nodes in topological order (an exported timm EfficientNet names them
    ``<prefix>/backbone/blocks/blocks.<stage>/...``; a fused ensemble prefixes each member's with ``m<i>_``)."""
    last: dict[tuple[str, int], str] = {}
    prefixes: list[str] = []
    for node in nodes:
        m = STAGE_NODE.match(node.name)
        if m is None:
            continue
        if m.group(1) not in prefixes:
            prefixes.append(m.group(1))
        last[(m.group(1), int(m.group(2)))] = node.output[0]
    if not prefixes:
        raise SystemExit("the graph has no backbone stages named <prefix>/backbone/blocks/blocks.<i>/; "
                         "export it with training.export")
    missing = sorted({s for s in stages for p in prefixes if (p, s) not in last})
    if missing:
        raise SystemExit(f"--stages: the graph has no stage {missing}; its stages are "
                         f"{sorted({s for _, s in last})}")
    return [(p, s, last[(p, s)]) for p in prefixes for s in stages]


def signed_root_l2(x: np.ndarray) -> np.ndarray:
    """Pooled stage features (n, C), which can be negative (linear bottlenecks): signed square root, L2."""
    x = np.sign(x) * np.sqrt(np.abs(x))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def head(network: np.ndarray, pooled: list[np.ndarray], whitenings: list[tuple[np.ndarray, np.ndarray]],
         scale: float) -> np.ndarray:
    """The new embedding in numpy: ``network`` (n, d) the old embedding, ``pooled`` each tap's pooled stage
    features (n, C), ``whitenings`` each tap's (mean, projection), ``scale`` each block's weight."""
    blocks = [network.astype(np.float64)]
    for x, (mean, proj) in zip(pooled, whitenings, strict=True):
        y = (signed_root_l2(x.astype(np.float64)) - mean) @ proj
        blocks.append(scale * y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), EPS))
    out = np.hstack(blocks)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), EPS)


def _pool_nodes(tensor: str, name: str):
    from onnx import helper

    return [
        helper.make_node("GlobalAveragePool", [tensor], [f"{name}_gap"], name=f"{name}_gap"),
        helper.make_node("Flatten", [f"{name}_gap"], [f"{name}_pooled"], axis=1, name=f"{name}_flatten"),
    ]


def _l2_nodes(x: str, out: str, name: str):
    from onnx import helper

    return [
        helper.make_node("ReduceL2", [x], [f"{name}_norm"], axes=[1], keepdims=1, name=f"{name}_norm"),
        helper.make_node("Max", [f"{name}_norm", "midlevel_eps"], [f"{name}_safe"], name=f"{name}_safe"),
        helper.make_node("Div", [x, f"{name}_safe"], [out], name=f"{name}_div"),
    ]


def tap_graph(graph_bytes: bytes, taps: list[tuple[str, int, str]]) -> bytes:
    """The model with extra outputs ``tap<i>``: each tap's pooled stage features (n, C), after ``embedding``."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(graph_bytes)
    g = model.graph
    for i, (_, _, tensor) in enumerate(taps):
        g.node.extend(_pool_nodes(tensor, f"tap{i}"))
        g.node.append(helper.make_node("Identity", [f"tap{i}_pooled"], [f"tap{i}"], name=f"tap{i}"))
        g.output.append(helper.make_tensor_value_info(f"tap{i}", onnx.TensorProto.FLOAT, ["n", None]))
    return model.SerializeToString()


def run_taps(graph_bytes: bytes, canvases: np.ndarray, n_taps: int, batch: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """(embedding (n, d), [pooled stage features (n, C) per tap]) of (n, H, W) canvases."""
    import onnxruntime as ort

    sess = ort.InferenceSession(graph_bytes, providers=["CPUExecutionProvider"])
    outs: list[list[np.ndarray]] = [[] for _ in range(n_taps + 1)]
    for i in range(0, len(canvases), batch):
        x = np.ascontiguousarray(canvases[i : i + batch, None], dtype=np.float32)
        for acc, y in zip(outs, sess.run(None, {"canvas": x}), strict=True):
            acc.append(y)
    emb, *pooled = (np.concatenate(o) for o in outs)
    return emb, pooled


def add_head(graph_bytes: bytes, taps: list[tuple[str, int, str]],
             whitenings: list[tuple[np.ndarray, np.ndarray]], scale: float, dim: int) -> bytes:
    """The model whose output ``embedding`` (n, ``dim``) is :func:`head` of its old one and the taps."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(graph_bytes)
    g = model.graph
    (old,) = [o.name for o in g.output]
    for node in g.node:  # the old output becomes an inner tensor
        node.output[:] = ["network_embedding" if o == old else o for o in node.output]
    del g.output[:]
    inits = [numpy_helper.from_array(np.array(EPS, dtype=np.float32), "midlevel_eps"),
             numpy_helper.from_array(np.array(scale, dtype=np.float32), "midlevel_scale")]
    blocks = ["network_embedding"]
    for i, ((_, _, tensor), (mean, proj)) in enumerate(zip(taps, whitenings, strict=True)):
        n = f"mid{i}"
        inits += [numpy_helper.from_array(mean.astype(np.float32), f"{n}_mean"),
                  numpy_helper.from_array(proj.astype(np.float32), f"{n}_proj")]
        g.node.extend(_pool_nodes(tensor, n))
        g.node.extend([
            helper.make_node("Abs", [f"{n}_pooled"], [f"{n}_abs"], name=f"{n}_abs"),
            helper.make_node("Sqrt", [f"{n}_abs"], [f"{n}_root"], name=f"{n}_root"),
            helper.make_node("Sign", [f"{n}_pooled"], [f"{n}_sign"], name=f"{n}_sign"),
            helper.make_node("Mul", [f"{n}_sign", f"{n}_root"], [f"{n}_signed"], name=f"{n}_signed"),
        ])
        g.node.extend(_l2_nodes(f"{n}_signed", f"{n}_unit", f"{n}_l2a"))
        g.node.extend([
            helper.make_node("Sub", [f"{n}_unit", f"{n}_mean"], [f"{n}_centred"], name=f"{n}_centred"),
            helper.make_node("MatMul", [f"{n}_centred", f"{n}_proj"], [f"{n}_white"], name=f"{n}_white"),
        ])
        g.node.extend(_l2_nodes(f"{n}_white", f"{n}_wunit", f"{n}_l2b"))
        g.node.append(helper.make_node("Mul", [f"{n}_wunit", "midlevel_scale"], [f"{n}_block"], name=f"{n}_block"))
        blocks.append(f"{n}_block")
    g.node.append(helper.make_node("Concat", blocks, ["midlevel_concat"], axis=1, name="midlevel_concat"))
    g.node.extend(_l2_nodes("midlevel_concat", "embedding", "midlevel_out"))
    g.initializer.extend(inits)
    g.output.append(helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", dim]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main(argv: list[str] | None = None) -> None:
    from sigvault import imaging
    from sigvault.embedder import CARD_NAME, COHORT_NAME, GRAPH_NAME, model_id_for
    from sigvault.evaluation import scan_dataset
    from training import calibrate
    from training.whitening import fit_whitening

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="an exported (or fused) model folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stages", type=int, nargs="+", default=[3, 4], help="backbone stages to pool (default 3 4)")
    ap.add_argument("--weight", type=float, default=0.7, help="each stage's weight beside the network's embedding")
    ap.add_argument("--whiten", type=int, default=256, help="at most this many whitened dimensions per block")
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"))
    ap.add_argument("--views", default="", metavar="DEGREES",
                    help="passed to training.calibrate (the scoring's views, e.g. --views=-4,4); default none")
    ap.add_argument("--view-blurs", default="", metavar="PIXELS",
                    help="passed to training.calibrate (the scoring's blurred views, e.g. --view-blurs=1); default none")
    ap.add_argument("--view-blur-cap", default="0", metavar="PIXELS",
                    help="passed to training.calibrate (the blurred views' bound in canvas pixels); default 0, none")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.weight <= 0:
        raise SystemExit(f"--weight {args.weight}: give a positive weight")
    if args.out.resolve() == args.model.resolve():
        raise SystemExit("--out: give a folder other than --model (the model is read while the new one is written)")
    if not (args.splits_dir / "train").is_dir():
        raise SystemExit(f"{args.splits_dir / 'train'}: no training writers; run python -m training.splits first")
    card = json.loads((args.model / CARD_NAME).read_text())
    if "midlevel" in card:
        raise SystemExit(f"{args.model}: has mid-level features already; give the model they were added to")
    graph_bytes = (args.model / GRAPH_NAME).read_bytes()
    import onnx

    taps = stage_taps(onnx.load_from_string(graph_bytes).graph.node, args.stages)
    members = len({p for p, _, _ in taps})
    scale = args.weight / math.sqrt(members)
    spec = imaging.PreprocessSpec.from_dict(card["preprocess"])

    _, items = scan_dataset(args.splits_dir / "train")
    genuine = [it for it in items if not it.forged]
    canvases = np.stack([imaging.load_canvas(it.path, spec) for it in genuine])
    tapped = tap_graph(graph_bytes, taps)
    _, pooled = run_taps(tapped, canvases, len(taps))
    whitenings = []
    for (prefix, stage, _), x in zip(taps, pooled, strict=True):
        whitenings.append(fit_whitening(signed_root_l2(x.astype(np.float64)), min(args.whiten, x.shape[1])))
        log.info("member %r stage %d: %d channels, whitening fitted on %d genuine signatures of %d training writers",
                 prefix, stage, x.shape[1], len(genuine), len({it.writer for it in genuine}))
    dim = int(card["embed_dim"]) + sum(p.shape[1] for _, p in whitenings)
    new_graph = add_head(graph_bytes, taps, whitenings, scale, dim)

    parity = np.load(args.model / "parity.npz")
    inputs = parity["inputs"].astype(np.float32)
    net, pooled_p = run_taps(tapped, inputs, len(taps))
    expected = head(net, pooled_p, whitenings, scale)
    network_scale = math.sqrt(1.0 + len(args.stages) * args.weight**2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / GRAPH_NAME).write_bytes(new_graph)
    np.savez_compressed(args.out / "parity.npz", inputs=parity["inputs"], torch_embeddings=parity["torch_embeddings"],
                        network_scale=np.float64(network_scale), embeddings=expected.astype(np.float32))
    (args.out / COHORT_NAME).unlink(missing_ok=True)  # written again by calibrate, below
    method = card.get("scoring", {}).get("method", "cosine")
    for key in ("scoring", "calibration", "cohort", "evaluation"):  # the old embedding's: refitted, re-measured
        card.pop(key, None)
    extra = sum(int(mean.size + proj.size) for mean, proj in whitenings)  # constants, counted like export's whitening
    card["architecture"] = {
        **card["architecture"],
        "parameters": int(card["architecture"].get("parameters", 0)) + extra,
        "network_embed_dim": int(card["embed_dim"]),
        "embed_dim": dim,
        "head": card["architecture"].get("head", "") + "; then mid-level features (training.midlevel) beside it",
    }
    card["midlevel"] = {
        "stages": args.stages,
        "weight": args.weight,
        "block_scale": scale,
        "parameters": extra,
        "blocks": [{"member": p or "-", "stage": s, "channels": int(w[0].shape[0]), "dims": int(w[1].shape[1])}
                   for (p, s, _), w in zip(taps, whitenings, strict=True)],
        "what": "per member and stage: global average pool, signed square root, L2, PCA whitening, L2, x block_scale; "
                "concatenated after the networks' embedding, L2-normalised",
        "whitening_fitted_on": f"{len(genuine)} genuine signatures of {len({it.writer for it in genuine})} training writers",
        "from_model": model_id_for(graph_bytes, card),
    }
    card["embed_dim"] = dim
    card["export"] = {**card["export"], "size_bytes": len(new_graph)}
    (args.out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    log.info("%s: %d-d embedding (%d from the network, %d mid-level), %.1f MB", args.out, dim, card["architecture"]["network_embed_dim"],
             dim - card["architecture"]["network_embed_dim"], len(new_graph) / 1e6)
    calibrate.main(["--weights", str(args.out), "--splits-dir", str(args.splits_dir), "--method", method,
                    f"--views={args.views}", f"--view-blurs={args.view_blurs}",
                    f"--view-blur-cap={args.view_blur_cap}"])


if __name__ == "__main__":
    main()
