"""The shipped model: loads without torch, matches the torch network it was exported from, has a card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sigvault.embedder import load_embedder, model_id_for, shipped_model_dir
from sigvault.errors import ModelError

WEIGHTS = shipped_model_dir()
pytestmark = pytest.mark.skipif(not (WEIGHTS / "model.onnx").exists(), reason="no shipped model in sigvault/weights")


@pytest.fixture(scope="module")
def model():
    return load_embedder()


def test_onnx_matches_the_torch_network_it_was_exported_from(model):
    """parity.npz holds inputs and the torch networks' embeddings of them, saved at export time. The
    embedding also holds mid-level features (training.midlevel): its first columns are the
    networks' embedding divided by a constant (``network_scale``), and the whole row is what
    ``training.midlevel.head`` computes in numpy from the stage outputs (``embeddings``)."""
    z = np.load(WEIGHTS / "parity.npz")
    got = model.embed(z["inputs"].astype(np.float32))
    d = z["torch_embeddings"].shape[1]
    assert (d, model.dim, float(z["network_scale"])) == (512, 896, pytest.approx(np.sqrt(1 + 2 * 0.7**2)))
    assert np.abs(got[:, :d] * z["network_scale"] - z["torch_embeddings"]).max() < 1e-4
    assert np.abs(got - z["embeddings"]).max() < 1e-5


def test_embeddings_are_unit_vectors_and_deterministic(model):
    z = np.load(WEIGHTS / "parity.npz")
    x = z["inputs"].astype(np.float32)
    a, b = model.embed(x), model.embed(x[::-1])[::-1]
    assert a.shape == (len(x), model.dim) and a.dtype == np.float32
    assert np.linalg.norm(a, axis=1) == pytest.approx(np.ones(len(x)), abs=1e-5)
    assert np.abs(a - b).max() < 1e-5  # batch order does not matter


def test_inner_batches_do_not_change_the_embeddings(model):
    """embed() runs the graph in batches of ``batch_size`` (8: the memory of one run grows with it, the speed
    does not); 19 canvases make two full batches and a short one."""
    z = np.load(WEIGHTS / "parity.npz")
    x = np.concatenate([z["inputs"].astype(np.float32)] * 3)[:19]
    assert model.batch_size == 8
    small = model.embed(x)
    model.batch_size = 64
    try:
        whole = model.embed(x)
    finally:
        model.batch_size = 8
    assert np.abs(small - whole).max() < 1e-5


def test_card_describes_the_model(model):
    card = json.loads((WEIGHTS / "model_card.json").read_text())
    for key in ("architecture", "preprocess", "scoring", "training", "calibration", "export"):
        assert key in card
    assert model.spec.to_dict() == card["preprocess"]
    assert model.model_id == model_id_for((WEIGHTS / "model.onnx").read_bytes(), card)
    assert (WEIGHTS / "model.onnx").stat().st_size < 30 * 2**20


def test_shipped_probability_agrees_with_the_decisions(model):
    """The calibration is fitted on genuine vs skilled forgeries (the population the threshold rule is tuned
    on): P(genuine) is 0.55 at the threshold, so a rejected signature (below the refer band) shows at most
    0.34 and an accepted one at least 0.75. A fit that also counted random forgeries gave 0.70 at the
    threshold and rejections shown as 65 % genuine (earlier models' values: docs/model.md, "Scoring")."""
    from sigvault import scoring

    cfg = model.scoring
    t = 0.3
    edge_low = scoring.probability(t - cfg.refer_band, t, cfg)
    assert round(scoring.probability(t, t, cfg), 2) == 0.55
    assert round(edge_low, 2) == 0.34 and round(scoring.probability(t + cfg.refer_band, t, cfg), 2) == 0.75
    assert scoring.decide(t - cfg.refer_band - 1e-9, t, cfg) == "reject"
    assert scoring.probability(t - cfg.refer_band - 0.03, t, cfg) < 0.5


def test_shipped_model_on_synthetic_writers(model):
    """30 synthetic writers (sigvault.synth, never used in training): 4 references each, through the
    product's preprocessing, embedding and wd-svm scoring with its reference views. The genuine signature
    outscores the writer's own synthetic imitation and another writer's signature for all 30."""
    from sigvault import imaging, scoring
    from sigvault.synth import SyntheticWriter

    cohort = np.load(WEIGHTS / "cohort.npy").astype(np.float64)
    above_imitation = above_other = 0
    for k in range(30):
        w = SyntheticWriter(k)
        ims = [w.genuine(i) for i in range(4)] + [w.genuine(9), w.forgery(0), SyntheticWriter(1000 + k).genuine(0)]
        greys = [np.asarray(im.convert("L")) for im in ims]
        e = model.embed(np.stack([imaging.preprocess(g) for g in greys])).astype(np.float64)
        views = np.stack([model.embed(imaging.preprocess_views(g, model.spec, model.scoring.views)[0][1:]) for g in greys[:4]])
        s = scoring.person_scorer(e[:4], model.scoring, cohort, views=views.astype(np.float64)).scores(e[4:])
        above_imitation += int(s[0] > s[1])
        above_other += int(s[0] > s[2])
    assert (above_imitation, above_other) == (30, 30)


def test_a_user_model_gets_its_own_id(tmp_path: Path, model):
    user = tmp_path / "bank-model"
    shutil.copytree(WEIGHTS, user)
    card = json.loads((user / "model_card.json").read_text())
    card["name"] = "bank"
    (user / "model_card.json").write_text(json.dumps(card))
    other = load_embedder(user)
    assert other.model_id.startswith("bank-") and other.model_id != model.model_id


def test_missing_or_broken_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelError, match="model file not found"):
        load_embedder(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    shutil.copy(WEIGHTS / "model_card.json", tmp_path / "model_card.json")
    shutil.copy(WEIGHTS / "cohort.npy", tmp_path / "cohort.npy")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_embedder(tmp_path)


def test_wd_svm_model_without_its_cohort_is_a_clear_error(tmp_path: Path):
    shutil.copy(WEIGHTS / "model.onnx", tmp_path / "model.onnx")
    shutil.copy(WEIGHTS / "model_card.json", tmp_path / "model_card.json")
    with pytest.raises(ModelError, match=r"cohort.npy: wd-svm scoring needs this cohort file .*re-export the model"):
        load_embedder(tmp_path)
    np.save(tmp_path / "cohort.npy", np.zeros((3, 7), dtype=np.float32))
    with pytest.raises(ModelError, match=r"cohort must be a finite \(896-column\) matrix, got \(3, 7\)"):
        load_embedder(tmp_path)
    shutil.copy(WEIGHTS / "cohort.npy", tmp_path / "cohort.npy")
    model = load_embedder(tmp_path)
    assert model.cohort is not None and model.cohort.shape == (272, 896) and model.cohort_id is not None


def test_sessions_do_not_spin(model):
    """onnxruntime's pool threads must not spin-wait after a run: on a 2-core machine that doubled the CPU of
    an embedding and took the other core from the audit workers and other processes."""
    options = model._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
