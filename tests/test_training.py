"""The parts of training that need no torch: configuration, writer split, batch sampling."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from training.data import BatchSampler, CanvasSet
from training.train import load_config

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "default.toml"


def test_default_split_is_writer_disjoint():
    cfg = tomllib.loads(CONFIG.read_text())
    cal, val = set(cfg["data"]["calibration_writers"]), set(cfg["data"]["validation_writers"])
    assert not cal & val
    assert len(cal) == 15 and len(val) == 11
    assert not set(cfg["data"]["heldout"]) & set(cfg["data"]["datasets"])


def test_overrides_keep_types_and_refuse_unknown_keys():
    cfg = load_config(CONFIG, ["train.loss=triplet", "train.steps=12", "model.imagenet_init=false", "train.lr=0.5"])
    assert cfg["train"]["loss"] == "triplet" and cfg["train"]["steps"] == 12
    assert cfg["model"]["imagenet_init"] is False and cfg["train"]["lr"] == 0.5
    with pytest.raises(SystemExit, match=r"unknown key train\.nope"):
        load_config(CONFIG, ["train.nope=1"])


def test_sampler_labels_genuine_by_writer_and_forgeries_as_their_own_class():
    writers = np.array(["a"] * 6 + ["b"] * 6 + ["c"] * 6)
    forged = np.array(([False] * 4 + [True] * 2) * 3)
    data = CanvasSet(np.zeros((18, 4, 8), np.float16), writers, forged)
    s = BatchSampler(data, writers_per_batch=2, genuine=3, forged=1, seed=0)
    assert s.num_classes == 6
    idx, labels, is_forged = s.next()
    assert len(idx) == 8 and is_forged.sum() == 2
    for i, lab, f in zip(idx, labels, is_forged):
        c = s.index[writers[i]]
        assert forged[i] == f
        assert lab == (c + 3 if f else c)
    # a seeded sampler is reproducible, and its state can be saved and restored (resume)
    state = s.state()
    first = s.next()
    s.set_state(state)
    assert all(np.array_equal(a, b) for a, b in zip(first, s.next()))


def test_synthetic_writers_are_extra_classes_with_their_own_forgeries(tmp_path: Path):
    from sigvault.imaging import PreprocessSpec
    from training.data import SYNTH_SEED0, concat, synthetic_canvases

    spec = PreprocessSpec(canvas_height=32, canvas_width=64)
    made = synthetic_canvases(2, 3, 2, spec, tmp_path)
    assert made.canvases.shape == (10, 32, 64) and made.canvases.dtype == np.float16
    assert made.writers.tolist() == ["synthetic/0000"] * 5 + ["synthetic/0001"] * 5
    assert made.forged.tolist() == [False, False, False, True, True] * 2
    from sigvault.imaging import preprocess
    from sigvault.synth import SyntheticWriter

    first = preprocess(np.asarray(SyntheticWriter(SYNTH_SEED0).genuine(0)), spec).astype(np.float16)
    np.testing.assert_array_equal(made.canvases[0], first)  # the product's preprocessing, nothing else
    again = synthetic_canvases(2, 3, 2, spec, tmp_path)  # from the cache file, identical
    assert [p.name.startswith("synthetic-") for p in tmp_path.iterdir()] == [True]
    np.testing.assert_array_equal(again.canvases, made.canvases)
    assert SYNTH_SEED0 >= 100_000  # far from the seeds the demo and the tests draw people with
    both = concat(CanvasSet(made.canvases[:1], np.array(["cedar/001"]), np.array([False])), made)
    sampler = BatchSampler(both, 2, 2, 1, seed=0)
    assert sampler.classes == ["cedar/001", "synthetic/0000", "synthetic/0001"] and sampler.num_classes == 6
    cfg = load_config(CONFIG, ["data.synthetic_writers=60"])
    assert cfg["data"]["synthetic_writers"] == 60 and tomllib.loads(CONFIG.read_text())["data"]["synthetic_writers"] == 0


def test_coarse_captures_are_the_scans_shrunk_then_preprocessed(tmp_path: Path):
    from PIL import Image, ImageDraw

    from sigvault.imaging import PreprocessSpec, load_canvas, preprocess
    from training.data import Sample, coarse_canvas, coarse_canvases, coarse_factors, concat, load_canvases

    spec = PreprocessSpec(canvas_height=32, canvas_width=64)
    samples = []
    for k, width in enumerate((5, 1)):  # a broad pen, and a 1-px pen in pale ink that averaging washes out
        im = Image.new("L", (600, 200), 235)
        ImageDraw.Draw(im).line([(60, 150), (300, 40), (540, 140)], fill=30 if width > 1 else 200, width=width)
        path = tmp_path / f"w{k}" / "genuine" / "a.png"
        path.parent.mkdir(parents=True)
        im.save(path)
        samples.append(Sample(f"set/w{k}", False, path))
    factors = coarse_factors(2, 0.25, 0.55)
    np.testing.assert_array_equal(factors, coarse_factors(2, 0.25, 0.55))  # one seeded draw
    assert ((factors >= 0.25) & (factors <= 0.55)).all()
    data = load_canvases(samples, spec, tmp_path / "cache")
    assert data.coarse is None
    made = coarse_canvases(samples, data, spec, tmp_path / "cache", 0.25, 0.55)
    np.testing.assert_array_equal(made.canvases, data.canvases)
    # the broad pen: the scan shrunk by area averaging to its factor, then the product's preprocessing
    grey = np.asarray(Image.open(samples[0].path))
    h, w = round(200 * factors[0]), round(600 * factors[0])
    small = np.asarray(Image.fromarray(grey).resize((w, h), Image.Resampling.BOX))
    np.testing.assert_array_equal(made.coarse[0], preprocess(small, spec).astype(np.float16))
    assert not np.array_equal(made.coarse[0], data.canvases[0])
    # the pale 1-px pen has no ink left at that size: its own canvas stands in
    assert coarse_canvas(np.asarray(Image.open(samples[1].path)), float(factors[1]), spec, "pale") is None
    np.testing.assert_array_equal(made.coarse[1], load_canvas(samples[1].path, spec).astype(np.float16))
    again = coarse_canvases(samples, data, spec, tmp_path / "cache", 0.25, 0.55)  # from the cache file
    np.testing.assert_array_equal(again.coarse, made.coarse)
    # subsets and concatenation keep the coarse canvases row for row
    one = made.subset({"set/w0"})
    np.testing.assert_array_equal(one.coarse, made.coarse[:1])
    both = concat(one, CanvasSet(data.canvases[1:], data.writers[1:], data.forged[1:]))
    np.testing.assert_array_equal(both.coarse, np.stack([made.coarse[0], data.canvases[1]]))
    assert concat(data, data).coarse is None
    cfg = tomllib.loads(CONFIG.read_text())
    assert cfg["augment"]["coarse_p"] == 0.0 and cfg["data"]["coarse_factor"] == [0.25, 0.55]


def test_captured_copies_are_the_scans_through_seeded_captures_then_preprocessed(tmp_path: Path):
    from PIL import Image

    from sigvault import captures
    from sigvault.imaging import PreprocessSpec, preprocess
    from sigvault.synth import SyntheticWriter
    from training.data import CAPTURE_SEED, Sample, capture_canvases, concat, load_canvases

    spec = PreprocessSpec(canvas_height=32, canvas_width=64)
    samples = []
    for k in range(3):
        path = tmp_path / f"w{k}" / "genuine" / "a.png"
        path.parent.mkdir(parents=True)
        SyntheticWriter(k).genuine(0).save(path)
        samples.append(Sample(f"set/w{k}", False, path))
    data = load_canvases(samples, spec, tmp_path / "cache")
    assert data.captured is None
    made = capture_canvases(samples, data, spec, tmp_path / "cache", ["line", "tinted"], 2)
    assert made.captured.shape == (2, 3, 32, 64) and made.captured.dtype == np.float16
    np.testing.assert_array_equal(made.canvases, data.canvases)
    # each copy is one of the kinds applied with the copy's seed, then the product's preprocessing
    grey = np.asarray(Image.open(samples[1].path))
    options = [preprocess(captures.apply(kind, grey, CAPTURE_SEED + 1 * 3 + 1), spec).astype(np.float16)
               for kind in ("line", "tinted")]
    assert any(np.array_equal(made.captured[1, 1], o) for o in options)
    assert not np.array_equal(made.captured[0], made.captured[1])  # two different draws
    again = capture_canvases(samples, data, spec, tmp_path / "cache", ["line", "tinted"], 2)  # from the cache file
    np.testing.assert_array_equal(again.captured, made.captured)
    one = made.subset({"set/w2"})
    np.testing.assert_array_equal(one.captured, made.captured[:, 2:])
    both = concat(one, data.subset({"set/w0"}))
    np.testing.assert_array_equal(both.captured[:, 1], np.stack([data.canvases[0]] * 2))
    with pytest.raises(SystemExit, match=r"\[data\] captures: unknown \['fax'\]"):
        capture_canvases(samples, data, spec, tmp_path / "cache", ["fax"], 1)
    cfg = tomllib.loads(CONFIG.read_text())
    assert cfg["augment"]["capture_p"] == 0.0 and cfg["data"]["capture_copies"] == 2


def test_splits_follow_a_changed_config_exactly(tmp_path: Path):
    """Rerunning training.splits after writers moved between groups leaves each folder holding exactly its
    group (a stale validation link would have measured a training writer)."""
    from training import splits

    for w in ("001", "002", "003", "004"):
        (tmp_path / "data" / "ds" / w / "genuine").mkdir(parents=True)
    (tmp_path / "data" / "held" / "009" / "genuine").mkdir(parents=True)

    def run(validation: list[str]) -> dict[str, list[str]]:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[data]\nroot = "{tmp_path / "data"}"\ndatasets = ["ds"]\nheldout = ["held"]\n'
                       f'calibration_writers = ["ds/001"]\nvalidation_writers = {json.dumps(validation)}\n')
        splits.main(["--config", str(cfg), "--out", str(tmp_path / "out")])
        return {d.name: sorted(p.name for p in d.iterdir()) for d in sorted((tmp_path / "out").iterdir())}

    assert run(["ds/002", "ds/003"])["validation"] == ["ds__002", "ds__003"]
    got = run(["ds/003"])
    assert got == {"calibration": ["ds__001"], "heldout-held": ["held__009"], "train": ["ds__002", "ds__004"],
                   "validation": ["ds__003"]}
    assert (tmp_path / "out" / "validation" / "ds__003" / "genuine").is_dir()  # links, scans untouched
    assert (tmp_path / "data" / "ds" / "002" / "genuine").is_dir()


def test_preprocess_section_overrides_the_canvas_and_refuses_unknown_fields():
    from sigvault.imaging import DEFAULT_SPEC
    from training.train import preprocess_spec

    cfg = load_config(CONFIG, ["preprocess.canvas_height=192", "preprocess.canvas_width=384"])
    spec = preprocess_spec(cfg)
    assert (spec.canvas_height, spec.canvas_width) == (192, 384)
    assert spec.margin == DEFAULT_SPEC.margin and spec.work_max_side == DEFAULT_SPEC.work_max_side
    assert preprocess_spec(load_config(CONFIG, [])) == DEFAULT_SPEC
    with pytest.raises(SystemExit, match=r"\[preprocess\].*unknown preprocessing keys \['canvas_depth'\]"):
        preprocess_spec({"preprocess": {"canvas_depth": 3}})


def _tiny_member(weight: np.ndarray) -> bytes:
    """An ONNX graph like an export's: canvas (n, 1, 2, 3) -> flatten -> matmul -> L2-normalised embedding."""
    import onnx
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("Flatten", ["canvas"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "member",
        [helper.make_tensor_value_info("canvas", onnx.TensorProto.FLOAT, ["n", 1, 2, 3])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", weight.shape[1]])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_ensemble_graph_outputs_the_members_embeddings_side_by_side_as_a_unit_vector():
    import onnxruntime as ort

    from training.ensemble import fuse_graphs

    rng = np.random.default_rng(0)
    wa, wb = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    x = rng.random((5, 1, 2, 3)).astype(np.float32)

    def run(graph: bytes) -> np.ndarray:
        return ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"canvas": x})[0]

    a, b = run(_tiny_member(wa)), run(_tiny_member(wb))
    fused = run(fuse_graphs([_tiny_member(wa), _tiny_member(wb)], 7))
    assert fused.shape == (5, 7)
    np.testing.assert_allclose(fused, np.concatenate([a, b], axis=1) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), np.ones(5), atol=1e-6)
    # cosine of two fused rows = mean of the members' cosines
    np.testing.assert_allclose(fused[0] @ fused[1], (a[0] @ a[1] + b[0] @ b[1]) / 2, atol=1e-6)


