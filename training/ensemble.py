"""Fuse exported models into one: their embeddings side by side, in one ONNX graph.

    python -m training.ensemble --members RUN_A/export RUN_B/export --out DIR [--splits-dir ../cache/splits]
        [--float16-weights]

Each member is an export folder (``training.export``) with the same preprocessing spec. The fused graph feeds
the one input ``canvas`` to every member's graph and outputs their L2-normalised embeddings concatenated and
divided by sqrt(members), so the row is again a unit vector and its cosine with another is the mean of the
members' cosines. The wd-svm scoring, threshold rule, probability calibration and cohort are then fitted on the
fused embedding exactly as after an export (``training.calibrate``). The card lists each member's card.
The parity file (inputs and the torch embeddings the test compares the graph with) is the members' own,
concatenated the same way: the members were each checked against torch at their export.

``--float16-weights`` stores the graph's weight tensors as float16, each read back through a ``Cast`` to
float32 (``half_storage``): the file is half as large, onnxruntime folds the casts once when it loads the graph,
and every operation still runs in float32. The weights are rounded to float16's 11 significant bits, so the
graph's embeddings differ from the members' torch embeddings (kept in the parity file) by that rounding: the
card's ``export.weights_storage`` says so, and ``tests/test_embedder.py``'s torch parity bound (1e-4) would
have to allow it (0.0027 on the shipped pair, docs/model.md) before such a model ships. Three members fit the
package's 30 MB that way (about 22 MB) where two filled it in float32.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger("training.ensemble")


def fuse_graphs(graphs: list[bytes], dim: int) -> bytes:
    """Member ONNX graphs (input ``canvas``, output ``embedding``) -> one graph with the same input and output
    (``dim`` wide: the sum of the members' widths)."""
    import onnx
    from onnx import compose, helper

    models = [onnx.load_from_string(g) for g in graphs]
    opsets = {op.version for m in models for op in m.opset_import if op.domain in ("", "ai.onnx")}
    if len(opsets) != 1:
        raise SystemExit(f"members use different ONNX opsets {sorted(opsets)}; export them with the same training code")
    nodes, inits, outs = [], [], []
    for i, m in enumerate(models):
        m = compose.add_prefix(m, f"m{i}_", rename_inputs=False)
        nodes.extend(m.graph.node)
        inits.extend(m.graph.initializer)
        outs.append(m.graph.output[0].name)
    inputs = [models[0].graph.input[0]]
    scale = helper.make_tensor("ensemble_scale", onnx.TensorProto.FLOAT, [], [1.0 / math.sqrt(len(models))])
    nodes.append(helper.make_node("Concat", outs, ["ensemble_concat"], axis=1, name="ensemble_concat"))
    nodes.append(helper.make_node("Mul", ["ensemble_concat", "ensemble_scale"], ["embedding"], name="ensemble_scale"))
    output = helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", dim])
    graph = helper.make_graph(nodes, "ensemble", inputs, [output], initializer=[*inits, scale])
    fused = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opsets.pop())])
    fused.ir_version = models[0].ir_version
    onnx.checker.check_model(fused)
    return fused.SerializeToString()


def half_storage(graph: bytes, min_elements: int = 1024) -> bytes:
    """An ONNX graph -> the same graph with every float32 initializer of at least ``min_elements`` values stored
    as float16 (``<name>_fp16``) and turned back into float32 by a ``Cast`` node named ``<name>_cast`` that
    outputs the original name, so the nodes that read it are untouched. Small tensors (biases, scales,
    constants) stay float32: they weigh nothing and some feed shape computations."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(graph)
    kept, casts = [], []
    for t in model.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), f"{t.name}_fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [t.name], to=onnx.TensorProto.FLOAT, name=f"{t.name}_cast"))
        else:
            kept.append(t)
    nodes = [*casts, *model.graph.node]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main(argv: list[str] | None = None) -> None:
    from sigvault.embedder import CARD_NAME, GRAPH_NAME, model_id_for
    from training import calibrate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=Path, nargs="+", required=True, help="export folders, two or more")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"))
    ap.add_argument("--float16-weights", action="store_true", help="store the weights as float16 (half the file)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if len(args.members) < 2:
        raise SystemExit("--members: give two or more export folders")
    cards = [json.loads((m / CARD_NAME).read_text()) for m in args.members]
    specs = [c["preprocess"] for c in cards]
    if any(s != specs[0] for s in specs):
        raise SystemExit("--members: the members' preprocessing specs differ; fuse only models trained on the same canvases")
    parity = [np.load(m / "parity.npz") for m in args.members]
    if any(not np.array_equal(p["inputs"], parity[0]["inputs"]) for p in parity):
        raise SystemExit("--members: the members' parity inputs differ; re-export them with the same training code")
    graphs = [(m / GRAPH_NAME).read_bytes() for m in args.members]
    ids = [model_id_for(g, c) for g, c in zip(graphs, cards, strict=True)]

    args.out.mkdir(parents=True, exist_ok=True)
    dim = sum(int(c["embed_dim"]) for c in cards)
    graph = fuse_graphs(graphs, dim)
    if args.float16_weights:
        graph = half_storage(graph)
    (args.out / GRAPH_NAME).write_bytes(graph)
    k = len(args.members)
    torch_emb = np.concatenate([p["torch_embeddings"].astype(np.float32) for p in parity], axis=1) / math.sqrt(k)
    np.savez_compressed(args.out / "parity.npz", inputs=parity[0]["inputs"], torch_embeddings=torch_emb)
    card = {
        "name": cards[0]["name"],
        "architecture": {
            "ensemble": [c["architecture"] for c in cards],
            "members": ids,
            "embed_dim": dim,
            "parameters": sum(int(c["architecture"]["parameters"]) for c in cards),
            "head": f"the {k} members' L2-normalised embeddings concatenated and divided by sqrt({k})",
        },
        "embed_dim": dim,
        "input": cards[0]["input"],
        "preprocess": specs[0],
        "training": {"members": [{"model_id": i, **c["training"]} for i, c in zip(ids, cards, strict=True)]},
        "export": {"format": cards[0]["export"]["format"], "fused_from": [str(m) for m in args.members],
                   "size_bytes": len(graph), "weights_storage": "float16" if args.float16_weights else "float32"},
    }
    (args.out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    log.info("fused %d members -> %s (%d-d, %.1f MB)", k, args.out, dim, len(graph) / 1e6)
    calibrate.main(["--weights", str(args.out), "--splits-dir", str(args.splits_dir)])


if __name__ == "__main__":
    main()
