"""Scoring: pure numpy functions shared by ``verify``, ``audit``, ``evaluate`` and training.

A questioned signature is scored against the person's references by one of two methods (the model card's
``scoring.method``):

- ``cosine``: cosine similarities of L2-normalised embeddings to each reference, fused into one score;
- ``wd-svm``: a writer-dependent linear SVM, fitted at enrolment on the person's references (positives)
  against the model's *cohort* (genuine signatures of writers the network never trained on, shipped with
  the weights, as negatives); the score is the SVM's decision value. Measured on validation writers it
  beats plain cosine and cohort normalisation (z-norm, s-norm): ``python -m training.scoring_compare``.
  With ``view_angles``, each reference is also fitted turned by those angles (its "views",
  :func:`sigvault.imaging.preprocess_views`): the same hand as a scan placed askew would show it, so that a
  skewed questioned scan is not taken for a stranger's; with ``view_blurs``, also blurred, as an
  out-of-focus scan would show it. Views are derived data: a vault computes them from the stored reference
  images whenever it fits a scorer.

The person's threshold comes from
the references alone: the leave-one-out scores among the references (each reference scored against the
others, exactly as a questioned genuine signature would be) give a mean and a spread, shrunk toward
global values learned on training writers when there are few references; the threshold sits ``k`` spreads
below the mean. Around the threshold lies a refer band sent to a human. The probability that the
signature is genuine is a logistic function of ``score - threshold`` fitted on training writers.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from sigvault.imaging import View

if TYPE_CHECKING:
    from sigvault.imaging import InkCapture

Decision = Literal["accept", "refer", "reject"]
#: The decisions, in the order every listing uses (reports, counts, CSV columns): from accept to reject.
DECISIONS: tuple[Decision, ...] = get_args(Decision)


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring parameters; the shipped values live in the model card (``scoring``)."""

    method: str = "cosine"  # "cosine" | "wd-svm" (needs a cohort)
    svm_c: float = 1.0  # wd-svm: soft-margin constant (classes balanced)
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
    # wd-svm: each reference also enrolled turned by these angles (degrees), as extra positives ("views")
    view_angles: tuple[float, ...] = ()
    # ... and blurred by these Gaussian radii (pixels of the shrunk scan), one view each, after the turned ones,
    # by at most view_blur_cap pixels of the canvas (0: no bound; imaging.View.blur_cap)
    view_blurs: tuple[float, ...] = ()
    view_blur_cap: float = 0.0
    # capture guard (capture_guard): a questioned scan whose ink scale differs from the references' by more
    # than this factor either way is a capture mismatch, and a rejection of it within capture_reject_bands
    # refer bands below the threshold is referred instead; capture_ratio_max = 0 turns the guard off
    capture_ratio_max: float = 1.5
    capture_reject_bands: float = 6.0
    # ... and only when the strokes confirm it (capture_ratio): thinner in scan pixels by more than this factor
    # for a coarser scan (thicker for a finer one); a signature only written smaller keeps its strokes.
    # 0 = the ink scale alone, strokes not consulted
    capture_stroke_min: float = 1.1
    # reference hygiene (reference_hygiene, reference_gate): a person needs min_references references before
    # any automatic accept or reject (fewer: every decision is refer); a threshold derived from the references
    # outside threshold_range (the range seen on calibration writers; None: not checked) is implausible and
    # refers every decision too; at enrolment a new reference that scores more than gate_margin below the
    # threshold of the person's other references is refused unless forced (scripts/reference_gate.py measures it)
    min_references: int = 3
    threshold_range: tuple[float, float] | None = None
    gate_margin: float = 0.1  # a card without a measured margin; the shipped card has its own

    def to_dict(self) -> dict[str, float | int | list[float] | None]:
        out: dict[str, float | int | list[float] | None] = asdict(self)
        out["view_angles"] = [float(a) for a in self.view_angles]
        out["view_blurs"] = [float(r) for r in self.view_blurs]
        out["threshold_range"] = None if self.threshold_range is None else [float(x) for x in self.threshold_range]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, float | int | list[float] | None]) -> ScoringConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, object] = {k: v for k, v in data.items() if k in known}
        for key in ("view_angles", "view_blurs"):
            if key in values:
                values[key] = tuple(float(a) for a in values[key])  # type: ignore[attr-defined]
        if values.get("threshold_range") is not None:
            lo, hi = (float(x) for x in values["threshold_range"])  # type: ignore[attr-defined]
            values["threshold_range"] = (lo, hi)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def views(self) -> tuple[View, ...]:
        """The views scoring uses (:class:`sigvault.imaging.View`): one turned by each of ``view_angles``, then
        one blurred by each of ``view_blurs``, for wd-svm; none for cosine (which has no fitted model for extra
        positives to train)."""
        if self.method != "wd-svm":
            return ()
        blurred = tuple(View(blur=r, blur_cap=self.view_blur_cap) for r in self.view_blurs)
        return tuple(View(turn=a) for a in self.view_angles) + blurred