def test_float16_storage_keeps_the_graph_and_rounds_only_the_large_weights():
    """half_storage stores each float32 weight of at least min_elements values as float16 behind a Cast: the
    graph computes exactly what the float32 graph computes with those weights rounded to float16, the small
    tensors are untouched, and the stored weights take half the bytes."""
    import onnx
    import onnxruntime as ort

    from training.ensemble import fuse_graphs, half_storage

    rng = np.random.default_rng(0)
    wa, wb = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    x = rng.random((5, 1, 2, 3)).astype(np.float32)
    graph = fuse_graphs([_tiny_member(wa), _tiny_member(wb)], 7)
    half = half_storage(graph, min_elements=20)  # wa (24 values) halved, wb (18) kept

    def run(g: bytes) -> np.ndarray:
        return ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(None, {"canvas": x})[0]

    rounded = fuse_graphs([_tiny_member(wa.astype(np.float16).astype(np.float64)), _tiny_member(wb)], 7)
    np.testing.assert_allclose(run(half), run(rounded), atol=1e-6)
    assert np.abs(run(half) - run(graph)).max() > 1e-6  # the rounding is real, not skipped
    stored = {t.name: t.data_type for t in onnx.load_from_string(half).graph.initializer}
    assert stored == {"m0_w_fp16": onnx.TensorProto.FLOAT16, "m1_w": onnx.TensorProto.FLOAT,
                      "ensemble_scale": onnx.TensorProto.FLOAT}
    sizes = {t.name: len(t.raw_data) for t in onnx.load_from_string(half).graph.initializer}
    assert sizes["m0_w_fp16"] == 24 * 2


