"""PCA whitening, fitted in numpy (no torch): used by the export of the pooled features and by the mid-level
features added to an exported graph (``training.midlevel``)."""

from __future__ import annotations

import numpy as np


def fit_whitening(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA whitening to ``k`` dimensions fitted on ``features`` (n, d): (mean (d,), projection (d, k)),
    each principal direction scaled by the inverse of its spread."""
    mean = features.mean(axis=0)
    _, s, vt = np.linalg.svd(features - mean, full_matrices=False)
    if k > len(s):
        raise ValueError(f"whitening to {k} dimensions needs at least {k} signatures, got {len(s)}")
    return mean, (vt[:k].T / s[:k]) * np.sqrt(len(features))
