"""Scoring: pure numpy functions shared by ``verify``, ``audit``, ``evaluate`` and training.

A questioned signature is compared with each of the person's references (cosine similarity of
L2-normalised embeddings); the similarities are fused into one score. The person's threshold comes from
the references alone: the leave-one-out scores among the references (each reference scored against the
others, exactly as a questioned genuine signature would be) give a mean and a spread, shrunk toward
global values learned on training writers when there are few references; the threshold sits ``k`` spreads
below the mean. Around the threshold lies a refer band sent to a human. The probability that the
signature is genuine is a logistic function of ``score - threshold`` fitted on training writers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np

Decision = Literal["accept", "reject", "refer"]


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring parameters; the shipped values live in the model card (``scoring``)."""

    fusion_top_k: int = 0  # 0: mean of all similarities; k: mean of the k highest
    prior_mean: float = 0.80  # global mean of leave-one-out genuine scores (training writers)
    prior_std: float = 0.08  # global spread of those scores
    prior_strength: float = 4.0  # pseudo-count of the prior when shrinking a person's statistics
    k: float = 2.0  # threshold = mean - k * spread
    refer_band: float = 0.03  # |score - threshold| below this: refer to a human
    calib_slope: float = 30.0  # P(genuine) = sigmoid(slope * (score - threshold) + offset)
    calib_offset: float = 0.0
    compare_threshold: float = 0.70  # `compare`: one-to-one similarity at which P(same writer) = 0.5
    compare_slope: float = 20.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | int]) -> ScoringConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Threshold:
    """A person's threshold and how it was derived (stored with the person)."""

    value: float
    method: str
    n_references: int
    loo_mean: float | None
    loo_std: float | None


def similarities(query: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Cosine similarities. query (d,), refs (n, d), both L2-normalised -> (n,) float64."""
    return refs.astype(np.float64) @ query.astype(np.float64)


def fuse(sims: np.ndarray, cfg: ScoringConfig) -> float:
    """Fuse similarities to the references, (n,) -> score (mean, or mean of the top k)."""
    if sims.size == 0:
        raise ValueError("cannot fuse an empty set of similarities")
    if cfg.fusion_top_k and sims.size > cfg.fusion_top_k:
        sims = np.sort(sims)[-cfg.fusion_top_k :]
    return float(np.mean(sims))


def loo_scores(refs: np.ndarray, cfg: ScoringConfig) -> np.ndarray:
    """Each reference scored against the others. refs (n, d) with n >= 2 -> (n,)."""
    n = refs.shape[0]
    gram = refs.astype(np.float64) @ refs.astype(np.float64).T
    return np.array([fuse(np.delete(gram[i], i), cfg) for i in range(n)])


def person_threshold(refs: np.ndarray, cfg: ScoringConfig) -> Threshold:
    """Threshold from the references alone. refs (n, d), n >= 1."""
    n = int(refs.shape[0])
    if n < 1:
        raise ValueError("a threshold needs at least one reference")
    n0 = cfg.prior_strength
    prior_var = cfg.prior_std**2
    if n == 1:
        value = cfg.prior_mean - cfg.k * cfg.prior_std
        return Threshold(value, "prior (1 reference)", 1, None, None)
    loo = loo_scores(refs, cfg)
    loo_mean = float(loo.mean())
    loo_var = float(loo.var(ddof=1)) if n >= 3 else prior_var
    dof = n - 1 if n >= 3 else 0
    mean = (n * loo_mean + n0 * cfg.prior_mean) / (n + n0)
    var = (dof * loo_var + n0 * prior_var) / (dof + n0)
    value = mean - cfg.k * math.sqrt(var)
    method = f"leave-one-out over {n} references, shrunk toward the global prior (weight {n0:g})"
    return Threshold(value, method, n, loo_mean, math.sqrt(loo_var) if n >= 3 else None)


def decide(score: float, threshold: float, cfg: ScoringConfig) -> Decision:
    """accept above the refer band, reject below it, refer inside it."""
    if score >= threshold + cfg.refer_band:
        return "accept"
    if score < threshold - cfg.refer_band:
        return "reject"
    return "refer"


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def probability(score: float, threshold: float, cfg: ScoringConfig) -> float:
    """Calibrated probability that the questioned signature is genuine."""
    return _sigmoid(cfg.calib_slope * (score - threshold) + cfg.calib_offset)


def compare_probability(similarity: float, cfg: ScoringConfig) -> float:
    """One-to-one comparison: probability that two signatures share a writer."""
    return _sigmoid(cfg.compare_slope * (similarity - cfg.compare_threshold))