def test_ensemble_members_are_the_config_with_each_members_own_values(tmp_path: Path):
    from training.ship import member_configs

    members = member_configs(CONFIG, [])
    assert [name for name, _ in members] == ["arcface-700", "s7"]
    (_, a), (_, b) = members
    assert (a["train"]["steps"], b["train"]["steps"]) == (700, 220)
    assert (len(a["data"]["validation_writers"]), len(b["data"]["validation_writers"])) == (21, 11)
    assert set(b["data"]["validation_writers"]) < set(a["data"]["validation_writers"])  # unseen by both
    assert a["model"] == b["model"] and "ensemble" not in a
    # --set applies to every member, after its own values
    assert [c["train"]["steps"] for _, c in member_configs(CONFIG, ["train.steps=3"])] == [3, 3]
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.read_text().replace("warmup_steps = 31", "warmup = 31"))
    with pytest.raises(SystemExit, match=r"ensemble member s7: unknown key train\.warmup$"):
        member_configs(bad, [])
    single = tmp_path / "single.toml"
    single.write_text(CONFIG.read_text().split("[[ensemble.members]]")[0])
    assert [name for name, _ in member_configs(single, [])] == ["single"]


def test_distillation_is_off_by_default_and_refuses_a_teacher_with_other_preprocessing():
    from dataclasses import replace

    from sigvault.imaging import PreprocessSpec
    from training.train import load_teacher, preprocess_spec

    cfg = load_config(CONFIG, [])
    assert load_teacher(cfg, preprocess_spec(cfg), 1280) == (None, None, cfg["distill"])
    shipped = Path(__file__).resolve().parents[1] / "sigvault" / "weights"
    cfg = load_config(CONFIG, [f"distill.teacher={shipped}"])
    other = replace(preprocess_spec(cfg), canvas_height=192, canvas_width=384)
    assert isinstance(other, PreprocessSpec)
    with pytest.raises(SystemExit, match=r"canvas 128x256 against 192x384"):
        load_teacher(cfg, other, 1280)


