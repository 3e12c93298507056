"""Verification metrics: pure numpy, used by ``sigvault evaluate`` and by training.

Convention: higher score = more likely genuine. ``genuine`` and ``impostor`` are 1-d score arrays.
"""

from __future__ import annotations

import numpy as np


def _rates(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FRR and FAR at every candidate threshold (accept when score >= threshold)."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    thresholds = np.unique(np.concatenate([g, i, [np.inf]]))
    frr = np.searchsorted(g, thresholds, side="left") / g.size  # genuine below the threshold
    far = 1.0 - np.searchsorted(i, thresholds, side="left") / i.size  # impostors at or above it
    return thresholds, frr, far


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """Equal error rate with one global threshold chosen after the fact, and that threshold.

    The EER is interpolated between the two candidate thresholds where FRR and FAR cross.
    """
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("EER needs genuine and impostor scores")
    thresholds, frr, far = _rates(genuine, impostor)
    diff = far - frr  # decreasing from >= 0 to <= 0
    k = int(np.argmax(diff <= 0))
    if k == 0:
        return float((far[0] + frr[0]) / 2), float(thresholds[0])
    d0, d1 = diff[k - 1], diff[k]
    w = d0 / (d0 - d1) if d0 != d1 else 0.5
    rate = (1 - w) * (far[k - 1] + frr[k - 1]) / 2 + w * (far[k] + frr[k]) / 2
    thr = thresholds[k] if np.isinf(thresholds[k - 1]) else (1 - w) * thresholds[k - 1] + w * thresholds[k]
    if np.isinf(thr):
        thr = thresholds[k - 1]
    return float(rate), float(thr)


def auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Area under the ROC curve: P(genuine score > impostor score), ties counting half."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    both = np.concatenate([g, i])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_vals = both[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    r_g = ranks[: g.size].sum()
    return float((r_g - g.size * (g.size + 1) / 2.0) / (g.size * i.size))


def frr_at_far(genuine: np.ndarray, impostor: np.ndarray, target_far: float) -> float:
    """Lowest FRR among thresholds whose FAR is at most ``target_far``."""
    _, frr, far = _rates(genuine, impostor)
    ok = far <= target_far
    return float(frr[ok].min())


def det_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(far, frr) pairs over all thresholds, for a DET curve."""
    _, frr, far = _rates(genuine, impostor)
    return far, frr