@dataclass(frozen=True)
class Threshold:
    """A person's threshold and how it was derived (stored with the person)."""

    value: float
    method: str
    n_references: int
    loo_mean: float | None
    loo_std: float | None


METHODS = ("cosine", "wd-svm")


class PersonScorer:
    """Scores questioned signatures against one person (built from their references)."""

    def __init__(
        self, method: str, refs: np.ndarray, cfg: ScoringConfig, weights: np.ndarray | None = None, bias: float = 0.0
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown scoring method {method!r}; expected one of {METHODS}")
        if method == "wd-svm" and weights is None:
            raise ValueError("a wd-svm scorer needs its weights")
        self.method = method
        self.refs = refs
        self.cfg = cfg
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) L2-normalised queries -> (n,) float64 scores."""
        q = np.atleast_2d(queries).astype(np.float64)
        if self.weights is not None:
            return q @ self.weights + self.bias
        return np.array([fuse(similarities(x, self.refs), self.cfg) for x in q])

    def score(self, query: np.ndarray) -> float:
        return float(self.scores(query[np.newaxis, :])[0])

    def to_json(self) -> dict[str, object]:
        """What a vault stores with the person's threshold (wd-svm weights, exactly, as float64, and the views
        the fit used: ``views`` the angles, ``view_blurs`` the blur radii and ``view_blur_cap`` their bound, these
        two only when there are blurred views)."""
        out: dict[str, object] = {"method": self.method}
        if self.weights is not None:
            out["weights"] = base64.b64encode(self.weights.astype("<f8").tobytes()).decode("ascii")
            out["bias"] = self.bias
        if self.cfg.views:
            out["views"] = [float(a) for a in self.cfg.view_angles]
            if self.cfg.view_blurs:
                out["view_blurs"] = [float(r) for r in self.cfg.view_blurs]
                out["view_blur_cap"] = self.cfg.view_blur_cap
        return out

    @staticmethod
    def stored_views(data: dict[str, object]) -> tuple[View, ...]:
        """The views a scorer stored by :meth:`to_json` was fitted with (none when it stored none)."""
        return ScoringConfig(
            method="wd-svm",
            view_angles=tuple(float(a) for a in data.get("views", [])),  # type: ignore[attr-defined]
            view_blurs=tuple(float(r) for r in data.get("view_blurs", [])),  # type: ignore[attr-defined]
            view_blur_cap=float(data.get("view_blur_cap", 0.0)),  # type: ignore[arg-type]
        ).views

    @classmethod
    def from_json(cls, data: dict[str, object], refs: np.ndarray, cfg: ScoringConfig) -> PersonScorer:
        weights = None
        if "weights" in data:
            weights = np.frombuffer(base64.b64decode(str(data["weights"])), dtype="<f8").copy()
        return cls(str(data["method"]), refs, cfg, weights, float(data.get("bias", 0.0)))  # type: ignore[arg-type]


def gram_of(rows: np.ndarray) -> np.ndarray:
    """rows @ rows.T in float64 (the Gram matrix :func:`fit_linear` hands libsvm)."""
    r = np.asarray(rows, dtype=np.float64)
    return r @ r.T


def fit_linear(
    refs: np.ndarray, cohort: np.ndarray, cfg: ScoringConfig, cohort_gram: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Linear SVM, references (positives) against the cohort (negatives), classes balanced.

    libsvm is given the Gram matrix of the rows (computed here with one BLAS product; ``cohort_gram``, the
    cohort's own, can be passed to reuse it across fits) instead of computing each dot product itself:
    the same problem and solution as scikit-learn's ``SVC(kernel="linear")`` (weights equal to 1e-15), about
    5 times faster for 272 cohort rows of 896 dimensions, so an enrolment's 16 fits stop dominating it.
    Deterministic (libsvm does not shuffle without probability estimates)."""
    from sklearn.svm import SVC

    pos = np.asarray(refs, dtype=np.float64)
    neg = np.asarray(cohort, dtype=np.float64)
    n = pos.shape[0]
    gram = np.empty((n + neg.shape[0],) * 2)
    cross = pos @ neg.T
    gram[:n, :n] = pos @ pos.T
    gram[n:, n:] = gram_of(neg) if cohort_gram is None else cohort_gram
    gram[:n, n:] = cross
    gram[n:, :n] = cross.T
    m = neg.shape[0]
    y = np.r_[np.ones(n), np.zeros(m)]
    balanced = {1.0: (n + m) / (2 * n), 0.0: (n + m) / (2 * m)}  # class_weight="balanced", without its validation cost
    svm = SVC(kernel="precomputed", C=cfg.svm_c, class_weight=balanced).fit(gram, y)
    rows = np.vstack([pos, neg])[svm.support_]
    return np.asarray(svm.dual_coef_[0] @ rows, dtype=np.float64), float(svm.intercept_[0])