def test_distillation_loss_terms_exact_values():
    torch = pytest.importorskip("torch")  # training extra only: runs where the network is trained
    from training.losses import distill_loss

    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    cos, rel = distill_loss(teacher.clone(), teacher)
    assert cos.item() == pytest.approx(0.0, abs=1e-7) and rel.item() == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    cos, rel = distill_loss(student, teacher)
    # cosines to the teacher rows: 1, 0, 1 -> 1 - mean = 1/3; pairwise cosines differ only for the pairs
    # (0, 1): 1 vs 0 and (1, 2): 0.6 vs 0.8, each twice off the diagonal: (2 * 1 + 2 * 0.04) / 6
    assert cos.item() == pytest.approx(1 / 3, abs=1e-6)
    assert rel.item() == pytest.approx(2.08 / 6, abs=1e-6)


def test_cohort_rows_take_two_genuine_and_two_forged_per_writer_seeded():
    from training.calibrate import cohort_rows

    writers = np.array(["b"] * 5 + ["a"] * 6 + ["c"] * 3)
    forged = np.array([False, True, False, True, False] + [False] * 3 + [True] * 3 + [False] * 3)
    rows = cohort_rows(writers, forged)
    assert rows.tolist() == sorted(rows.tolist())
    picked = {w: (int(np.sum(~forged[rows][writers[rows] == w])), int(np.sum(forged[rows][writers[rows] == w])))
              for w in "abc"}
    assert picked == {"a": (2, 2), "b": (2, 2), "c": (2, 0)}  # c has no forgeries: its genuine only
    assert rows.tolist() == [0, 1, 3, 4, 6, 7, 8, 10, 12, 13]  # seed 0, what export and calibrate use
    assert cohort_rows(writers, forged, seed=1).tolist() == [1, 2, 3, 4, 5, 6, 8, 9, 11, 13]


