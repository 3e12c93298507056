"""Cut an exported model before its projection head: the backbone's pooled features, square-rooted and
L2-normalised, as a new model folder (for measuring an export whose torch weights are gone).

    git show 34f1193:sigvault/weights/model.onnx > OLD/model.onnx       # siglite-0e13cce982ab
    git show 34f1193:sigvault/weights/model_card.json > OLD/model_card.json
    python -m training.cut_head --weights OLD --out OLD-pooled
    python -m training.calibrate --weights OLD-pooled --splits-dir ../cache/splits --method wd-svm
    python -m training.card --weights OLD-pooled --splits-dir ../cache/splits

docs/model.md's "same network, pooled features" row was measured this way. The new graph keeps every node up
to the global pooling's ``Flatten`` and ends with Relu, Sqrt and LpNormalization (what
``training.model.PooledFeatures`` computes without whitening); the card gets the new width, and its scoring
method is set to cosine until ``training.calibrate`` fits the wd-svm rule and writes the cohort. Needs the
``onnx`` package (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POOL = "/backbone/global_pool/flatten/Flatten_output_0"


def cut(weights: Path, out: Path) -> int:
    """Write ``out/model.onnx`` and ``out/model_card.json``; returns the embedding width."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(weights / "model.onnx"))
    graph = model.graph
    head = next(i for i, n in enumerate(graph.node) if POOL in n.input)
    kept = list(graph.node)[:head]
    del graph.node[:]
    graph.node.extend([*kept, helper.make_node("Relu", [POOL], ["pooled_relu"]),
                       helper.make_node("Sqrt", ["pooled_relu"], ["pooled_sqrt"]),
                       helper.make_node("LpNormalization", ["pooled_sqrt"], ["embedding"], axis=1, p=2)])
    used = {name for node in graph.node for name in node.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    card = json.loads((weights / "model_card.json").read_text())
    spec = card["preprocess"]
    x = np.zeros((1, 1, spec["canvas_height"], spec["canvas_width"]), np.float32)
    width = int(ort.InferenceSession(model.SerializeToString()).run(None, {graph.input[0].name: x})[0].shape[1])
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = width
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    card["embed_dim"] = card["architecture"]["embed_dim"] = width
    card["architecture"]["head"] = "pooled backbone features, square root, L2 normalisation (cut by training.cut_head)"
    card["scoring"]["method"] = "cosine"
    card.pop("cohort", None)
    card.pop("evaluation", None)
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return width


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    print(f"{args.out / 'model.onnx'}: pooled features, {cut(args.weights, args.out)} dimensions")


if __name__ == "__main__":
    main()
