"""The evaluation protocol on embeddings: pure numpy, shared by ``sigvault evaluate`` and training.

For one seeded split: per writer, ``n_refs`` random genuine signatures are the references; the threshold is
set from them alone (``scoring.person_threshold``, as ``enroll`` does); questioned items are the writer's
other genuine signatures, all its skilled forgeries, and one genuine signature of every other writer
(random forgeries). Each item is scored with ``scoring.person_scorer`` and decided with ``scoring.decide`` and
``scoring.capture_guard`` as ``verify`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sigvault import scoring
from sigvault.imaging import InkCapture

KINDS = ("genuine", "skilled", "random")


@dataclass(frozen=True)
class Trials:
    """Scored questioned items of one split; arrays of equal length."""

    writer: np.ndarray  # (n,) claimed writer
    kind: np.ndarray  # (n,) "genuine" | "skilled" | "random"
    score: np.ndarray  # (n,) fused score
    threshold: np.ndarray  # (n,) the claimed writer's threshold
    item: np.ndarray  # (n,) index of the questioned item in the input arrays
    capture: np.ndarray  # (n,) scoring.capture_ratio of the item against the claimed writer's references

    def scores(self, kind: str) -> np.ndarray:
        return self.score[self.kind == kind]

    def decisions(self, cfg: scoring.ScoringConfig, *, guard: bool = True) -> np.ndarray:
        """The deployed rule's decision of each item, as ``verify`` makes it (without ``guard``: before the
        capture guard, the network's decision alone)."""
        out: list[str] = []
        for s, t, c in zip(self.score, self.threshold, self.capture, strict=True):
            decision: str = scoring.decide(s, t, cfg)
            out.append(scoring.capture_guard(decision, s, t, c, cfg) if guard else decision)
        return np.array(out, dtype=object)


def run_split(
    emb: np.ndarray,
    writers: np.ndarray,
    forged: np.ndarray,
    n_refs: int,
    seed: int,
    cfg: scoring.ScoringConfig,
    references: dict[str, np.ndarray] | None = None,
    cohort: np.ndarray | None = None,
    views: np.ndarray | None = None,
    questioned: np.ndarray | None = None,
    captures: Sequence[InkCapture] | None = None,
    questioned_captures: Sequence[InkCapture] | None = None,
) -> Trials:
    """Score one split.

    Args:
        emb: (n, d) L2-normalised embeddings; writers: (n,) writer keys; forged: (n,) bool.
        n_refs: references per writer (writers with fewer than n_refs + 1 genuine are skipped).
        references: optional precomputed choice {writer: indices of its references} (evaluate passes the
            references it enrolled through the vault so both sides use the same ones).
        cohort: (m, d) the model's cohort, for ``wd-svm`` scoring (none of the writers measured is in it).
        views: (n, len(cfg.views), d) the items' views (``scoring.person_scorer``), when ``cfg.views``;
            only the references' rows are read.
        questioned: (n, d) the embeddings the questioned items are scored with, row for row the same items as
            ``emb`` captured another way (another scanner); default ``emb``. References come from ``emb``.
        captures: (n,) the items' ``imaging.InkCapture``; a writer's references' is their median (as the vault
            stores it). Default: all scale 1 and stroke 1, no capture mismatch.
        questioned_captures: (n,) the captures of the ``questioned`` scans; default ``captures``.
    """
    asked = emb if questioned is None else questioned
    if asked.shape != emb.shape:
        raise ValueError(f"questioned embeddings {asked.shape} do not match the references' {emb.shape}")
    ref_captures = [InkCapture(1.0, 1.0)] * emb.shape[0] if captures is None else list(captures)
    asked_captures = ref_captures if questioned_captures is None else list(questioned_captures)
    if len(ref_captures) != emb.shape[0] or len(asked_captures) != emb.shape[0]:
        raise ValueError(f"captures {len(ref_captures)} / {len(asked_captures)} do not match {emb.shape[0]} items")
    rng = np.random.default_rng(seed)
    names = sorted(set(writers.tolist()))
    refs_of: dict[str, np.ndarray] = {}
    rest_of: dict[str, np.ndarray] = {}
    for w in names:
        g = np.flatnonzero((writers == w) & ~forged)
        if references is not None and w in references:
            chosen = np.asarray(references[w])
        elif g.size > n_refs:
            chosen = rng.choice(g, size=n_refs, replace=False)
        else:
            continue
        refs_of[w] = chosen
        rest_of[w] = np.setdiff1d(g, chosen)
    enrolled = sorted(refs_of)
    # one genuine signature of every other writer, drawn once per split
    random_pick = {w: int(rng.choice(rest_of[w])) for w in enrolled if rest_of[w].size}
    out_w, out_k, out_s, out_t, out_i, out_c = [], [], [], [], [], []
    for w in enrolled:
        r = emb[refs_of[w]]
        v = None if views is None else views[refs_of[w]]
        thr = scoring.person_threshold(r, cfg, cohort, views=v).value
        scorer = scoring.person_scorer(r, cfg, cohort, views=v)
        items = [(i, "genuine") for i in rest_of[w]]
        items += [(i, "skilled") for i in np.flatnonzero((writers == w) & forged)]
        items += [(random_pick[o], "random") for o in enrolled if o != w and o in random_pick]
        if not items:
            continue
        idx = np.array([i for i, _ in items])
        out_w += [w] * len(items)
        out_k += [kind for _, kind in items]
        out_s += scorer.scores(asked[idx]).tolist()
        out_t += [thr] * len(items)
        out_i += idx.tolist()
        ref_capture = InkCapture.median([ref_captures[i] for i in refs_of[w]])
        out_c += [scoring.capture_ratio(asked_captures[i], ref_capture, cfg) for i in idx]
    return Trials(
        np.array(out_w), np.array(out_k), np.array(out_s), np.array(out_t), np.array(out_i), np.array(out_c, dtype=np.float64)
    )


def deployed_rates(trials: Trials, cfg: scoring.ScoringConfig) -> dict[str, float]:
    """FRR, FAR (skilled, random) and refer rate of the deployed rule (per-writer thresholds + refer band).

    A referred item is neither accepted nor rejected: FRR counts genuine items rejected, FAR counts
    forgeries accepted, each over all items of that kind; refer_rate is over all items."""
    dec = trials.decisions(cfg)
    g, sk, rd = (trials.kind == k for k in KINDS)
    return {
        "frr": float(np.mean(dec[g] == "reject")) if g.any() else float("nan"),
        "far_skilled": float(np.mean(dec[sk] == "accept")) if sk.any() else float("nan"),
        "far_random": float(np.mean(dec[rd] == "accept")) if rd.any() else float("nan"),
        "refer_rate": float(np.mean(dec == "refer")),
    }