def _tiny_backbone(seed: int) -> bytes:
    """An ONNX graph named like a timm EfficientNet export: canvas (n, 1, 4, 6) -> stage 3 (3x3 conv, 3
    channels, ReLU, minus 0.5: signed) -> stage 4 (1x1 conv, 2 channels) -> average pool -> L2-normalised
    embedding (2)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    w3, w4 = rng.normal(size=(3, 1, 3, 3)), rng.normal(size=(2, 3, 1, 1))
    nodes = [
        helper.make_node("Conv", ["canvas", "w3"], ["s3a"], pads=[1, 1, 1, 1], name="/backbone/blocks/blocks.3/blocks.3.0/conv/Conv"),
        helper.make_node("Relu", ["s3a"], ["s3b"], name="/backbone/blocks/blocks.3/blocks.3.0/act/Relu"),
        helper.make_node("Sub", ["s3b", "half"], ["s3"], name="/backbone/blocks/blocks.3/blocks.3.1/Sub"),
        helper.make_node("Conv", ["s3", "w4"], ["s4"], name="/backbone/blocks/blocks.4/blocks.4.0/conv/Conv"),
        helper.make_node("GlobalAveragePool", ["s4"], ["gap"], name="/backbone/global_pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("LpNormalization", ["flat"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "member",
        [helper.make_tensor_value_info("canvas", onnx.TensorProto.FLOAT, ["n", 1, 4, 6])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", 2])],
        initializer=[numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((w3, "w3"), (w4, "w4"), (np.array(0.5), "half"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_midlevel_taps_each_members_stage_outputs_and_refuses_a_missing_stage():
    import onnx

    from training.ensemble import fuse_graphs
    from training.midlevel import stage_taps

    fused = onnx.load_from_string(fuse_graphs([_tiny_backbone(0), _tiny_backbone(1)], 4))
    assert stage_taps(fused.graph.node, [3, 4]) == [("m0_", 3, "m0_s3"), ("m0_", 4, "m0_s4"), ("m1_", 3, "m1_s3"), ("m1_", 4, "m1_s4")]
    assert stage_taps(onnx.load_from_string(_tiny_backbone(0)).graph.node, [3]) == [("", 3, "s3")]  # one network: no prefix
    with pytest.raises(SystemExit, match=r"no stage \[5\]; its stages are \[3, 4\]"):
        stage_taps(fused.graph.node, [3, 5])


def test_midlevel_graph_is_the_numpy_head_and_keeps_the_networks_cosine_inside():
    """The graph's new embedding equals training.midlevel.head in numpy; its first columns are the old
    embedding divided by sqrt(1 + stages x weight^2), and a cosine is (old cosine + weight^2 x mean of the
    blocks' cosines per stage) / (1 + stages x weight^2)."""
    import onnx
    import onnxruntime as ort

    from training.ensemble import fuse_graphs
    from training.midlevel import add_head, head, run_taps, signed_root_l2, stage_taps, tap_graph
    from training.whitening import fit_whitening

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4, 6)).astype(np.float32)
    graph = fuse_graphs([_tiny_backbone(0), _tiny_backbone(1)], 4)
    taps = stage_taps(onnx.load_from_string(graph).graph.node, [3, 4])
    old, pooled = run_taps(tap_graph(graph, taps), x, len(taps), batch=16)
    assert [p.shape for p in pooled] == [(40, 3), (40, 2), (40, 3), (40, 2)]
    whitenings = [fit_whitening(signed_root_l2(p.astype(np.float64)), p.shape[1]) for p in pooled]
    weight = 0.7
    scale = weight / np.sqrt(2)
    new = add_head(graph, taps, whitenings, scale, 4 + 10)
    got = ort.InferenceSession(new, providers=["CPUExecutionProvider"]).run(None, {"canvas": x[:, None]})[0]
    want = head(old, pooled, whitenings, scale)
    assert got.shape == (40, 14)
    np.testing.assert_allclose(got, want, atol=1e-5)
    norm = np.sqrt(1 + 2 * weight**2)
    np.testing.assert_allclose(got[:, :4] * norm, old, atol=1e-5)
    blocks = [want[:, 4:7], want[:, 7:9], want[:, 9:12], want[:, 12:14]]  # m0 s3, m0 s4, m1 s3, m1 s4
    units = [b * norm / scale for b in blocks]  # each a unit vector before the scale and the final L2
    np.testing.assert_allclose(np.linalg.norm(units[0], axis=1), np.ones(40), atol=1e-6)
    block_cos = sum(u[0] @ u[1] for u in units) / 2  # per stage, mean over the two members; summed over stages
    assert want[0] @ want[1] == pytest.approx((old[0] @ old[1] + weight**2 * block_cos) / norm**2, abs=1e-6)


