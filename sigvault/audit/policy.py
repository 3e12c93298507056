"""Amount-aware decision policies (``sigvault audit --policy``): bands of amount that add a margin to the
threshold, widen the refer band, or accept only above a probability.

A policy can only make decisions stricter than the model's. Its rule is handed to
:meth:`~sigvault.vault.Vault.verify_many` as each item's decision rule, so the decision log records the final
decision the audit reports; the model's own is kept as ``model_decision``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigvault import scoring
from sigvault.errors import UsageError


@dataclass(frozen=True)
class Band:
    """A range of amounts and how strictly items in it are decided.

    ``max_amount`` is exclusive (None: no upper bound). ``threshold_margin`` is added to the person's
    threshold; ``refer_band`` widens the refer band around it (never narrower than the model's);
    ``min_accept_probability``: an accept below this calibrated probability becomes a refer.
    """

    name: str
    max_amount: float | None = None
    threshold_margin: float = 0.0
    refer_band: float | None = None
    min_accept_probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Policy:
    """An amount-aware decision policy, read from TOML (see :func:`load_policy`)."""

    name: str
    bands: tuple[Band, ...]
    missing_amount: str  # the band for rows without an amount
    path: str
    text: str
    sha256: str

    def band_for(self, amount: float | None) -> Band:
        if amount is None:
            return next(b for b in self.bands if b.name == self.missing_amount)
        for band in self.bands:
            if band.max_amount is None or amount < band.max_amount:
                return band
        raise AssertionError("the last band has no upper bound")  # checked by load_policy

    def decide(self, band: Band, score: float, threshold: float, probability: float, cfg: scoring.ScoringConfig) -> str:
        """The decision under ``band``: :func:`scoring.decide` with the band's threshold and refer band."""
        width = cfg.refer_band if band.refer_band is None else max(cfg.refer_band, band.refer_band)
        decision = scoring.decide(score, threshold + band.threshold_margin, dataclasses.replace(cfg, refer_band=width))
        if (
            decision == "accept"
            and band.min_accept_probability is not None
            and probability < band.min_accept_probability
        ):
            return "refer"
        return decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "missing_amount": self.missing_amount,
            "bands": [b.to_dict() for b in self.bands],
            "text": self.text,
        }


_BAND_KEYS = {f.name for f in dataclasses.fields(Band)}


def load_policy(path: Path | str) -> Policy:
    """Read a policy file. Example (amounts in the manifest's currency)::

        name = "cheques 2026"
        missing_amount = "large"       # band for rows without an amount (default: the last band)

        [[band]]                        # below 1,000: the model's own decision
        name = "small"
        max_amount = 1000

        [[band]]                        # 1,000 to 10,000: stricter threshold, wider refer band
        name = "medium"
        max_amount = 10000
        threshold_margin = 0.02
        refer_band = 0.05

        [[band]]                        # 10,000 and above: auto-accept only above 99 % confidence
        name = "large"
        threshold_margin = 0.04
        min_accept_probability = 0.99

    Bands are listed by increasing ``max_amount`` (exclusive); only the last has none and it covers every
    larger amount. A policy can only make decisions stricter (margins and widths are never negative).

    Raises:
        UsageError: the file is missing, not TOML, or breaks one of these rules (the message names it).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from None
    where = path.name
    try:
        text = data.decode("utf-8")
        doc = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{where}: not a valid TOML policy ({exc})") from None
    unknown = sorted(set(doc) - {"name", "missing_amount", "band"})
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed: name, missing_amount, [[band]]")
    raw_bands = doc.get("band")
    if not isinstance(raw_bands, list) or not raw_bands:
        raise UsageError(f"{where}: no [[band]] table; a policy needs at least one band")
    bands: list[Band] = []
    for i, raw in enumerate(raw_bands, start=1):
        label = f"{where}: band {i}"
        bad = sorted(set(raw) - _BAND_KEYS)
        if bad:
            raise UsageError(f"{label}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(_BAND_KEYS))}")
        name = raw.get("name", f"band {i}")
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"{label}: name must be a non-empty string")
        label = f"{where}: band {i} ({name!r})"
        values: dict[str, Any] = {"name": name}
        for key in ("max_amount", "threshold_margin", "refer_band", "min_accept_probability"):
            if key not in raw:
                continue
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise UsageError(f"{label}: {key} must be a number, got {value!r}")
            if key in ("threshold_margin", "refer_band") and value < 0:
                raise UsageError(f"{label}: {key} must be >= 0 (a policy can only make decisions stricter)")
            if key == "min_accept_probability" and not 0 <= value <= 1:
                raise UsageError(f"{label}: min_accept_probability must be between 0 and 1, got {value}")
            values[key] = float(value)
        bands.append(Band(**values))
    names = [b.name for b in bands]
    for i, band in enumerate(bands):
        if names.count(band.name) > 1:
            raise UsageError(f"{where}: two bands are named {band.name!r}")
        last = i == len(bands) - 1
        if band.max_amount is None and not last:
            raise UsageError(f"{where}: band {i + 1} ({band.name!r}) has no max_amount; only the last band may omit it")
        if last and band.max_amount is not None:
            raise UsageError(
                f"{where}: the last band ({band.name!r}) must have no max_amount, so that every amount falls in a band"
            )
        previous = bands[i - 1].max_amount if i else None
        if band.max_amount is not None and previous is not None and band.max_amount <= previous:
            raise UsageError(f"{where}: band {i + 1} ({band.name!r}): max_amount must be above the previous band's")
    missing = doc.get("missing_amount", bands[-1].name)
    if missing not in names:
        raise UsageError(f"{where}: missing_amount {missing!r} names no band (bands: {', '.join(names)})")
    title = doc.get("name", path.stem)
    if not isinstance(title, str):
        raise UsageError(f"{where}: name must be a string")
    return Policy(title, tuple(bands), missing, str(path), text, hashlib.sha256(data).hexdigest())


def policy_rule(policy: Policy, band: Band, cfg: scoring.ScoringConfig) -> Callable[[float, float, float], str]:
    """The decision rule (score, threshold, probability) -> decision of ``band`` under ``policy``."""

    def rule(score: float, threshold: float, probability: float) -> str:
        return policy.decide(band, score, threshold, probability, cfg)

    return rule


def policy_field(policy: Policy, band: Band, threshold: float | None) -> dict[str, Any]:
    """The ``policy`` field of a result record: the band applied and its effective threshold."""
    return {
        "sha256": policy.sha256,
        "band": band.name,
        "threshold_margin": band.threshold_margin,
        "refer_band": band.refer_band,
        "min_accept_probability": band.min_accept_probability,
        "effective_threshold": None if threshold is None else threshold + band.threshold_margin,
    }

