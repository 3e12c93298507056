"""The vault's results: frozen dataclasses returned by :class:`sigvault.vault.Vault`'s methods, each with the
``to_dict()`` that ``--json`` prints where the CLI shows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sigvault import scoring

if TYPE_CHECKING:
    from sigvault.db import decision_log
    from sigvault.erasure import Erasure
    from sigvault.index import Fingerprint

COMPARE_LABELS = {"accept": "same writer", "refer": "uncertain", "reject": "different writers"}


@dataclass(frozen=True)
class ReferenceMatch:
    """One reference's similarity to a questioned signature."""

    reference_id: int
    sha256: str
    similarity: float


@dataclass(frozen=True)
class Verification:
    """The outcome of one verification, as logged (``decision_id`` is its position in the decision log)."""

    person: str
    decision: scoring.Decision
    score: float
    probability: float
    threshold: float
    threshold_method: str
    model: str
    references: tuple[ReferenceMatch, ...]
    best_reference: ReferenceMatch
    image_sha256: str
    decision_id: int
    source: str
    model_decision: scoring.Decision | None = None  # the model's own decision when a decision rule applied
    # scoring.capture_ratio of the scan against the references, when it is a capture mismatch
    # (scoring.capture_mismatch: a rejection near the threshold was referred instead)
    capture_ratio: float | None = None
    # the zone of a whole document that was compared ({"x", "y", "w", "h", "how", "layout"}; None: the image whole)
    region: dict[str, Any] | None = None
    # why the decision is refer whatever the score (scoring.reference_hygiene: too few references, an
    # implausible threshold); None when it may be automatic
    referred: str | None = None

    @classmethod
    def from_entry(cls, entry: decision_log.Entry, source: str) -> Verification:
        """The verification a decision-log entry records (references and model decision included).

        Raises:
            ValueError: the entry is an event (a state change or a review), not a verification.
        """
        score, probability, threshold = entry.score, entry.probability, entry.threshold
        if entry.is_event or score is None or probability is None or threshold is None:
            raise ValueError(f"log entry {entry.id} is a {entry.kind} event, not a verification")
        refs = tuple(ReferenceMatch(**m) for m in entry.references_used)
        return cls(
            person=entry.person_id,
            decision=entry.decision,  # type: ignore[arg-type]
            score=score,
            probability=probability,
            threshold=threshold,
            threshold_method=entry.threshold_method or "",
            model=entry.model_id or "",
            references=refs,
            best_reference=max(refs, key=lambda m: m.similarity),
            image_sha256=entry.image_sha256 or "",
            decision_id=entry.id,
            source=source,
            model_decision=(entry.details or {}).get("model_decision"),
            capture_ratio=((entry.details or {}).get("capture") or {}).get("ratio"),
            region=(entry.details or {}).get("region"),
            referred=(entry.details or {}).get("referred"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self) | {"references": [asdict(r) for r in self.references]}
        for key in ("model_decision", "capture_ratio", "region", "referred"):
            if out[key] is None:
                del out[key]
        return out


@dataclass(frozen=True)
class EnrolledReference:
    reference_id: int
    sha256: str
    source: str


@dataclass(frozen=True)
class EnrollResult:
    person: str
    created: bool  # the person was new
    added: tuple[EnrolledReference, ...]
    n_references: int
    threshold: float
    threshold_method: str
    is_override: bool
    model: str
    warnings: tuple[str, ...] = ()
    forced: tuple[int, ...] = ()  # ids of the references the enrolment gate refused, enrolled because forced

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "added": [asdict(r) for r in self.added],
            "warnings": list(self.warnings),
            "forced": list(self.forced),
        }


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    similarity: float
    probability: float  # that the two share a writer
    label: str  # "same writer" | "uncertain" | "different writers"
    model: str
    # scoring.capture_ratio of b against a, when the two are captured at too different scales
    # (scoring.capture_guard: "different writers" near the threshold becomes "uncertain")
    capture_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["capture_ratio"] is None:
            del out["capture_ratio"]
        return out


@dataclass(frozen=True)
class Candidate:
    """An ``identify`` result: the person's fused score against all their references, as ``verify`` computes it."""

    person: str
    score: float
    threshold: float
    decision: scoring.Decision
    best_reference: ReferenceMatch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReferenceInfo:
    reference_id: int
    sha256: str
    source: str | None
    model: str
    created_at: datetime
    forced: str | None = None  # enrolled past the enrolment gate with --force: what the gate found, who, when


@dataclass(frozen=True)
class ReferenceSimilarity:
    """A reference as ``people references`` lists it: cosine similarity to the person's other references."""

    reference_id: int
    sha256: str
    source: str | None
    created_at: datetime
    mean_similarity: float | None  # None: the person's only reference
    min_similarity: float | None
    forced: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class ReferenceRemoval:
    person: str
    reference_id: int
    n_references: int  # left
    threshold: float
    threshold_method: str
    is_override: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PersonDetail:
    person: str
    created_at: datetime
    references: tuple[ReferenceInfo, ...]
    threshold: float | None
    threshold_method: str | None
    is_override: bool
    threshold_set_at: datetime | None
    capture_scale: float | None = None  # the references' median ink scale (scoring.capture_guard); None: not yet stored
    capture_stroke: float | None = None  # the references' median stroke width in scan pixels (imaging.InkCapture)
    min_references: int = 0  # references needed before any automatic accept or reject
    automatic: bool = True  # may decisions about this person be accept or reject, or is each one refer?
    refer_reason: str | None = None  # why not (scoring.reference_hygiene)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        out["threshold_set_at"] = self.threshold_set_at.isoformat() if self.threshold_set_at else None
        out["references"] = [asdict(r) | {"created_at": r.created_at.isoformat()} for r in self.references]
        return out


@dataclass(frozen=True)
class ThresholdChange:
    person: str
    threshold: float
    threshold_method: str
    is_override: bool


@dataclass(frozen=True)
class RemoveResult:
    person: str
    n_references: int
    erasure: Erasure | None = None  # what became of the removed bytes in the database files

    def to_dict(self) -> dict[str, Any]:
        return {"person": self.person, "n_references": self.n_references} | (
            self.erasure.to_dict() if self.erasure is not None else {}
        )


@dataclass(frozen=True)
class ReembedResult:
    model: str
    n_references: int
    n_persons: int
    previous_models: dict[str, int]
    overrides_cleared: tuple[str, ...]
    n_refitted: int = 0  # persons whose scorer was refitted to the model's scoring (references unchanged)


@dataclass(frozen=True)
class IndexReport:
    """SQL and index agree when both fingerprints (count + checksum of the sorted ids) and vectors match."""

    model: str
    path: Path
    sql: Fingerprint
    index: Fingerprint | None  # None: no readable index file
    consistent: bool
    problem: str | None = None
