"""training/compare.py without torch: the variants' overrides, the shared budget and the export guard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from training.compare import PROTECTED, VARIANTS, budget_overrides, export_command, markdown, overrides_for
from training.train import load_config

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "default.toml"


def test_budget_is_shared_and_warmup_scaled():
    assert budget_overrides(220, 50, 700, 100) == [
        "train.steps=220", "train.eval_every=50", "train.checkpoint_every=50", "train.warmup_steps=31"]
    assert budget_overrides(3, 1, 700, 100)[-1] == "train.warmup_steps=1"
    assert "torch" not in sys.modules


def test_variants_differ_only_where_intended():
    budget = budget_overrides(220, 50, 700, 100)
    cfgs = {v: load_config(CONFIG, overrides_for(v, budget)) for v in VARIANTS}
    base = cfgs["arcface"]
    assert base["train"]["loss"] == "arcface" and base["train"]["aux_triplet"] == 0.5
    assert base["model"]["imagenet_init"] is True and base["train"]["steps"] == 220
    assert base["data"]["synthetic_writers"] == 0
    expected = {
        "arcface": {},
        "triplet": {("train", "loss"): "triplet", ("train", "aux_triplet"): 0.0},
        "contrastive": {("train", "loss"): "contrastive", ("train", "aux_triplet"): 0.0, ("train", "margin"): 0.5},
        "arcface-scratch": {("model", "imagenet_init"): False},
        "arcface-synth": {("data", "synthetic_writers"): 60},
        "mobilenetv3-small-scratch": {("model", "arch"): "mobilenetv3_small_100", ("model", "imagenet_init"): False},
        "mobilenetv3-large-scratch": {("model", "arch"): "mobilenetv3_large_100", ("model", "imagenet_init"): False},
        "resnet18-scratch": {("model", "arch"): "resnet18", ("model", "imagenet_init"): False},
    }
    for v, cfg in cfgs.items():
        diff = {(s, k): cfg[s][k] for s in cfg for k in cfg[s] if cfg[s][k] != base[s][k]}
        assert diff == expected[v], v


def test_unknown_variant_and_shipped_weights_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown variant"):
        overrides_for("nope", [])
    with pytest.raises(SystemExit, match="shipped weights"):
        export_command(tmp_path, PROTECTED, "arcface")
    assert export_command(tmp_path, tmp_path / "export", "arcface")[-4:] == ["--out", str(tmp_path / "export"), "--name", "compare-arcface"]


def test_table_has_one_row_per_variant():
    ev = {"eer_skilled": 0.283, "eer_skilled_std": 0.006, "frr": 0.2}
    row = {"variant": "arcface", "loss": "l", "init": "imagenet", "steps": 220, "selected_step": 200, "minutes": 18.04,
           "evaluation": ev}
    lines = markdown([row]).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| arcface | l | imagenet | 220 (200) | 18.0 | 28.3 ± 0.6 | n/a | 20.0 ± 0.0")


def test_scoring_compare_on_separable_writers():
    """training/scoring_compare.compare on made-up embeddings: every method separates writers whose clusters
    are far apart, and forgeries that sit away from the writer's cluster (EER 0 everywhere)."""
    import numpy as np

    from training.scoring_compare import compare

    rng = np.random.default_rng(0)
    dim, per = 16, 10
    centres = np.eye(dim)[:6]
    emb, writers, forged = [], [], []
    for w in range(4):
        for _ in range(per):
            emb.append(centres[w] + 0.05 * rng.standard_normal(dim))
            writers.append(f"w{w}")
            forged.append(False)
        for _ in range(3):  # a forgery lands near another direction: easy
            emb.append(centres[w] + centres[4] + 0.05 * rng.standard_normal(dim))
            writers.append(f"w{w}")
            forged.append(True)
    emb = np.array(emb)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cohort = centres[5] + 0.3 * rng.standard_normal((30, dim))
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    out = compare(emb, np.array(writers), np.array(forged), cohort, n_refs=5, splits=2, cohorts={"five": cohort[:5]})
    assert set(out) == {"cosine", "z-norm", "s-norm", "wd-svm", "wd-svm rbf", "wd-svm, cohort: five"}
    for m, r in out.items():
        assert r == {"skilled": [0.0, 0.0], "random": [0.0, 0.0]}, m
