"""The per-split protocol on tiny embeddings where every score and decision is known in advance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sigvault import protocol
from sigvault.imaging import InkCapture
from sigvault.scoring import ScoringConfig

CFG = ScoringConfig()  # prior mean .80, std .08, strength 4, k 2, refer band .03


def unit(*axes: float, dim: int = 6) -> np.ndarray:
    v = np.zeros(dim)
    for a in axes:
        v[int(a)] = 1.0
    return v / np.linalg.norm(v)


def toy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writers A, B, C sign as axes 0, 1, 2 (4 identical genuine each); D has only 2 genuine (axis 5).
    A's 2 forgeries lie halfway between A and axis 3 (cosine 1/sqrt 2 with A); B's 2 forgeries are axis 4."""
    rows, who, forged = [], [], []
    for w, axis in (("A", 0), ("B", 1), ("C", 2)):
        rows += [unit(axis)] * 4
        who += [w] * 4
        forged += [False] * 4
    rows += [unit(0, 3)] * 2 + [unit(4)] * 2
    who += ["A", "A", "B", "B"]
    forged += [True] * 4
    rows += [unit(5)] * 2
    who += ["D", "D"]
    forged += [False, False]
    return np.array(rows, dtype=np.float32), np.array(who), np.array(forged)


def test_split_scores_and_counts() -> None:
    emb, who, forged = toy()
    t = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=CFG)
    # D has no genuine signature left after 2 references: not enrolled, and never a random forgery.
    assert sorted(set(t.writer.tolist())) == ["A", "B", "C"]
    assert {k: int(np.sum(t.kind == k)) for k in protocol.KINDS} == {"genuine": 6, "skilled": 4, "random": 6}
    np.testing.assert_allclose(t.scores("genuine"), 1.0)
    np.testing.assert_allclose(t.scores("random"), 0.0)
    np.testing.assert_allclose(np.sort(t.scores("skilled")), [0, 0, 1 / math.sqrt(2), 1 / math.sqrt(2)], atol=1e-6)
    # 2 identical references: leave-one-out mean 1, spread from the prior only (too few references):
    # threshold = (2 * 1 + 4 * 0.8) / 6 - 2 * 0.08
    np.testing.assert_allclose(t.threshold, 5.2 / 6 - 0.16)
    # random forgeries come from the other writers' genuine signatures
    for w, i in zip(t.writer[t.kind == "random"], t.item[t.kind == "random"], strict=True):
        assert who[i] != w and not forged[i] and who[i] != "D"


def test_deployed_rates() -> None:
    emb, who, forged = toy()
    t = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=CFG)
    # genuine 1.0 >= thr + band: accept; A's forgeries (0.7071) within 0.03 of thr 0.7067: refer; zeros: reject
    assert protocol.deployed_rates(t, CFG) == {
        "frr": 0.0,
        "far_skilled": 0.0,
        "far_random": 0.0,
        "refer_rate": pytest.approx(2 / 16),
    }
    strict = ScoringConfig(refer_band=0.0)
    assert protocol.deployed_rates(t, strict)["far_skilled"] == 0.5  # A's forgeries now just above thr


def test_given_references_are_used() -> None:
    emb, who, forged = toy()
    refs = {"A": np.array([0, 3]), "B": np.array([4, 5]), "C": np.array([10, 11])}
    t = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=CFG, references=refs)
    genuine_items = {w: sorted(t.item[(t.kind == "genuine") & (t.writer == w)].tolist()) for w in "ABC"}
    assert genuine_items == {"A": [1, 2], "B": [6, 7], "C": [8, 9]}
    chosen = set(np.concatenate(list(refs.values())).tolist())
    assert not chosen & set(t.item[t.kind == "random"].tolist())  # a reference is never questioned


def test_same_seed_same_split() -> None:
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    who = np.repeat(np.array(["a", "b", "c", "d"]), 10)
    forged = np.tile(np.arange(10) >= 7, 4)
    a = protocol.run_split(emb, who, forged, 3, 11, CFG)
    b = protocol.run_split(emb, who, forged, 3, 11, CFG)
    c = protocol.run_split(emb, who, forged, 3, 12, CFG)
    np.testing.assert_array_equal(a.item, b.item)
    np.testing.assert_array_equal(a.score, b.score)
    assert not np.array_equal(a.item, c.item)
    assert {k: int(np.sum(a.kind == k)) for k in protocol.KINDS} == {"genuine": 16, "skilled": 12, "random": 12}


def test_questioned_items_are_scored_from_their_other_capture() -> None:
    emb, who, forged = toy()
    # Another capture of every item: A's forgeries now look exactly like A's genuine signatures (axis 0),
    # everything else as before. References still come from ``emb``.
    other = emb.copy()
    other[12:14] = unit(0)
    same = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=CFG)
    t = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=CFG, questioned=other)
    np.testing.assert_array_equal(t.item, same.item)
    np.testing.assert_array_equal(t.threshold, same.threshold)  # thresholds come from the references alone
    np.testing.assert_allclose(np.sort(t.scores("skilled")), [0, 0, 1, 1], atol=1e-6)
    assert protocol.deployed_rates(t, CFG)["far_skilled"] == 0.5  # A's forgeries, now accepted
    # questioned=emb is the default
    np.testing.assert_array_equal(protocol.run_split(emb, who, forged, 2, 0, CFG, questioned=emb).score, same.score)
    with pytest.raises(ValueError, match=r"questioned embeddings \(17, 6\) do not match the references. \(18, 6\)"):
        protocol.run_split(emb, who, forged, 2, 0, CFG, questioned=other[1:])


def test_the_capture_guard_decides_as_verify_does() -> None:
    emb, who, forged = toy()
    fine, coarse = InkCapture(1.0, 4.0), InkCapture(2.0, 2.0)
    captures = [coarse if w == "B" and f else fine for w, f in zip(who, forged, strict=True)]
    # B's forgeries scanned coarser than everything else (twice the scale, strokes half as wide)
    wide = ScoringConfig(capture_reject_bands=30.0)  # B's forgeries score 0: 23.6 bands below B's threshold
    t = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=wide, captures=captures)
    assert sorted(t.capture[t.writer == "B"].tolist()) == [1.0] * 4 + [2.0] * 2
    assert protocol.deployed_rates(t, wide)["refer_rate"] == pytest.approx(4 / 16)  # A's 2 as before, B's 2
    assert protocol.deployed_rates(t, CFG)["refer_rate"] == pytest.approx(2 / 16)  # 6 bands: still rejected
    # B's forgeries only written smaller (twice the scale, the same strokes): not another capture
    smaller = [InkCapture(2.0, 4.0) if w == "B" and f else fine for w, f in zip(who, forged, strict=True)]
    u = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=wide, captures=smaller)
    assert set(u.capture.tolist()) == {1.0}
    # a coarse questioned capture of everything (the default references: scale 1, stroke 1): only ratios
    # change, never scores
    asked = [InkCapture(3.0, 1 / 3)] * len(who)
    q = protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=wide, questioned_captures=asked)
    np.testing.assert_array_equal(q.score, protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=wide).score)
    assert set(q.capture.tolist()) == {3.0}
    with pytest.raises(ValueError, match="captures 3 / 3 do not match 18 items"):
        protocol.run_split(emb, who, forged, n_refs=2, seed=0, cfg=wide, captures=[fine] * 3)