class SvmFits:
    """Memo of :func:`fit_linear` for one cohort and config, keyed by the exact reference rows (in order).

    One enrolment asks for the same fits several times: the outlier check scores each new reference
    against the others (a fit on the others, and their leave-one-out fits for the threshold), and the
    person's new threshold refits the same leave-one-out sets. With 5 new references that is 31 fits of
    which 16 differ; a memo makes the rest free and changes no value (same rows, same order, same fit)."""

    def __init__(self, cohort: np.ndarray, cfg: ScoringConfig) -> None:
        self.cohort, self.cfg = cohort, cfg
        self._gram = gram_of(cohort)
        self._fits: dict[tuple[tuple[int, ...], bytes], tuple[np.ndarray, float]] = {}
        self.misses = 0

    def fit(self, refs: np.ndarray) -> tuple[np.ndarray, float]:
        key = (refs.shape, np.ascontiguousarray(refs, dtype=np.float64).tobytes())
        hit = self._fits.get(key)
        if hit is None:
            self.misses += 1
            hit = self._fits[key] = fit_linear(refs, self.cohort, self.cfg, self._gram)
        return hit


def _check_views(refs: np.ndarray, cfg: ScoringConfig, views: np.ndarray | None) -> None:
    want = len(cfg.views)
    if want == 0:
        return
    if views is None or views.shape != (refs.shape[0], want, refs.shape[1]):
        got = None if views is None else views.shape
        raise ValueError(f"this scoring needs {want} views of each of the {refs.shape[0]} references, got {got}")


def person_scorer(
    refs: np.ndarray,
    cfg: ScoringConfig,
    cohort: np.ndarray | None = None,
    fits: SvmFits | None = None,
    views: np.ndarray | None = None,
) -> PersonScorer:
    """The scorer of a person with references ``refs`` (n, d), by ``cfg.method``. ``fits``: a memo made
    for this ``cohort`` and ``cfg``. ``views``: (n, len(cfg.views), d), the embeddings of each reference
    turned by ``cfg.views`` (:func:`sigvault.imaging.preprocess_views`), extra positives of the SVM;
    required when ``cfg.views`` is not empty, ignored otherwise."""
    _check_views(refs, cfg, views)
    if cfg.method == "wd-svm":
        if cohort is None or cohort.shape[0] == 0:
            raise ValueError("wd-svm scoring needs a cohort of other writers' signatures")
        if fits is not None and (fits.cohort is not cohort or fits.cfg != cfg):
            raise ValueError("the fit memo was made for another cohort or scoring config")
        positives = refs if not cfg.views else np.vstack([refs, views.reshape(-1, refs.shape[1])])  # type: ignore[union-attr]
        weights, bias = fits.fit(positives) if fits is not None else fit_linear(positives, cohort, cfg)
        return PersonScorer("wd-svm", refs, cfg, weights, bias)
    return PersonScorer(cfg.method, refs, cfg)


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


