"""Verification metrics on tiny hand-made score sets whose values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sigvault.metrics import auc, det_points, eer, frr_at_far


def test_perfect_separation() -> None:
    g, i = [0.9, 0.8], [0.1, 0.2]
    rate, thr = eer(g, i)
    assert rate == 0.0
    assert thr == 0.8  # the lowest genuine score: nothing rejected, nothing accepted wrongly
    assert auc(g, i) == 1.0
    assert frr_at_far(g, i, 0.01) == 0.0


def test_complete_reversal() -> None:
    g, i = [0.1, 0.2], [0.8, 0.9]
    assert eer(g, i)[0] == 1.0
    assert auc(g, i) == 0.0
    assert frr_at_far(g, i, 0.01) == 1.0  # only the "accept nothing" threshold reaches FAR 0


def test_interpolated_eer() -> None:
    # thresholds .1 .4 .5 .7 .9 inf; FRR 0 0 1/3 1/3 2/3 1; FAR 1 .5 .5 0 0 0.
    # FAR - FRR crosses zero between .5 (+1/6) and .7 (-1/3): weight 1/3 toward .7, so
    # EER = 2/3 * (1/2 + 1/3) / 2 + 1/3 * (0 + 1/3) / 2 = 1/3 at threshold 2/3 * .5 + 1/3 * .7.
    g, i = [0.4, 0.7, 0.9], [0.1, 0.5]
    rate, thr = eer(g, i)
    assert rate == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.5 + 0.2 / 3)
    assert auc(g, i) == pytest.approx(5 / 6)
    assert frr_at_far(g, i, 0.01) == pytest.approx(1 / 3)
    assert frr_at_far(g, i, 0.5) == 0.0


def test_ties_count_half() -> None:
    # pairs (g, i): (.5,.5) tie = 1/2, (.5,.2), (.8,.5), (.8,.2) -> 3.5 / 4
    g, i = [0.5, 0.8], [0.5, 0.2]
    assert auc(g, i) == pytest.approx(0.875)
    rate, thr = eer(g, i)
    # thresholds .2 .5 .8 inf; FRR 0 0 .5 1; FAR 1 .5 0 0: crossing halfway between .5 and .8
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.65)


def test_all_scores_tied_is_chance() -> None:
    g, i = [0.5, 0.5], [0.5, 0.5, 0.5]
    assert eer(g, i)[0] == pytest.approx(0.5)
    assert auc(g, i) == pytest.approx(0.5)


def test_identical_distributions_give_chance_eer() -> None:
    s = [0.1, 0.3, 0.6, 0.9]
    assert eer(s, s)[0] == pytest.approx(0.5)
    assert auc(s, s) == pytest.approx(0.5)


def test_accept_at_or_above_the_threshold() -> None:
    # A genuine score equal to an impostor score: accepting one accepts the other (FAR 1/1 at FRR 0).
    assert frr_at_far([0.5, 0.9], [0.5], 0.0) == 0.5


def test_det_points_run_from_accept_all_to_accept_none() -> None:
    far, frr = det_points([0.4, 0.7, 0.9], [0.1, 0.5])
    np.testing.assert_allclose(far, [1, 0.5, 0.5, 0, 0, 0])
    np.testing.assert_allclose(frr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_eer_needs_both_kinds() -> None:
    with pytest.raises(ValueError, match="genuine and impostor"):
        eer([], [0.1])