def test_perturbed_copies_keep_the_layout_and_apply_each_capture_change(tmp_path: Path):
    """training.perturb: every kind rewrites every image of a dataset folder under OUT/<name>-<kind>/ with
    the same writer / genuine / forged layout, as PNG, with exact, repeatable changes."""
    from PIL import Image

    from training.perturb import KINDS, main

    src = tmp_path / "scans"
    a = np.full((40, 60), 240, dtype=np.uint8)
    a[18:22, 10:50] = 40  # a stroke: ink 40 on paper 240
    for writer in ("w1", "w2"):
        for sub in ("genuine", "forged"):
            (src / writer / sub).mkdir(parents=True)
            Image.fromarray(a).save(src / writer / sub / "s1.png")
            Image.fromarray(a).convert("RGB").save(src / writer / sub / "s2.jpg", quality=95)
    main([str(src), str(tmp_path / "out")])
    for kind in KINDS:
        files = sorted(p.relative_to(tmp_path / "out" / f"scans-{kind}").as_posix() for p in (tmp_path / "out" / f"scans-{kind}").rglob("*.png"))
        assert files == [f"{w}/{s}/{n}.png" for w in ("w1", "w2") for s in ("forged", "genuine") for n in ("s1", "s2")]
    out = {k: np.asarray(Image.open(tmp_path / "out" / f"scans-{k}" / "w1" / "genuine" / "s1.png")) for k in KINDS}
    assert out["dpi150"].shape == (20, 30) and out["dpi150"][10, 15] == 40 and out["dpi150"][0, 0] == 240
    # a quarter of the resolution: the 4-px stroke (rows 18-21) falls half into rows 4 and 5 (16-19, 20-23)
    assert out["dpi75"].shape == (10, 15) and out["dpi75"][4, 7] == 140 == out["dpi75"][5, 7] and out["dpi75"][0, 0] == 240
    assert out["faint"][20, 30] == 140 and out["faint"][0, 0] == 240  # contrast with the paper halved
    assert out["rotate"].shape[0] > 40 and out["rotate"].shape[1] > 60  # expanded, white corners
    assert out["rotate"][0, 0] == 255
    assert out["blur"][17, 30] < 240 and out["blur"][20, 30] > 40
    assert np.abs(out["jpeg40"].astype(int) - a).max() > 0
    assert 0 < np.abs(out["noise"].astype(int) - a).mean() < 20
    again = tmp_path / "again"
    main([str(src), str(again), "--kinds", "noise"])
    assert np.array_equal(np.asarray(Image.open(again / "scans-noise" / "w1" / "genuine" / "s1.png")), out["noise"])  # seeded
    with pytest.raises(SystemExit, match=r"--kinds: unknown \['sepia'\]"):
        main([str(src), str(again), "--kinds", "sepia"])