def loo_scores(
    refs: np.ndarray,
    cfg: ScoringConfig,
    cohort: np.ndarray | None = None,
    fits: SvmFits | None = None,
    views: np.ndarray | None = None,
) -> np.ndarray:
    """Each reference scored against the others (without its views either: they are the same signature).
    refs (n, d) with n >= 2 -> (n,)."""
    n = refs.shape[0]
    _check_views(refs, cfg, views)
    if cfg.method != "cosine":
        return np.array(
            [
                person_scorer(
                    np.delete(refs, i, axis=0),
                    cfg,
                    cohort,
                    fits,
                    None if views is None else np.delete(views, i, axis=0),
                ).score(refs[i])
                for i in range(n)
            ]
        )
    gram = refs.astype(np.float64) @ refs.astype(np.float64).T
    return np.array([fuse(np.delete(gram[i], i), cfg) for i in range(n)])


def person_threshold(
    refs: np.ndarray,
    cfg: ScoringConfig,
    cohort: np.ndarray | None = None,
    fits: SvmFits | None = None,
    views: np.ndarray | None = None,
) -> Threshold:
    """Threshold from the references alone (and, for wd-svm, the cohort). refs (n, d), n >= 1; ``views`` as
    :func:`person_scorer`'s."""
    n = int(refs.shape[0])
    if n < 1:
        raise ValueError("a threshold needs at least one reference")
    n0 = cfg.prior_strength
    prior_var = cfg.prior_std**2
    if n == 1:
        value = cfg.prior_mean - cfg.k * cfg.prior_std
        return Threshold(value, "prior (1 reference)", 1, None, None)
    loo = loo_scores(refs, cfg, cohort, fits, views)
    loo_mean = float(loo.mean())
    loo_var = float(loo.var(ddof=1)) if n >= 3 else prior_var
    dof = n - 1 if n >= 3 else 0
    mean = (n * loo_mean + n0 * cfg.prior_mean) / (n + n0)
    var = (dof * loo_var + n0 * prior_var) / (dof + n0)
    value = mean - cfg.k * math.sqrt(var)
    scores = "" if cfg.method == "cosine" else f" ({cfg.method} scores)"
    if cfg.views:
        scores += f", each reference also {describe_views(cfg.views)}"
    method = f"leave-one-out over {n} references{scores}, shrunk toward the global prior (weight {n0:g})"
    return Threshold(value, method, n, loo_mean, math.sqrt(loo_var) if n >= 3 else None)


def describe_views(views: tuple[View, ...]) -> str:
    """'turned by -4, 4 degrees and blurred (1 px, at most 1.5 canvas px)'."""
    turns = [v.turn for v in views if not v.blur]
    blurred = [v for v in views if v.blur]
    cap = f", at most {blurred[0].blur_cap:g} canvas px" if blurred and blurred[0].blur_cap else ""
    parts = ([f"turned by {', '.join(f'{a:g}' for a in turns)} degrees"] if turns else []) + (
        [f"blurred ({', '.join(f'{v.blur:g}' for v in blurred)} px{cap})"] if blurred else [])
    return " and ".join(parts)


def decide(score: float, threshold: float, cfg: ScoringConfig) -> Decision:
    """accept above the refer band, reject below it, refer inside it."""
    if score >= threshold + cfg.refer_band:
        return "accept"
    if score < threshold - cfg.refer_band:
        return "reject"
    return "refer"


def reference_hygiene(
    n_references: int, threshold: float, is_override: bool, cfg: ScoringConfig, min_references: int | None = None
) -> str | None:
    """Why no decision about this person may be automatic (every one is then ``refer``), or None when it may:
    fewer references than ``min_references`` (default ``cfg.min_references``), or a threshold derived from
    the references outside ``cfg.threshold_range`` (an operator's override is the operator's to answer for)."""
    needed = cfg.min_references if min_references is None else min_references
    if n_references < needed:
        return f"{n_references} reference(s), {needed} needed before any automatic accept or reject"
    if not is_override and cfg.threshold_range is not None:
        lo, hi = cfg.threshold_range
        if not lo <= threshold <= hi:
            return (
                f"threshold {threshold:.4f} is outside [{lo:.4f}, {hi:.4f}], the range seen on calibration writers: "
                "the references disagree too much, or too little; check them (`sigvault people references`)"
            )
    return None


