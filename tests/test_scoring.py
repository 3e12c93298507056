"""Scoring: exact values on small hand-made vectors."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from sigvault import scoring
from sigvault.imaging import InkCapture
from sigvault.scoring import ScoringConfig


def unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float64)
    return a / np.linalg.norm(a)


REFS = np.stack([unit(1, 0, 0), unit(1, 1, 0), unit(1, 0, 1)])
CFG = ScoringConfig(prior_mean=0.8, prior_std=0.1, prior_strength=2.0, k=1.5, refer_band=0.05)


def test_similarities_and_mean_fusion():
    sims = scoring.similarities(unit(1, 0, 0), REFS)
    assert sims == pytest.approx([1.0, 1 / math.sqrt(2), 1 / math.sqrt(2)])
    assert scoring.fuse(sims, CFG) == pytest.approx((1 + 2 / math.sqrt(2)) / 3)


def test_top_k_fusion():
    cfg = ScoringConfig(fusion_top_k=2)
    assert scoring.fuse(np.array([0.1, 0.9, 0.5]), cfg) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        scoring.fuse(np.array([]), cfg)


def test_loo_scores():
    loo = scoring.loo_scores(REFS, CFG)
    # ref0 vs (ref1, ref2): both 1/sqrt2; ref1 vs (ref0: 1/sqrt2, ref2: 1/2)
    assert loo == pytest.approx([1 / math.sqrt(2), (1 / math.sqrt(2) + 0.5) / 2, (1 / math.sqrt(2) + 0.5) / 2])


def test_threshold_shrinks_toward_the_prior():
    t = scoring.person_threshold(REFS, CFG)
    loo = scoring.loo_scores(REFS, CFG)
    mean = (3 * loo.mean() + 2 * 0.8) / 5
    var = (2 * loo.var(ddof=1) + 2 * 0.01) / 4
    assert t.value == pytest.approx(mean - 1.5 * math.sqrt(var))
    assert t.n_references == 3 and t.loo_mean == pytest.approx(loo.mean())
    assert "leave-one-out over 3 references" in t.method


def test_threshold_with_one_or_two_references():
    one = scoring.person_threshold(REFS[:1], CFG)
    assert one.value == pytest.approx(0.8 - 1.5 * 0.1) and one.method == "prior (1 reference)"
    two = scoring.person_threshold(REFS[:2], CFG)
    mean = (2 * (1 / math.sqrt(2)) + 2 * 0.8) / 4
    assert two.value == pytest.approx(mean - 1.5 * 0.1)  # spread from the prior only
    assert two.loo_std is None


@pytest.mark.parametrize("score,expected", [(0.80, "accept"), (0.75, "accept"), (0.70, "refer"), (0.66, "refer"), (0.649, "reject")])
def test_decide_with_refer_band(score, expected):
    assert scoring.decide(score, 0.70, CFG) == expected


def test_probability_is_calibrated_logistic():
    cfg = ScoringConfig(calib_slope=10.0, calib_offset=0.5)
    assert scoring.probability(0.7, 0.7, cfg) == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert scoring.probability(-100.0, 0.7, cfg) == pytest.approx(0.0, abs=1e-12)
    assert scoring.probability(100.0, 0.7, cfg) == pytest.approx(1.0)


def test_compare_probability_is_one_half_at_its_threshold():
    cfg = ScoringConfig(compare_threshold=0.6, compare_slope=12.0)
    assert scoring.compare_probability(0.6, cfg) == pytest.approx(0.5)
    assert scoring.compare_probability(0.7, cfg) == pytest.approx(1 / (1 + math.exp(-1.2)))


def test_config_round_trip_ignores_unknown_keys():
    d = CFG.to_dict() | {"future_key": 1}
    assert ScoringConfig.from_dict(d) == CFG


# ------------------------------------------------------------------------------------------ wd-svm

WD = ScoringConfig(method="wd-svm", svm_c=1.0, prior_mean=0.5, prior_std=0.4, prior_strength=2.0, k=1.0)
COHORT = np.stack([unit(0, 1, 0), unit(0, 0, 1), unit(-1, 1, 0), unit(0, 1, 1), unit(-1, 0, 1), unit(-1, -1, 0)])


def test_wd_svm_scorer_is_sklearns_linear_svm_and_separates_refs_from_cohort():
    from sklearn.svm import SVC

    s = scoring.person_scorer(REFS, WD, COHORT)
    svm = SVC(kernel="linear", C=1.0, class_weight="balanced").fit(
        np.vstack([REFS, COHORT]), np.r_[np.ones(3), np.zeros(6)]
    )
    q = np.stack([unit(1, 0.2, 0.1), unit(0, 1, 0.5)])
    assert s.method == "wd-svm"
    np.testing.assert_allclose(s.scores(q), svm.decision_function(q), rtol=0, atol=1e-12)
    assert s.score(q[0]) > 0 > s.score(q[1])
    assert (s.scores(REFS) > 0).all() and (s.scores(COHORT) < 0).all()


def test_wd_svm_scorer_round_trips_through_json_exactly():
    s = scoring.person_scorer(REFS, WD, COHORT)
    back = scoring.PersonScorer.from_json(s.to_json(), REFS, WD)
    q = np.stack([unit(1, 0.2, 0.1), unit(0.3, 1, 0.5)])
    assert back.bias == s.bias
    np.testing.assert_array_equal(back.scores(q), s.scores(q))
    assert scoring.PersonScorer.from_json({"method": "cosine"}, REFS, CFG).score(REFS[0]) == scoring.fuse(
        scoring.similarities(REFS[0], REFS), CFG
    )


def test_wd_svm_leave_one_out_refits_without_the_held_out_reference():
    loo = scoring.loo_scores(REFS, WD, COHORT)
    expected = [scoring.person_scorer(np.delete(REFS, i, axis=0), WD, COHORT).score(REFS[i]) for i in range(3)]
    np.testing.assert_array_equal(loo, expected)
    t = scoring.person_threshold(REFS, WD, COHORT)
    n, n0 = 3, 2.0
    mean = (n * loo.mean() + n0 * 0.5) / (n + n0)
    var = ((n - 1) * loo.var(ddof=1) + n0 * 0.16) / (n - 1 + n0)
    assert t.value == pytest.approx(mean - 1.0 * math.sqrt(var), abs=1e-12)
    assert t.method == "leave-one-out over 3 references (wd-svm scores), shrunk toward the global prior (weight 2)"


def test_wd_svm_without_a_cohort_is_refused():
    with pytest.raises(ValueError, match="needs a cohort"):
        scoring.person_scorer(REFS, WD, None)
    with pytest.raises(ValueError, match="unknown scoring method"):
        scoring.PersonScorer("knn", REFS, WD)


def test_svm_fit_memo_changes_no_value_and_saves_the_repeated_fits():
    """An enrolment of 5 new references: the outlier check (each reference against the others, with their
    threshold) and the new threshold ask for 31 fits, 16 of them distinct."""
    rng = np.random.default_rng(3)
    refs = np.vstack([unit(1, 0.1 * rng.standard_normal(), 0.1 * rng.standard_normal()) for _ in range(5)])
    fits = scoring.SvmFits(COHORT, WD)
    with_memo, without = [], []
    for i in range(5):
        others = np.delete(refs, i, axis=0)
        with_memo.append((scoring.person_threshold(others, WD, COHORT, fits).value,
                          scoring.person_scorer(others, WD, COHORT, fits).score(refs[i])))
        without.append((scoring.person_threshold(others, WD, COHORT).value,
                        scoring.person_scorer(others, WD, COHORT).score(refs[i])))
    with_memo.append((scoring.person_threshold(refs, WD, COHORT, fits).value,
                      scoring.person_scorer(refs, WD, COHORT, fits).score(refs[0])))
    without.append((scoring.person_threshold(refs, WD, COHORT).value,
                    scoring.person_scorer(refs, WD, COHORT).score(refs[0])))
    assert with_memo == without
    assert fits.misses == 16
    with pytest.raises(ValueError, match="another cohort"):
        scoring.person_scorer(refs, WD, COHORT.copy(), fits)


# ---------------------------------------------------------------------------------- reference views

WDV = replace(WD, view_angles=(-4.0, 4.0))
VIEWS = np.stack([np.stack([unit(1, 0.2, 0.05 * i), unit(1, -0.2, 0.05 * i)]) for i in range(3)])  # (3, 2, 3)


def test_views_are_extra_positives_of_the_svm():
    from sklearn.svm import SVC

    s = scoring.person_scorer(REFS, WDV, COHORT, views=VIEWS)
    positives = np.vstack([REFS, VIEWS.reshape(-1, 3)])
    svm = SVC(kernel="linear", C=1.0, class_weight="balanced").fit(
        np.vstack([positives, COHORT]), np.r_[np.ones(9), np.zeros(6)]
    )
    q = np.stack([unit(1, 0.2, 0.1), unit(0, 1, 0.5)])
    np.testing.assert_allclose(s.scores(q), svm.decision_function(q), rtol=0, atol=1e-12)
    assert s.to_json()["views"] == [-4.0, 4.0]
    assert "views" not in scoring.person_scorer(REFS, WD, COHORT).to_json()


def test_leave_one_out_leaves_a_references_views_out_with_it():
    loo = scoring.loo_scores(REFS, WDV, COHORT, views=VIEWS)
    expected = []
    for i in range(3):
        others = np.delete(REFS, i, axis=0)
        positives = np.vstack([others, np.delete(VIEWS, i, axis=0).reshape(-1, 3)])
        weights, bias = scoring.fit_linear(positives, COHORT, WDV)
        expected.append(float(REFS[i] @ weights + bias))
    np.testing.assert_allclose(loo, expected, rtol=0, atol=1e-12)
    t = scoring.person_threshold(REFS, WDV, COHORT, views=VIEWS)
    assert t.method == (
        "leave-one-out over 3 references (wd-svm scores), each reference also turned by -4, 4 degrees, "
        "shrunk toward the global prior (weight 2)"
    )


def test_views_are_required_by_a_scoring_with_view_angles_and_ignored_by_cosine():
    with pytest.raises(ValueError, match="needs 2 views of each of the 3 references, got None"):
        scoring.person_scorer(REFS, WDV, COHORT)
    with pytest.raises(ValueError, match=r"got \(2, 2, 3\)"):
        scoring.person_threshold(REFS, WDV, COHORT, views=VIEWS[:2])
    cosine = replace(CFG, view_angles=(-4.0, 4.0))
    assert cosine.views == ()
    assert scoring.person_threshold(REFS, cosine).value == scoring.person_threshold(REFS, CFG).value


def test_view_angles_round_trip_through_the_card():
    d = WDV.to_dict()
    assert d["view_angles"] == [-4.0, 4.0]
    assert ScoringConfig.from_dict(json.loads(json.dumps(d))) == WDV
    assert ScoringConfig.from_dict({"method": "wd-svm"}).view_angles == ()


def test_blurred_views_follow_the_turned_ones_through_fit_card_and_stored_scorer():
    from sigvault.imaging import View

    cfg = replace(WDV, view_blurs=(1.0,))
    assert cfg.views == (View(turn=-4.0), View(turn=4.0), View(blur=1.0))
    assert replace(CFG, view_blurs=(1.0,)).views == ()  # cosine has no fit to give extra positives to
    d = json.loads(json.dumps(cfg.to_dict()))
    assert (d["view_angles"], d["view_blurs"]) == ([-4.0, 4.0], [1.0])
    assert ScoringConfig.from_dict(d) == cfg
    older = {k: v for k, v in WDV.to_dict().items() if k != "view_blurs"}  # a card written before blurred views
    assert ScoringConfig.from_dict(older) == WDV
    third = np.stack([unit(1, 0.1, 0.1 * i) for i in range(3)])[:, np.newaxis]
    views = np.concatenate([VIEWS, third], axis=1)  # (3, 3, 3)
    with pytest.raises(ValueError, match="needs 3 views of each of the 3 references"):
        scoring.person_scorer(REFS, cfg, COHORT, views=VIEWS)
    s = scoring.person_scorer(REFS, cfg, COHORT, views=views)
    weights, bias = scoring.fit_linear(np.vstack([REFS, views.reshape(-1, 3)]), COHORT, cfg)
    np.testing.assert_array_equal(s.weights, weights)
    assert s.bias == bias
    assert (s.to_json()["views"], s.to_json()["view_blurs"]) == ([-4.0, 4.0], [1.0])
    assert "view_blurs" not in scoring.person_scorer(REFS, WDV, COHORT, views=VIEWS).to_json()
    assert scoring.person_threshold(REFS, cfg, COHORT, views=views).method == (
        "leave-one-out over 3 references (wd-svm scores), each reference also turned by -4, 4 degrees and "
        "blurred (1 px), shrunk toward the global prior (weight 2)"
    )
    assert scoring.describe_views((View(blur=1.0), View(blur=1.5))) == "blurred (1, 1.5 px)"
    capped = replace(cfg, view_blur_cap=1.5)
    assert capped.views[-1] == View(blur=1.0, blur_cap=1.5)
    assert ScoringConfig.from_dict(json.loads(json.dumps(capped.to_dict()))) == capped
    stored = scoring.person_scorer(REFS, capped, COHORT, views=views).to_json()
    assert (stored["view_blurs"], stored["view_blur_cap"]) == ([1.0], 1.5)
    assert scoring.describe_views(capped.views) == "turned by -4, 4 degrees and blurred (1 px, at most 1.5 canvas px)"


def test_capture_ratio_counts_reduced_ink_as_full_detail() -> None:
    cfg = scoring.ScoringConfig(capture_stroke_min=0.0)  # the ink scale alone
    assert scoring.capture_ratio(InkCapture(2.6, 1.0), InkCapture(1.3, 1.0), cfg) == 2.0
    # both reduced into the canvas: no detail lost either side
    assert scoring.capture_ratio(InkCapture(0.8, 1.0), InkCapture(0.4, 1.0), cfg) == 1.0
    assert scoring.capture_ratio(InkCapture(1.0, 1.0), InkCapture(2.5, 1.0), cfg) == 0.4  # references coarser
    assert scoring.capture_ratio(InkCapture(1.7, 1.0), InkCapture(0.4, 1.0), cfg) == 1.7


def test_capture_ratio_counts_only_when_the_strokes_confirm_another_capture() -> None:
    cfg = scoring.ScoringConfig()
    assert cfg.capture_stroke_min == 1.1
    ref = InkCapture(1.0, 4.0)
    assert scoring.capture_ratio(InkCapture(2.0, 2.0), ref, cfg) == 2.0  # half the resolution: strokes half as wide
    assert scoring.capture_ratio(InkCapture(2.0, 4.0), ref, cfg) == 1.0  # a smaller hand, the same pen and scanner
    assert scoring.capture_ratio(InkCapture(2.0, 4.0 / 1.1), ref, cfg) == 1.0  # not thinner by more than 1.1
    assert scoring.capture_ratio(InkCapture(2.0, 3.6), ref, cfg) == 2.0  # 4 / 3.6 = 1.11
    assert scoring.capture_ratio(InkCapture(2.0, 8.0), ref, cfg) == 1.0  # larger scale, thicker strokes: no capture
    # a finer questioned scan: smaller scale, thicker strokes
    assert scoring.capture_ratio(InkCapture(1.0, 8.0), InkCapture(2.5, 4.0), cfg) == 0.4
    assert scoring.capture_ratio(InkCapture(1.0, 4.0), InkCapture(2.5, 4.0), cfg) == 1.0  # only written larger


def test_capture_guard_refers_only_rejections_of_mismatched_captures_near_the_threshold() -> None:
    cfg = scoring.ScoringConfig(refer_band=0.1, capture_ratio_max=1.5, capture_reject_bands=6.0)
    guard = scoring.capture_guard
    assert guard("reject", 0.3, 0.5, 2.0, cfg) == "refer"  # 2 bands below, coarser scan
    assert guard("reject", 0.3, 0.5, 0.5, cfg) == "refer"  # finer scan than the references
    assert guard("reject", -0.2, 0.5, 2.0, cfg) == "reject"  # 7 bands below: another hand whatever the scan
    assert guard("reject", -0.1, 0.5, 2.0, cfg) == "refer"  # exactly 6 bands below
    assert guard("reject", 0.3, 0.5, 1.5, cfg) == "reject"  # not beyond the limit
    assert guard("reject", 0.3, 0.5, 1 / 1.5, cfg) == "reject"
    assert guard("accept", 0.9, 0.5, 3.0, cfg) == "accept"  # acceptances never change
    assert guard("refer", 0.5, 0.5, 3.0, cfg) == "refer"
    off = scoring.ScoringConfig(refer_band=0.1, capture_ratio_max=0.0)
    assert not scoring.capture_mismatch(10.0, off) and guard("reject", 0.3, 0.5, 10.0, off) == "reject"
    assert scoring.ScoringConfig.from_dict({"method": "cosine"}).capture_ratio_max == 1.5  # older cards: on