@pytest.mark.parametrize("degrees", [8.0, -5.0])
def test_rotation_augmentation_turns_strokes_by_the_drawn_angle(degrees: float):
    """training.augment's rotation is a rotation of the 2:1 canvas in pixels: a horizontal and a vertical
    stroke both turn by the drawn angle (with the aspect ratio inverted, 8 degrees turned a horizontal
    stroke by 2 and slanted a vertical one by 29)."""
    torch = pytest.importorskip("torch")  # training extra only
    import torch.nn.functional as F

    from training.augment import affine_theta

    x = torch.zeros(2, 1, 128, 256)
    x[0, 0, 64, 64:192] = 1.0  # horizontal stroke
    x[1, 0, 20:108, 128] = 1.0  # vertical stroke
    one, zero = torch.ones(2), torch.zeros(2)
    theta = affine_theta(torch.full((2,), np.radians(degrees)), zero, one, zero, zero, 2.0)
    y = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)[:, 0]
    ys, xs = torch.nonzero(y[0] > 0.3, as_tuple=True)
    horizontal = np.degrees(np.arctan(np.polyfit(xs.numpy(), ys.numpy(), 1)[0]))
    ys, xs = torch.nonzero(y[1] > 0.3, as_tuple=True)
    vertical = np.degrees(np.arctan(np.polyfit(ys.numpy(), xs.numpy(), 1)[0]))
    assert abs(horizontal) == pytest.approx(abs(degrees), abs=0.3)
    assert abs(vertical) == pytest.approx(abs(degrees), abs=0.3)
    assert np.sign(horizontal) == -np.sign(vertical)  # one turn, not a shear (which tilts only the vertical)