def reference_gate(score: float, threshold: float, cfg: ScoringConfig) -> bool:
    """Does a new reference pass the enrolment gate? ``score``: the reference scored by the person's other
    references' scorer; ``threshold``: their threshold. It fails more than ``cfg.gate_margin`` below it."""
    return score >= threshold - cfg.gate_margin


def gate_failures(
    existing: np.ndarray,
    new: np.ndarray,
    cfg: ScoringConfig,
    cohort: np.ndarray | None = None,
    fits: SvmFits | None = None,
    views: np.ndarray | None = None,
) -> list[tuple[int, float, float]]:
    """The enrolment gate over a batch: (index in ``new``, score, threshold) of each new reference that fails
    :func:`reference_gate` against the person's other references (``existing`` (m, d) and the rest of ``new``
    (n, d)), scored as a questioned signature would be, by the scorer and threshold fitted on them (against
    ``cohort`` for wd-svm). ``views``: (m + n, len(cfg.views), d) of all the references, existing first, when
    the scoring has some. A reference with no other to compare with passes."""
    everything = np.vstack([existing, new])
    failed = []
    for j in range(new.shape[0]):
        i = existing.shape[0] + j
        others = np.delete(everything, i, axis=0)
        if others.shape[0] == 0:
            continue
        their_views = None if views is None else np.delete(views, i, axis=0)
        threshold = person_threshold(others, cfg, cohort, fits, their_views)
        score = person_scorer(others, cfg, cohort, fits, their_views).score(everything[i])
        if not reference_gate(score, threshold.value, cfg):
            failed.append((j, score, threshold.value))
    return failed


def capture_ratio(questioned: InkCapture, reference: InkCapture, cfg: ScoringConfig) -> float:
    """How much more the questioned scan's ink is enlarged into the canvas than the references' (``reference``
    is their median :class:`sigvault.imaging.InkCapture`): > 1 a coarser capture, < 1 a finer one; exactly 1 when
    the strokes do not confirm it.

    A larger scale alone also means a smaller signature at the same resolution (a forger's hand, another
    person's): the ratio counts only when the strokes' width in scan pixels moves the other way by more than
    ``cfg.capture_stroke_min`` (thinner strokes in a coarser scan, thicker in a finer one; 0: not checked).
    Scales below 1 count as 1: ink reduced to fit the canvas keeps all the detail the canvas can show."""
    ratio = max(questioned.scale, 1.0) / max(reference.scale, 1.0)
    confirm = cfg.capture_stroke_min
    if confirm > 0:
        thinner = max(reference.stroke, 1e-6) / max(questioned.stroke, 1e-6)  # > 1: the questioned strokes are thinner
        if not ((ratio > 1 and thinner > confirm) or (ratio < 1 and thinner < 1 / confirm)):
            return 1.0
    return ratio


def capture_mismatch(ratio: float, cfg: ScoringConfig) -> bool:
    """Is a questioned scan with this :func:`capture_ratio` captured too differently from the references
    for the network's rejection to be trusted?"""
    limit = cfg.capture_ratio_max
    return limit > 0 and (ratio > limit or ratio < 1.0 / limit)


def capture_guard(decision: str, score: float, threshold: float, ratio: float, cfg: ScoringConfig) -> str:
    """The decision once the capture is taken into account: a rejection of a mismatched capture
    (:func:`capture_mismatch`) is referred to a human unless the score lies more than
    ``capture_reject_bands`` refer bands below the threshold.

    Why: the network compares strokes. A scan much coarser than the references (a 150-dpi scan of a small
    signature box, a fax) shows the same hand with soft, thick strokes, and the network scores it as another
    hand: on the held-out SigComp 2009 writers scanned at half resolution, 18 % of genuine signatures were
    rejected (README, Robustness). Such a scan is sent to a person rather than rejected; a score far below
    the threshold (another person's signature) is still rejected. Acceptances are never changed."""
    if decision != "reject" or not capture_mismatch(ratio, cfg):
        return decision
    return "refer" if score >= threshold - cfg.capture_reject_bands * cfg.refer_band else "reject"


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
