"""training.cv: writer folds, each fold's writer groups, and the paired comparison of two recipes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import cv


def _by_dataset() -> dict[str, list[str]]:
    return {"a": [f"a/{i:03d}" for i in range(30)], "b": [f"b/{i:03d}" for i in range(64)], "c": [f"c/{i:03d}" for i in range(12)]}


def test_folds_split_every_writer_once_and_evenly():
    folds = cv.make_folds(_by_dataset(), 5, 0)
    flat = [w for f in folds for w in f]
    assert sorted(flat) == sorted(w for ws in _by_dataset().values() for w in ws)
    assert [len(f) for f in folds] == [22, 21, 21, 21, 21]
    assert all(sum(w.startswith("c/") for w in f) in (2, 3) for f in folds)  # each dataset dealt round the folds
    assert cv.make_folds(_by_dataset(), 5, 0) == folds and cv.make_folds(_by_dataset(), 5, 1) != folds


@pytest.mark.parametrize("f", range(5))
def test_a_folds_writers_never_train_or_calibrate_its_model(f):
    folds = cv.make_folds(_by_dataset(), 5, 0)
    evaluation, calibration, training = cv.fold_plan(folds, f, 15)
    assert evaluation == folds[f]
    assert len(calibration) == 15 and set(calibration) <= set(folds[(f + 1) % 5])
    assert not (set(evaluation) & set(calibration)) and not (set(training) & (set(evaluation) | set(calibration)))
    assert len(evaluation) + len(calibration) + len(training) == 106


def _write_recipe(runs, name: str, shift: float, decisions: dict[str, str]) -> None:
    """Two folds of three writers; each writer has 4 genuine, 4 skilled and 4 random items."""
    rng = np.random.default_rng(1)
    for f in range(2):
        rows = []
        for w in range(3):
            for kind, centre in (("genuine", 0.8), ("skilled", 0.5), ("random", 0.1)):
                for s in centre + 0.1 * rng.standard_normal(4):
                    score = s + (shift if kind == "genuine" else 0.0)
                    rows.append([0, f"fold{f}-w{w}", kind, float(score), 0.6, decisions[kind]])
        d = runs / name / f"fold{f}"
        d.mkdir(parents=True)
        (d / "trials-refs5.json").write_text(json.dumps(rows))
        (d / "measured.json").write_text("{}")


def test_the_comparison_pairs_writers_and_finds_a_real_difference(tmp_path):
    _write_recipe(tmp_path, "a", 0.0, {"genuine": "accept", "skilled": "reject", "random": "reject"})
    _write_recipe(tmp_path, "b", 0.5, {"genuine": "accept", "skilled": "accept", "random": "reject"})
    table = cv.compare(tmp_path, "a", "b", resamples=200)
    assert table.startswith("a against b (clean): 2 fold(s) [0, 1], 6 writers, 72 scored items of a")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # every skilled forgery accepted by b, none by a: +100 points, whatever writers are drawn
    assert rows["far_skilled"] == "| far_skilled | 0.00 | 100.00 | +100.00 | [+100.00, +100.00] |"
    assert rows["frr"] == "| frr | 0.00 | 0.00 | +0.00 | [+0.00, +0.00] |"
    # b's genuine scores are far above every forgery's: its EER is 0, a's is not, and the interval excludes 0
    lo = float(rows["eer_skilled"].split("[")[1].split(",")[0])
    assert "| 0.00 | -" in rows["eer_skilled"] and lo < 0


def test_the_comparison_refuses_recipes_without_a_common_fold(tmp_path):
    _write_recipe(tmp_path, "a", 0.0, {"genuine": "accept", "skilled": "reject", "random": "reject"})
    with pytest.raises(SystemExit, match="no fold measured by both a and b"):
        cv.compare(tmp_path, "a", "b")