def test_calibration_with_views_fits_the_rule_on_scores_that_use_them():
    """fit_scoring with view angles: the prior comes from leave-one-out scores computed with each
    reference's views (left out with it), and the fitted config carries the angles into the card."""
    from dataclasses import replace

    from sigvault import scoring
    from training.calibrate import fit_scoring, parse_angles, parse_blurs

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8))
    writers = np.repeat([f"w{i}" for i in range(6)], 10)
    forged = np.tile([False] * 7 + [True] * 3, 6)
    noise = np.where(forged[:, None], 0.9, 0.4)
    emb = centres[np.repeat(np.arange(6), 10)] + noise * rng.normal(size=(60, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    views = emb[:, None, :] + 0.05 * rng.normal(size=(60, 2, 8))
    views /= np.linalg.norm(views, axis=2, keepdims=True)
    cohort = rng.normal(size=(20, 8))
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    cfg, _ = fit_scoring(emb, writers, forged, method="wd-svm", cohort=cohort, seeds=2, view_angles=(-4.0, 4.0), views=views)
    plain, _ = fit_scoring(emb, writers, forged, method="wd-svm", cohort=cohort, seeds=2)
    assert cfg.view_angles == (-4.0, 4.0) and plain.view_angles == ()
    # the prior is the mean of the leave-one-out scores with views, drawn as fit_scoring draws them
    pick_rng, means = np.random.default_rng(0), []
    base = scoring.ScoringConfig(method="wd-svm", view_angles=(-4.0, 4.0))
    for w in sorted(set(writers.tolist())):
        g = np.flatnonzero((writers == w) & ~forged)
        for _ in range(2):
            pick = pick_rng.choice(g, 5, replace=False)
            means.append(scoring.loo_scores(emb[pick], base, cohort, views=views[pick]).mean())
    assert cfg.prior_mean == round(float(np.mean(means)), 6)
    assert cfg.prior_mean != plain.prior_mean
    assert replace(cfg, view_angles=()) != plain  # the whole rule is refitted, not only labelled
    assert parse_angles("-4,4") == (-4.0, 4.0) and parse_angles("") == ()
    with pytest.raises(ValueError, match="without the views"):
        fit_scoring(emb, writers, forged, method="wd-svm", cohort=cohort, seeds=2, view_angles=(-4.0,))
    # a turned and a blurred view: the same embeddings, another card
    mixed, _ = fit_scoring(emb, writers, forged, method="wd-svm", cohort=cohort, seeds=2, view_angles=(-4.0,),
                           view_blurs=(1.0,), views=views)
    assert (mixed.view_angles, mixed.view_blurs) == ((-4.0,), (1.0,))
    assert replace(mixed, view_angles=(-4.0, 4.0), view_blurs=()) == cfg  # the fit sees only the vectors
    assert parse_blurs("1") == (1.0,) and parse_blurs("1,1.5") == (1.0, 1.5) and parse_blurs("") == ()
    for bad in ("0", "-1", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="give Gaussian radii in pixels above 0"):
            parse_blurs(bad)
    from training.calibrate import main as calibrate_main

    for cap in ("-1", "nan", "inf"):  # refused before the model or any scan is read
        with pytest.raises(SystemExit) as stop:
            calibrate_main(["--weights", "/nonexistent", "--view-blurs=1", "--view-blur-cap", cap])
        assert stop.value.code == 2


@pytest.mark.parametrize("stages", [[3, 4], []])
def test_ship_fits_the_scoring_with_the_configs_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stages):
    """training.ship passes [scoring] views and view blurs to training.midlevel when it adds mid-level features, else to
    training.calibrate on the fused model; training, export and fusion are stubbed (members trained)."""
    from training import calibrate, ensemble, export, midlevel, ship

    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.read_text().replace("stages = [3, 4]", f"stages = {stages}"))
    runs, splits = tmp_path / "runs", tmp_path / "splits"
    for sub in ("calibration", "train"):
        (splits / sub).mkdir(parents=True)
    for name in ("arcface-700", "s7"):
        (runs / name).mkdir(parents=True)
        (runs / name / "trained.json").write_text("{}")
    calls: list[tuple[str, list[str]]] = []

    def fused(argv: list[str]) -> None:
        calls.append(("ensemble", argv))
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "model_card.json").write_text(json.dumps({"scoring": {"method": "wd-svm"}}))

    monkeypatch.setattr(export, "main", lambda argv: calls.append(("export", argv)))
    monkeypatch.setattr(ensemble, "main", fused)
    monkeypatch.setattr(midlevel, "main", lambda argv: calls.append(("midlevel", argv)))
    monkeypatch.setattr(calibrate, "main", lambda argv: calls.append(("calibrate", argv)))
    ship.main(["--config", str(cfg), "--runs", str(runs), "--out", str(tmp_path / "model"), "--splits-dir", str(splits)])
    _, argv = calls[-1]
    assert [c for c, _ in calls] == ["export", "export", "ensemble", "midlevel" if stages else "calibrate"]
    assert argv[-3:] == ["--views=-4,4", "--view-blurs=1", "--view-blur-cap=1.5"]
    if not stages:
        assert argv[:6] == ["--weights", str(runs / "fused"), "--splits-dir", str(splits), "--method", "wd-svm"]
