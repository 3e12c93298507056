"""The vault: enroll, verify, compare, identify, people, reembed. Owns SQL <-> index consistency.

SQL is the source of truth; the FAISS index is a cache rebuilt from SQL whenever it disagrees. Every
write happens in one transaction (all-or-nothing) and images are read, checked and embedded before any
transaction starts, so a bad input leaves the database untouched. Scoring is delegated to
:mod:`sigvault.scoring`, the same code ``sigvault evaluate`` measures.

:class:`Vault` is the facade; the parts with a job of their own live beside it: the result types in
:mod:`sigvault.results`, re-embedding with a new model in :mod:`sigvault.reembed`, and keeping the FAISS index
files in line with SQL in :mod:`sigvault.index_sync`.

Typical use::

    with Vault.open(Settings.resolve()) as vault:
        vault.enroll("alice", ["ref1.png", "ref2.png", "ref3.png"])
        result = vault.verify("alice", "cheque-0042.png")
        print(result.decision, result.probability)
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sigvault import config, imaging, scoring
from sigvault.db import decision_log, queries
from sigvault.db.engine import check_schema, database_error, reclaim_space, transaction
from sigvault.errors import (
    DecisionNotFoundError,
    DuplicateReferenceError,
    InvalidPersonIdError,
    ModelMismatchError,
    NotEnoughReferencesError,
    PersonNotFoundError,
    ReferenceNotFoundError,
    SigvaultError,
    SuspectReferenceError,
    UsageError,
)
from sigvault.index_sync import IndexSync
from sigvault.results import (
    COMPARE_LABELS,
    Candidate,
    Comparison,
    EnrolledReference,
    EnrollResult,
    IndexReport,
    PersonDetail,
    ReembedResult,
    ReferenceInfo,
    ReferenceMatch,
    ReferenceRemoval,
    ReferenceSimilarity,
    RemoveResult,
    ThresholdChange,
    Verification,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from sigvault.documents import DocumentOptions
    from sigvault.embedder import Embedder
    from sigvault.erasure import Erasure
    from sigvault.index import VectorIndex
    from sigvault.reembed import ReembedProgress

Source = Path | str | bytes
MODEL_BATCH = 32  # canvases the model embeds per call (bounds its working memory)
VERIFY_BATCH = 32  # questioned items per verify_many transaction, by default
PERSON_ID_MAX = 200
IDENTIFY_NEIGHBOURS_PER_RESULT = 10  # FAISS neighbours fetched per requested identify result



@dataclass(frozen=True)
class Prepared:
    """A questioned image read, hashed and preprocessed by :func:`prepare` (picklable, so it can be made
    in another process). ``spec`` is the preprocessing it was made with."""

    name: str
    sha256: str
    canvas: np.ndarray  # float32 (spec.canvas_height, spec.canvas_width)
    spec: imaging.PreprocessSpec
    capture: imaging.InkCapture  # how the scan captured its ink (scoring.capture_guard)
    # the zone of a whole document that was compared ({"x", "y", "w", "h", "how", "layout"}), None: the image whole
    region: dict[str, Any] | None = None


def prepare(
    source: Source,
    name: str | None = None,
    spec: imaging.PreprocessSpec = imaging.DEFAULT_SPEC,
    limits: imaging.ImageLimits = imaging.DEFAULT_LIMITS,
    *,
    page: int | None = None,
    zone: DocumentOptions | None = None,
) -> Prepared:
    """Read an image, hash its exact bytes and preprocess it to the model canvas: the part of
    :meth:`Vault.verify` that needs neither the model nor the database. A module-level function so that a
    process pool can run it (``audit`` does); pass the result as :attr:`VerifyItem.prepared`. ``page``: that
    page of a multi-page TIFF, hashed and read as :func:`imaging.page_png` gives it (as ``verify --page``).
    ``zone``: the signature zone of a whole document (``--region``, ``--layout``, ``--locate``), cut out, hashed
    and read as :func:`sigvault.documents.signature_zone` gives it (as ``verify --region``), its box in ``region``.

    Raises:
        ImageError (and subclasses): the image cannot be used; the message names it.
    """
    if name is None:
        name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    region = None
    if zone is not None and zone.active:
        from sigvault.documents import signature_zone

        source, region = signature_zone(source, zone, home=Path("."), limits=limits, page=page, name=name)
    elif page is not None:
        source = imaging.page_png(source, page, name=name, limits=limits)
    if page is not None:
        name = imaging.page_name(name, page)
    data = imaging.read_bytes(source, name, limits)
    canvas, capture = imaging.preprocess_measured(imaging.read_image(data, name=name, limits=limits), spec, name=name)
    return Prepared(name, hashlib.sha256(data).hexdigest(), canvas, spec, capture, region)


#: A per-item decision rule: (score, threshold, calibrated probability) -> final decision.
DecisionRule = Callable[[float, float, float], str]


@dataclass(frozen=True)
class VerifyItem:
    """One questioned signature for :meth:`Vault.verify_many`. ``details`` is logged with the decision.

    ``prepared``: the outcome of :func:`prepare` for this item made elsewhere (e.g. in a worker process),
    or the :class:`SigvaultError` it raised; ``source`` is then not read again. ``decide``: a decision
    rule (e.g. an amount-aware policy) that turns the model's score into the final decision; the log
    records that final decision, with the model's own in ``details["model_decision"]``.
    """

    person: str
    source: Source
    name: str | None = None
    details: dict[str, Any] | None = None
    prepared: Prepared | SigvaultError | None = None
    decide: DecisionRule | None = None
    operator: str | None = None  # who asked, when not the vault's operator (an HTTP key: ``api-key:NAME``)


@dataclass(frozen=True)
class LogOnce:
    """Log each item of a :meth:`Vault.verify_many` call at most once, even when the call is repeated.

    An item is known by ``details[key]`` together with ``scope`` (e.g. an audit's id and the row number). Under
    the decision log's head lock, just before appending, the entries written after ``after`` are searched for
    the batch's items (:func:`sigvault.db.decision_log.logged_rows`); an item already logged is not appended
    again and its stored entry is its result. A task that an engine retries after its worker died, having
    committed some of its batches, thus logs every decision exactly once.
    """

    after: int  # the decision log head when the work started: its entries come after
    scope: dict[str, Any]  # details every entry of this work carries, e.g. {"audit": audit_id}
    key: str = "row"  # the details field that tells the items apart within the scope


@dataclass(frozen=True)
class _LoadedImage:
    name: str
    data: bytes
    sha256: str
    canvas: np.ndarray
    capture: imaging.InkCapture  # how the scan captured its ink (imaging.measure_capture)
    views: np.ndarray | None = None  # (len(scoring.views), H, W): the canvases of its views, for enrolment


#: the threshold row's details that keep the references' median capture (scoring.capture_guard)
_CAPTURE_KEYS = {"capture_scale", "capture_stroke"}


def _capture_details(capture: imaging.InkCapture) -> dict[str, float]:
    """The references' median capture as the threshold row's details store it."""
    return {"capture_scale": capture.scale, "capture_stroke": capture.stroke}


def _stored_capture(details: dict[str, Any]) -> imaging.InkCapture:
    """The references' median capture from a threshold row's details (:func:`_capture_details`)."""
    return imaging.InkCapture(float(details["capture_scale"]), float(details["capture_stroke"]))



@dataclass(frozen=True)
class _PersonRefs:
    """A person's references as scoring needs them, read once per transaction."""

    person_id: str
    rows: list[queries.ReferenceRow]
    vectors: np.ndarray
    threshold: queries.ThresholdRow
    scorer: scoring.PersonScorer
    capture: imaging.InkCapture  # the references' median capture (scoring.capture_guard)


# ------------------------------------------------------------------------------------------- person ids


def normalize_person_id(raw: str) -> str:
    """The canonical form of a person id: NFC-normalised, validated.

    Raises:
        InvalidPersonIdError: empty, blank, padded with spaces, longer than 200 characters, or containing a
            control character or a path separator.
    """
    value = unicodedata.normalize("NFC", raw)
    shown = repr(value if len(value) <= 40 else value[:40] + "...")
    if value.strip() == "":
        raise InvalidPersonIdError(f"person id {shown} is empty; give a name or customer number")
    if len(value) > PERSON_ID_MAX:
        raise InvalidPersonIdError(
            f"person id {shown} is {len(value)} characters long, the limit is {PERSON_ID_MAX}; use a shorter id"
        )
    if value != value.strip():
        raise InvalidPersonIdError(f"person id {shown} starts or ends with spaces; remove them")
    for ch in value:
        if ch in "/\\":
            raise InvalidPersonIdError(f"person id {shown} contains a path separator {ch!r}; remove it")
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            raise InvalidPersonIdError(f"person id {shown} contains the control character U+{ord(ch):04X}; remove it")
    return value


def log_filter(
    *, person: str | None = None, kinds: Sequence[str] = (), since: str | None = None, until: str | None = None
) -> decision_log.LogFilter:
    """The filter of ``log export``: a person id, log entry kinds (:data:`decision_log.KINDS`), and UTC dates
    ``YYYY-MM-DD`` (``since`` from its start, ``until`` to its end, both included).

    Raises:
        UsageError: an unknown kind, a malformed date, or ``since`` after ``until``; the message names it.
    """
    from datetime import UTC, date, datetime, timedelta

    unknown = [k for k in kinds if k not in decision_log.KINDS]
    if unknown:
        raise UsageError(f"--kind {unknown[0]!r} is not a log entry kind; use one of {', '.join(decision_log.KINDS)}")

    def day(option: str, value: str | None) -> datetime | None:
        if value is None:
            return None
        try:
            d = date.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(f"{option} {value!r} is not a date; write it as YYYY-MM-DD (UTC)") from None
        return datetime(d.year, d.month, d.day, tzinfo=UTC)

    start, end = day("--since", since), day("--until", until)
    if end is not None:
        end += timedelta(days=1)  # --until names the last day included
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--since {since} is after --until {until}; nothing could match")
    return decision_log.LogFilter(
        person_id=normalize_person_id(person) if person is not None else None,
        kinds=tuple(dict.fromkeys(kinds)),
        since=start,
        until=end,
    )


# ------------------------------------------------------------------------------------------------ vault


def upgrade_database(settings: config.Settings) -> tuple[str | None, str | None]:
    """``sigvault db upgrade``: bring the schema to head; returns (revision before, revision after)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from sigvault.db.engine import make_engine, upgrade

    engine = make_engine(settings.database_url)
    try:
        return upgrade(engine)
    except CommandError as exc:  # e.g. a revision this sigvault does not know: written by a newer one
        raise SigvaultError(
            f"cannot upgrade database {engine.url.render_as_string(hide_password=True)}: {exc}; "
            "install the sigvault version that wrote it"
        ) from None
    except DBAPIError as exc:
        raise database_error(engine, exc) from exc
    finally:
        engine.dispose()


class Vault:
    """The vault over one database and one home directory (for the index cache).

    Args:
        engine: a SQLAlchemy engine whose schema is at head (see :meth:`open`).
        home: the vault's home; index files go in ``home/index``.
        embedder: the embedder, or a zero-argument function that loads it the first time it is needed
            (commands such as ``people list`` or ``log verify`` never load the model).
        limits: image size limits.
        operator, reason: recorded with every log entry this vault writes (settings' ``operator``/``reason``).
        min_references: references a person needs before any automatic accept or reject (settings'
            ``min_references``); None: the model card's ``scoring.min_references``.
    """

    def __init__(
        self,
        engine: Engine,
        home: Path,
        embedder: Embedder | Callable[[], Embedder],
        limits: imaging.ImageLimits = imaging.DEFAULT_LIMITS,
        *,
        operator: str | None = None,
        reason: str | None = None,
        min_references: int | None = None,
    ) -> None:
        self.engine = engine
        self.home = Path(home)
        self.limits = limits
        self.operator = operator
        self.reason = reason
        self._min_references = min_references
        self._embedder: Embedder | None = None
        self._load_embedder: Callable[[], Embedder] | None = None
        if hasattr(embedder, "embed"):
            self._embedder = embedder  # type: ignore[assignment]
        else:
            self._load_embedder = embedder
        self._indexes = IndexSync(engine, self.home / config.INDEX_DIRNAME)

    @classmethod
    def open(cls, settings: config.Settings, *, embedder: Embedder | None = None) -> Vault:
        """Open the vault the settings describe, refusing a stale schema.

        A brand-new, empty SQLite database is initialised on first use; any other database must be
        upgraded explicitly with ``sigvault db upgrade``.
        """
        from sigvault.db.engine import make_engine

        engine = make_engine(settings.database_url)
        try:
            check_schema(engine, auto_init=engine.dialect.name == "sqlite")
        except BaseException:
            engine.dispose()
            raise

        def load() -> Embedder:
            from sigvault.embedder import load_embedder

            return load_embedder(settings.model)

        return cls(
            engine,
            settings.home,
            embedder if embedder is not None else load,
            settings.image_limits(),
            operator=settings.operator,
            reason=settings.reason,
            min_references=settings.min_references,
        )

    def close(self) -> None:
        """Release database connections (SQLite then checkpoints and removes its WAL file)."""
        self.engine.dispose()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            assert self._load_embedder is not None
            self._embedder = self._load_embedder()
        return self._embedder

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def min_references(self) -> int:
        """References a person needs before any automatic accept or reject."""
        return self._min_references if self._min_references is not None else self.embedder.scoring.min_references

    def _event(
        self,
        conn: Connection,
        kind: str,
        person_id: str,
        *,
        operator: str | None = None,
        details: dict[str, Any] | None = None,
        threshold: float | None = None,
    ) -> None:
        """Append a state-change event to the decision log inside the change's own transaction, with who asked
        (``operator``, else the vault's) and the vault's reason."""
        entry = decision_log.event(
            kind,
            person_id,
            operator=operator or self.operator,
            reason=self.reason,
            details=details,
            threshold=threshold,
            model_id=self._embedder.model_id if self._embedder is not None else None,
        )
        decision_log.append(conn, [entry])

    @property
    def index_path(self) -> Path:
        return config.index_path(self.home / config.INDEX_DIRNAME, self.model_id)

    # -------------------------------------------------------------------------------------- enroll

    def enroll(
        self,
        person: str,
        sources: Sequence[Source],
        *,
        names: Sequence[str] | None = None,
        force: bool = False,
        operator: str | None = None,
    ) -> EnrollResult:
        """Add reference signatures for a person (created if new), all or nothing, and log it.

        Every image is read, checked and embedded first; if any fails nothing is written and the error
        names the file. An image whose bytes are already enrolled, for this person or another, is refused.
        The enrolment gate scores each new reference against the person's other references (those stored and
        the rest of the batch) with the scorer fitted on them against the model's cohort: one that scores
        more than ``scoring.gate_margin`` below their threshold (another person's signature, an imitation, a
        blank, a stamp) is refused, unless ``force``: it is then enrolled, reported in ``warnings`` and in
        the log event's ``forced`` list (with the vault's reason). A reference captured at another resolution
        than the others is reported in ``warnings`` (``scoring.capture_mismatch``). The person's threshold is
        recomputed in the same transaction unless an override is set, and an ``enroll`` event (reference ids,
        SHA-256s, the new threshold; ``operator``, else the vault's) is appended to the decision log in it.
        SQL is committed first, then the index is updated.

        ``names``: what to call each source in messages and store as its source name (uploaded bytes have no
        path); by default a path's own name.

        Raises:
            InvalidPersonIdError, UsageError, ImageError, DuplicateReferenceError, SuspectReferenceError,
            ModelMismatchError.
        """
        person_id = normalize_person_id(person)
        if not sources:
            raise UsageError("no image given; name at least one reference image to enroll")
        if names is not None and len(names) != len(sources):
            raise ValueError(f"{len(names)} names for {len(sources)} sources")
        loaded = self._load_all(sources, names)
        first_name: dict[str, str] = {}
        for item in loaded:
            if item.sha256 in first_name:
                raise DuplicateReferenceError(
                    f"{item.name}: same image as {first_name[item.sha256]}; give each reference once"
                )
            first_name[item.sha256] = item.name
        vectors, new_views = self._embed_with_views(loaded)
        embedder = self.embedder
        from sqlalchemy.exc import IntegrityError

        try:
            with transaction(self.engine, write=True) as conn:
                self._require_model(conn)
                row, created = self._person_for_update(conn, person_id)
                refs, blobs = queries.person_references(conn, row.pk)
                enrolled = {r.sha256: r.id for r in refs}
                for item in loaded:
                    if item.sha256 in enrolled:
                        raise DuplicateReferenceError(
                            f"{item.name}: already enrolled for {person_id!r} (reference "
                            f"{enrolled[item.sha256]}); nothing was enrolled"
                        )
                elsewhere = queries.references_by_sha256(conn, [item.sha256 for item in loaded])
                for item in loaded:
                    if item.sha256 in elsewhere:
                        owner, ref_id = elsewhere[item.sha256]
                        raise DuplicateReferenceError(
                            f"{item.name}: the same image is already enrolled for {owner!r} (reference {ref_id}); "
                            "one scan is one person's reference only; nothing was enrolled"
                        )
                existing = queries.decode_vectors(blobs, embedder.dim)
                old_views, old_captures = self._stored_derived(conn, refs)
                views = None if new_views is None or old_views is None else np.concatenate([old_views, new_views])
                captures = old_captures + [item.capture for item in loaded]
                fits = self._svm_fits()
                suspects = self._gate(existing, vectors, fits, views)
                if suspects and not force:
                    j, score, threshold_value = suspects[0]
                    more = f" ({len(suspects) - 1} more refused too)" if len(suspects) > 1 else ""
                    raise SuspectReferenceError(
                        f"{loaded[j].name}: unlike {person_id!r}'s other references (score {score:.3f}, their "
                        f"threshold {threshold_value:.3f}): another person's signature, an imitation, a blank or a "
                        f"stamp?{more} Nothing was enrolled; enrol it anyway with --force (and --reason)"
                    )
                warnings = [
                    f"{loaded[j].name}: unlike {person_id!r}'s other references (score {score:.3f}, their threshold "
                    f"{threshold_value:.3f}); enrolled because forced"
                    for j, score, threshold_value in suspects
                ]
                warnings += self._capture_warnings(person_id, captures, [i.name for i in loaded])
                added = tuple(
                    EnrolledReference(
                        queries.insert_reference(
                            conn,
                            person_pk=row.pk,
                            sha256=item.sha256,
                            source_name=_display_name(item.name),
                            model_id=embedder.model_id,
                            embedding=queries.encode_vector(vec),
                            image=item.data,
                        ),
                        item.sha256,
                        item.name,
                    )
                    for item, vec in zip(loaded, vectors, strict=True)
                )
                threshold = self._refresh_threshold(
                    conn, row, np.vstack([existing, vectors]), views, captures, fits=fits
                )
                forced = [
                    {
                        "reference_id": added[j].reference_id,
                        "source": _display_name(loaded[j].name),
                        "score": score,
                        "threshold": threshold_value,
                    }
                    for j, score, threshold_value in suspects
                ]
                self._event(
                    conn,
                    "enroll",
                    person_id,
                    operator=operator,
                    threshold=threshold.threshold,
                    details={
                        "created": created,
                        "references": [
                            {"reference_id": a.reference_id, "sha256": a.sha256, "source": _display_name(a.source)}
                            for a in added
                        ],
                        "n_references": len(refs) + len(added),
                        "threshold_method": threshold.threshold_method,
                        "is_override": threshold.is_override,
                        **({"forced": forced} if forced else {}),
                    },
                )
        except IntegrityError as exc:  # another process enrolled the same image at the same moment
            raise DuplicateReferenceError(
                f"an image given is already enrolled for {person_id!r}; nothing was enrolled"
            ) from exc
        warnings += self._update_index_after_commit(np.array([a.reference_id for a in added]), vectors)
        return EnrollResult(
            person=person_id,
            created=created,
            added=added,
            n_references=len(refs) + len(added),
            threshold=threshold.threshold,
            threshold_method=threshold.threshold_method,
            is_override=threshold.is_override,
            model=embedder.model_id,
            warnings=tuple(warnings),
            forced=tuple(added[j].reference_id for j, _, _ in suspects),
        )

    def _person_for_update(self, conn: Connection, person_id: str) -> tuple[queries.PersonRow, bool]:
        """The person's row, created if absent, locked until commit."""
        from sqlalchemy.exc import IntegrityError

        row = queries.get_person(conn, person_id, lock=True)
        if row is not None:
            return row, False
        try:
            with conn.begin_nested():
                queries.create_person(conn, person_id)
            created = True
        except IntegrityError:  # created concurrently by another process
            created = False
        row = queries.get_person(conn, person_id, lock=True)
        assert row is not None
        return row, created

    def _svm_fits(self) -> scoring.SvmFits | None:
        """A memo of SVM fits for one enrolment (wd-svm scoring only)."""
        embedder = self.embedder
        if embedder.scoring.method != "wd-svm" or embedder.cohort is None:
            return None
        return scoring.SvmFits(embedder.cohort, embedder.scoring)

    def _gate(
        self,
        existing: np.ndarray,
        new: np.ndarray,
        fits: scoring.SvmFits | None = None,
        views: np.ndarray | None = None,
    ) -> list[tuple[int, float, float]]:
        """The enrolment gate: (index in ``new``, score, threshold) of each new reference that fails
        :func:`scoring.reference_gate` against the person's other references (``existing`` and the rest of
        ``new``), scored as ``verify`` would score it by a scorer fitted on them against the model's cohort.
        ``views``: of all the references (existing, then new), when the scoring has some. A reference with no
        other to compare with passes (a person's first; ``min_references`` keeps their decisions referred)."""
        return scoring.gate_failures(existing, new, self.embedder.scoring, self.embedder.cohort, fits, views)

    def _capture_warnings(self, person_id: str, captures: Sequence[imaging.InkCapture], names: Sequence[str]) -> list[str]:
        """Warn about each new reference (the last ``len(names)`` of ``captures``) captured at another resolution
        than the person's other references: the guard compares questioned scans with their median."""
        cfg = self.embedder.scoring
        warnings = []
        first = len(captures) - len(names)
        for j, name in enumerate(names):
            others = [c for k, c in enumerate(captures) if k != first + j]
            if not others:
                continue
            ratio = scoring.capture_ratio(captures[first + j], imaging.InkCapture.median(others), cfg)
            if scoring.capture_mismatch(ratio, cfg):
                how = "coarser (ink enlarged more, strokes thinner)" if ratio > 1 else "finer (ink enlarged less, strokes thicker)"
                warnings.append(
                    f"{name}: scanned {how} than the other references of {person_id!r} (x{ratio:.2f}); enrol references "
                    "captured alike, and like the questioned scans will be"
                )
        return warnings

    def _refresh_threshold(
        self,
        conn: Connection,
        person: queries.PersonRow,
        vectors: np.ndarray,
        views: np.ndarray | None = None,
        captures: list[imaging.InkCapture] | None = None,
        *,
        keep_override: bool = True,
        fits: scoring.SvmFits | None = None,
    ) -> ThresholdChange:
        """Recompute and store the person's scorer, threshold and capture from all their references
        (``vectors``, in id order, their ``views`` and ``captures``: recomputed from the stored images when
        not given); an override, if set and ``keep_override``, keeps its value (the scorer and the capture
        are refitted all the same)."""
        cfg, cohort = self.embedder.scoring, self.embedder.cohort
        if captures is None or (cfg.views and views is None):
            views, captures = self._stored_derived(conn, queries.person_references(conn, person.pk)[0])
        scorer = {
            **scoring.person_scorer(vectors, cfg, cohort, fits, views).to_json(),
            "cohort": self.embedder.cohort_id,
        }
        capture = _capture_details(imaging.InkCapture.median(captures))
        current = queries.get_threshold(conn, person.pk)
        if keep_override and current is not None and current.is_override:
            queries.put_threshold(
                conn,
                person.pk,
                value=current.value,
                method=current.method,
                n_references=int(vectors.shape[0]),
                details={**current.details, "scorer": scorer, **capture},
                model_id=self.model_id,
                is_override=True,
                set_at=current.set_at,
            )
            return ThresholdChange(person.person_id, current.value, current.method, True)
        t = scoring.person_threshold(vectors, cfg, cohort, fits, views)
        queries.put_threshold(
            conn,
            person.pk,
            value=t.value,
            method=t.method,
            n_references=t.n_references,
            details={"loo_mean": t.loo_mean, "loo_std": t.loo_std, "scorer": scorer, **capture},
            model_id=self.model_id,
            is_override=False,
        )
        return ThresholdChange(person.person_id, t.value, t.method, False)

    def _rule_is_current(self, threshold: queries.ThresholdRow) -> bool:
        """Was the stored scorer made by the loaded model's scoring method, cohort and views, and is the
        references' capture stored? (Rows written before scorers were stored count as cosine, before views as
        without, before blurred views as without those; rows written before the capture guard, or before it
        measured strokes, are refitted.)"""
        stored = threshold.details.get("scorer") or {"method": "cosine"}
        cfg = self.embedder.scoring
        return bool(
            threshold.model_id == self.model_id
            and stored.get("method") == cfg.method
            and stored.get("cohort") == self.embedder.cohort_id
            and scoring.PersonScorer.stored_views(stored) == cfg.views
            and _CAPTURE_KEYS.issubset(threshold.details)
        )

    # -------------------------------------------------------------------------------------- verify

    def verify(
        self,
        person: str,
        source: Source,
        *,
        name: str | None = None,
        details: dict[str, Any] | None = None,
        operator: str | None = None,
    ) -> Verification:
        """Compare a questioned signature with the person's references only, decide and log the decision
        (with ``details``, e.g. the HTTP service's ``{"api_key": name}``, and ``operator``, else the vault's).

        Raises:
            InvalidPersonIdError, ImageError, PersonNotFoundError, ModelMismatchError.
        """
        item = VerifyItem(person, source, name, details, operator=operator)
        result = self.verify_many([item], kind="verify")[0]
        if isinstance(result, SigvaultError):
            raise result
        return result

    def verify_many(
        self,
        items: Sequence[VerifyItem],
        *,
        kind: Literal["verify", "audit"] = "audit",
        batch_size: int = VERIFY_BATCH,
        once: LogOnce | None = None,
    ) -> list[Verification | SigvaultError]:
        """Verify many questioned signatures, embedding them in batches; one transaction per batch.

        A failing item (bad image, unknown person, ...) yields its error in its place and the batch goes
        on. Each decision is appended to the decision log with ``kind`` and the item's ``details``.
        Items may come already prepared (:func:`prepare`, e.g. in worker processes) and may carry a
        decision rule (``VerifyItem.decide``); with neither, the result is exactly :meth:`verify`'s.
        ``once``: items already logged (a repeated call) are not logged again; their stored entry is their
        result (:class:`LogOnce`).
        """
        results: list[Verification | SigvaultError] = []
        for start in range(0, len(items), batch_size):
            results.extend(self._verify_batch(items[start : start + batch_size], kind, once))
        return results

    def _verify_batch(
        self, items: Sequence[VerifyItem], kind: str, once: LogOnce | None = None
    ) -> list[Verification | SigvaultError]:
        out: list[Verification | SigvaultError | None] = [None] * len(items)
        ready: list[tuple[int, str, Prepared | _LoadedImage]] = []
        spec = self.embedder.spec
        for i, item in enumerate(items):
            try:
                person_id = normalize_person_id(item.person)
                if isinstance(item.prepared, SigvaultError):
                    raise item.prepared
                if item.prepared is not None and item.prepared.spec != spec:
                    raise UsageError(
                        f"{item.prepared.name}: prepared with another preprocessing than the loaded model's"
                    )
                ready.append((i, person_id, item.prepared or self._load(item.source, item.name)))
            except SigvaultError as exc:
                out[i] = exc
        if ready:
            vectors = self._embed([loaded.canvas for _, _, loaded in ready])
            cfg = self.embedder.scoring
            with transaction(self.engine, write=True) as conn:
                people: dict[str, _PersonRefs | SigvaultError] = {}
                judged: list[tuple[int, Prepared | _LoadedImage, _PersonRefs, float, list[ReferenceMatch]]] = []
                for (i, person_id, loaded), query in zip(ready, vectors, strict=True):
                    if person_id not in people:
                        try:
                            people[person_id] = self._person_refs(conn, person_id, heal=True)
                        except SigvaultError as exc:
                            people[person_id] = exc
                    refs = people[person_id]
                    if isinstance(refs, SigvaultError):
                        out[i] = refs
                        continue
                    score, matches = self._score(query, refs)
                    judged.append((i, loaded, refs, score, matches))
                entries = []
                for i, loaded, refs, score, matches in judged:
                    threshold = refs.threshold.value
                    probability = scoring.probability(score, threshold, cfg)
                    ratio = scoring.capture_ratio(loaded.capture, refs.capture, cfg)
                    decision = scoring.capture_guard(scoring.decide(score, threshold, cfg), score, threshold, ratio, cfg)
                    details = items[i].details
                    if scoring.capture_mismatch(ratio, cfg):
                        capture = {
                            "scale": loaded.capture.scale,
                            "reference_scale": refs.capture.scale,
                            "stroke": loaded.capture.stroke,
                            "reference_stroke": refs.capture.stroke,
                            "ratio": ratio,
                        }
                        details = {**(details or {}), "capture": capture}
                    rule = items[i].decide
                    if rule is not None:
                        details = {**(details or {}), "model_decision": decision}
                        decision = scoring.capture_guard(rule(score, threshold, probability), score, threshold, ratio, cfg)
                    why = scoring.reference_hygiene(
                        len(refs.rows), threshold, refs.threshold.is_override, cfg, self.min_references
                    )
                    if why is not None:  # too few references, or an implausible threshold: a person decides
                        details = {"model_decision": decision, **(details or {}), "referred": why}
                        decision = "refer"
                    entries.append(
                        decision_log.NewEntry(
                            kind=kind,
                            person_id=refs.person_id,
                            image_sha256=loaded.sha256,
                            score=score,
                            threshold=threshold,
                            threshold_method=refs.threshold.method,
                            decision=decision,
                            probability=probability,
                            model_id=self.model_id,
                            references_used=[asdict(m) for m in matches],
                            details=details,
                            operator=items[i].operator or self.operator,
                            reason=self.reason,
                        )
                    )
                logged: dict[Any, decision_log.Entry] = {}
                if once is not None and entries:
                    decision_log.head(conn, lock=True)  # appenders wait here: nobody logs these items meanwhile
                    logged = decision_log.logged_rows(
                        conn,
                        after=once.after,
                        person_ids=[e.person_id for e in entries],
                        scope=once.scope,
                        key=once.key,
                    )
                # each judged item's earlier entry (``once``: logged by an earlier call), or None: log it now
                earlier = [logged.get((e.details or {}).get(once.key)) if once else None for e in entries]
                stored = iter(decision_log.append(conn, [e for e, old in zip(entries, earlier) if old is None]))
            for (i, loaded, *_), old in zip(judged, earlier, strict=True):
                out[i] = Verification.from_entry(old if old is not None else next(stored), loaded.name)
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    def _person_refs(self, conn: Connection, person_id: str, *, heal: bool = False) -> _PersonRefs:
        """The person's reference vectors, threshold and scorer, checked to come from the loaded model.

        A scorer stored for another scoring method or cohort (the model card changed) is refitted from the
        references, and with ``heal`` (a write transaction) stored again with a recomputed threshold."""
        row = queries.get_person(conn, person_id)
        if row is None:
            raise PersonNotFoundError(f"person {person_id!r} is not enrolled; see `sigvault people list`")
        refs, blobs = queries.person_references(conn, row.pk)
        threshold = queries.get_threshold(conn, row.pk)
        if not refs or threshold is None:
            raise NotEnoughReferencesError(
                f"person {person_id!r} has no references; enroll some with `sigvault enroll`"
            )
        other = sorted({r.model_id for r in refs} - {self.model_id})
        if other:
            raise ModelMismatchError(
                f"the references of {person_id!r} were made by model {other[0]}, but the loaded model is "
                f"{self.model_id}; run `sigvault reembed`"
            )
        vectors = queries.decode_vectors(blobs, self.embedder.dim)
        cfg = self.embedder.scoring
        if not self._rule_is_current(threshold):
            if heal:
                self._refresh_threshold(conn, row, vectors)
                threshold = queries.get_threshold(conn, row.pk)
                assert threshold is not None
            else:
                views, captures = self._stored_derived(conn, refs)
                cohort = self.embedder.cohort
                t = threshold if threshold.is_override else scoring.person_threshold(vectors, cfg, cohort, None, views)
                scorer = scoring.person_scorer(vectors, cfg, cohort, None, views)
                threshold = replace(threshold, value=t.value, method=t.method)
                return _PersonRefs(person_id, refs, vectors, threshold, scorer, imaging.InkCapture.median(captures))
        stored = threshold.details.get("scorer") or {"method": "cosine"}
        scorer = scoring.PersonScorer.from_json(stored, vectors, cfg)
        return _PersonRefs(person_id, refs, vectors, threshold, scorer, _stored_capture(threshold.details))

    def _score(self, query: np.ndarray, refs: _PersonRefs) -> tuple[float, list[ReferenceMatch]]:
        """Fused score of a query against a person's references, and the per-reference similarities."""
        sims = scoring.similarities(query, refs.vectors)
        matches = [ReferenceMatch(r.id, r.sha256, float(s)) for r, s in zip(refs.rows, sims, strict=True)]
        return refs.scorer.score(query), matches

    # ----------------------------------------------------------------------------- compare, identify

    def compare(self, a: Source, b: Source, *, names: tuple[str, str] | None = None) -> Comparison:
        """Probability that two signatures share a writer; no enrolment needed. ``names``: what messages call
        the two (uploaded bytes have no path)."""
        name_a, name_b = names if names is not None else (None, None)
        la, lb = self._load(a, name_a), self._load(b, name_b)
        va, vb = self._embed([la.canvas, lb.canvas])
        cfg = self.embedder.scoring
        similarity = float(scoring.similarities(va, vb[np.newaxis, :])[0])
        ratio = scoring.capture_ratio(lb.capture, la.capture, cfg)
        decision = scoring.capture_guard(
            scoring.decide(similarity, cfg.compare_threshold, cfg), similarity, cfg.compare_threshold, ratio, cfg
        )
        return Comparison(
            a=la.name,
            b=lb.name,
            similarity=similarity,
            probability=float(scoring.compare_probability(similarity, cfg)),
            label=COMPARE_LABELS[decision],
            model=self.model_id,
            capture_ratio=ratio if scoring.capture_mismatch(ratio, cfg) else None,
        )

    def identify(self, source: Source, top: int = 5, *, name: str | None = None) -> list[Candidate]:
        """Who most likely signed this: the ``top`` persons by fused score, best first.

        Candidates are the owners of the nearest references in the FAISS index; each is then scored
        against all their references exactly as ``verify`` would (nothing is logged).
        """
        if top < 1:
            raise UsageError(f"--top must be at least 1, got {top}")
        query = self._embed([self._load(source, name).canvas])[0]
        with transaction(self.engine) as conn:
            self._require_model(conn)
            index = self._current_index(conn)
            _, ids = index.search(query, top * IDENTIFY_NEIGHBOURS_PER_RESULT)
            owners = queries.reference_owners(conn, ids.tolist())
            persons = list(dict.fromkeys(owners[i].person_id for i in ids.tolist() if i in owners))
            candidates = []
            for person_id in persons:
                refs = self._person_refs(conn, person_id)
                score, matches = self._score(query, refs)
                cfg = self.embedder.scoring
                why = scoring.reference_hygiene(
                    len(refs.rows), refs.threshold.value, refs.threshold.is_override, cfg, self.min_references
                )
                candidates.append(
                    Candidate(
                        person=person_id,
                        score=score,
                        threshold=refs.threshold.value,
                        decision="refer" if why else scoring.decide(score, refs.threshold.value, cfg),
                        best_reference=max(matches, key=lambda m: m.similarity),
                    )
                )
        candidates.sort(key=lambda c: (-c.score, c.person))
        return candidates[:top]

    # -------------------------------------------------------------------------------------- people

    def people(self) -> list[queries.PersonSummary]:
        with transaction(self.engine) as conn:
            return queries.list_persons(conn)

    def person(self, person: str) -> PersonDetail:
        """A person's references and threshold, whether their decisions may be automatic (and if not, why:
        :func:`scoring.reference_hygiene`), and which references were enrolled past the gate with ``--force``
        (from the log's ``enroll`` events)."""
        person_id = normalize_person_id(person)
        with transaction(self.engine) as conn:
            row = self._get_person(conn, person_id)
            refs, _ = queries.person_references(conn, row.pk)
            threshold = queries.get_threshold(conn, row.pk)
            forced = self._forced_references(conn, person_id, {r.id for r in refs})
        why = None
        if threshold is not None:
            why = scoring.reference_hygiene(
                len(refs), threshold.value, threshold.is_override, self.embedder.scoring, self.min_references
            )
        return PersonDetail(
            person=row.person_id,
            created_at=row.created_at,
            references=tuple(
                ReferenceInfo(r.id, r.sha256, r.source_name, r.model_id, r.created_at, forced.get(r.id)) for r in refs
            ),
            threshold=threshold.value if threshold else None,
            threshold_method=threshold.method if threshold else None,
            is_override=bool(threshold and threshold.is_override),
            threshold_set_at=threshold.set_at if threshold else None,
            capture_scale=threshold.details.get("capture_scale") if threshold else None,
            capture_stroke=threshold.details.get("capture_stroke") if threshold else None,
            min_references=self.min_references,
            automatic=threshold is not None and why is None,
            refer_reason=why if threshold is not None else "no references",
        )

    @staticmethod
    def _forced_references(conn: Connection, person_id: str, ids: set[int]) -> dict[int, str]:
        """reference id -> what the enrolment gate found, for each of ``ids`` enrolled with ``--force``."""
        found: dict[int, str] = {}
        where = decision_log.LogFilter(person_id=person_id, kinds=("enroll",))
        for entry in decision_log.iter_entries(conn, where=where):
            for item in (entry.details or {}).get("forced", []):
                if item.get("reference_id") in ids:
                    why = f" ({entry.reason})" if entry.reason else ""
                    found[int(item["reference_id"])] = (
                        f"refused by the enrolment gate (score {item['score']:.3f}, threshold {item['threshold']:.3f}), "
                        f"enrolled with --force by {entry.operator or 'an unnamed operator'} (log entry {entry.id}){why}"
                    )
        return found

    def references(self, person: str) -> list[ReferenceSimilarity]:
        """The person's references, each with its cosine similarity to the others (mean and lowest): a
        reference far from all the others is the one to check (``people remove-reference``)."""
        person_id = normalize_person_id(person)
        with transaction(self.engine) as conn:
            row = self._get_person(conn, person_id)
            refs, blobs = queries.person_references(conn, row.pk)
            forced = self._forced_references(conn, person_id, {r.id for r in refs})
        vectors = queries.decode_vectors(blobs)
        sims = vectors @ vectors.T if len(refs) else np.zeros((0, 0))
        out = []
        for i, r in enumerate(refs):
            others = np.delete(sims[i], i) if len(refs) > 1 else np.zeros(0)
            out.append(
                ReferenceSimilarity(
                    reference_id=r.id,
                    sha256=r.sha256,
                    source=r.source_name,
                    created_at=r.created_at,
                    mean_similarity=float(others.mean()) if others.size else None,
                    min_similarity=float(others.min()) if others.size else None,
                    forced=forced.get(r.id),
                )
            )
        return out

    def set_threshold(
        self, person: str, value: float | None, *, force: bool = False, operator: str | None = None
    ) -> ThresholdChange:
        """Override the person's threshold with ``value`` (recorded as method "override"), or with None go
        back to the threshold computed from the references; either way a ``threshold-set`` or
        ``threshold-reset`` event (old and new value; ``operator``, else the vault's) is logged in the same
        transaction. A value outside the range thresholds take on calibration writers
        (``scoring.threshold_range``, else the score's whole range) needs ``force``; one outside the score's
        whole range is always refused.

        Raises:
            UsageError: the value is outside those ranges (the message says which and whether --force helps).
        """
        person_id = normalize_person_id(person)
        cfg = self.embedder.scoring
        lo, hi, what = (-1.0, 1.0, "a cosine similarity score") if cfg.method == "cosine" else (
            -10.0, 10.0, f"this model's {cfg.method} scores"
        )
        if value is not None and not (lo <= value <= hi):
            raise UsageError(f"threshold {value} is outside [{lo:g}, {hi:g}], the range of {what}")
        if value is not None and cfg.threshold_range is not None and not force:
            t_lo, t_hi = cfg.threshold_range
            if not t_lo <= value <= t_hi:
                raise UsageError(
                    f"threshold {value} is outside [{t_lo:.4f}, {t_hi:.4f}], the range of thresholds seen on "
                    "calibration writers; pass --force (and --reason) to set it all the same"
                )
        with transaction(self.engine, write=True) as conn:
            row = self._get_person(conn, person_id, lock=True)
            refs = self._person_refs(conn, person_id, heal=True)
            old = {"value": refs.threshold.value, "method": refs.threshold.method, "is_override": refs.threshold.is_override}
            if value is None:
                change = self._refresh_threshold(conn, row, refs.vectors, keep_override=False)
                self._event(
                    conn,
                    "threshold-reset",
                    person_id,
                    operator=operator,
                    threshold=change.threshold,
                    details={"old": old, "new": {"value": change.threshold, "method": change.threshold_method}},
                )
                return change
            queries.put_threshold(
                conn,
                row.pk,
                value=value,
                method="override",
                n_references=len(refs.rows),
                details={
                    "replaced": {"value": refs.threshold.value, "method": refs.threshold.method},
                    "scorer": refs.threshold.details.get("scorer"),
                    **_capture_details(refs.capture),
                },
                model_id=self.model_id,
                is_override=True,
            )
            self._event(
                conn,
                "threshold-set",
                person_id,
                operator=operator,
                threshold=value,
                details={"old": old, "new": {"value": value, "method": "override"}, "forced": force},
            )
        return ThresholdChange(person_id, value, "override", True)

    def remove(self, person: str, *, erase_wait: float = 5.0, operator: str | None = None) -> RemoveResult:
        """Erase the person: rows, reference images, vectors, threshold and index entries; a
        ``person-remove`` event (the reference ids and SHA-256s; ``operator``, else the vault's) is logged in
        the same transaction.

        Decision log entries stay (they hold only hashes and scores). Storage is then rewritten
        (SQLite ``VACUUM``, PostgreSQL ``VACUUM FULL``) so the erased bytes are gone from the files; on
        PostgreSQL only once no older transaction can still see them (waiting up to ``erase_wait`` seconds for
        them to end): ``RemoveResult.erasure`` says whether the bytes are gone or what they wait for, which
        ``sigvault db purge`` (:meth:`purge`) completes (:mod:`sigvault.erasure`).
        """
        from sigvault.erasure import deletion_mark

        person_id = normalize_person_id(person)
        with transaction(self.engine, write=True) as conn:
            row = self._get_person(conn, person_id, lock=True)
            refs, _ = queries.person_references(conn, row.pk)
            ids = queries.delete_person(conn, row.pk)
            self._event(
                conn,
                "person-remove",
                person_id,
                operator=operator,
                details={"references": [{"reference_id": r.id, "sha256": r.sha256} for r in refs]},
            )
            mark = deletion_mark(conn)
        self._indexes.purge(np.asarray(ids, dtype=np.int64))
        erasure = self._erase_after(f"{person_id!r} was removed", mark, erase_wait)
        return RemoveResult(person_id, len(ids), erasure)

    def remove_reference(
        self,
        person: str,
        reference_id: int,
        *,
        force: bool = False,
        operator: str | None = None,
        erase_wait: float = 5.0,
    ) -> ReferenceRemoval:
        """Remove one of the person's references (row, image, vector), refit their scorer and threshold from
        the others (an override keeps its value), log a ``reference-remove`` event in the same transaction,
        then drop it from the index and compact storage as :meth:`remove` does.

        Raises:
            ReferenceNotFoundError: the person has no reference with that id.
            NotEnoughReferencesError: it would leave fewer than :attr:`min_references` references and ``force``
                is not given, or it is the person's last reference (remove the person instead).
        """
        from sigvault.erasure import deletion_mark

        person_id = normalize_person_id(person)
        with transaction(self.engine, write=True) as conn:
            row = self._get_person(conn, person_id, lock=True)
            refs, blobs = queries.person_references(conn, row.pk)
            at = next((i for i, r in enumerate(refs) if r.id == reference_id), None)
            if at is None:
                raise ReferenceNotFoundError(
                    f"{person_id!r} has no reference {reference_id}; see `sigvault people references {person_id}`"
                )
            left = len(refs) - 1
            if left == 0:
                raise NotEnoughReferencesError(
                    f"reference {reference_id} is the last of {person_id!r}; remove the person with "
                    f"`sigvault people remove {person_id}` instead"
                )
            if left < self.min_references and not force:
                raise NotEnoughReferencesError(
                    f"removing reference {reference_id} would leave {person_id!r} {left} reference(s), fewer than "
                    f"the {self.min_references} needed for automatic decisions; enrol another first, or pass --force"
                )
            self._require_model(conn)
            old = queries.get_threshold(conn, row.pk)
            queries.delete_reference(conn, reference_id)
            vectors = np.delete(queries.decode_vectors(blobs, self.embedder.dim), at, axis=0)
            change = self._refresh_threshold(conn, row, vectors)
            removed = refs[at]
            self._event(
                conn,
                "reference-remove",
                person_id,
                operator=operator,
                threshold=change.threshold,
                details={
                    "reference_id": removed.id,
                    "sha256": removed.sha256,
                    "source": removed.source_name,
                    "n_references": left,
                    "old_threshold": old.value if old is not None else None,
                    "threshold_method": change.threshold_method,
                    "is_override": change.is_override,
                    "forced": force and left < self.min_references,
                },
            )
            mark = deletion_mark(conn)
        self._indexes.purge(np.asarray([reference_id], dtype=np.int64))
        self._erase_after(f"reference {reference_id} of {person_id!r} was removed", mark, erase_wait)
        return ReferenceRemoval(
            person_id, reference_id, left, change.threshold, change.threshold_method, change.is_override
        )

    def _erase_after(self, what: str, mark: int | None, wait: float) -> Erasure:
        """Erase the bytes of the rows deleted before ``mark`` from the database files (:mod:`sigvault.erasure`),
        waiting up to ``wait`` seconds for older transactions on PostgreSQL; what was erased and what still waits."""
        from sigvault.erasure import erase_waiting

        try:
            erasure = erase_waiting(self.engine, before=mark, wait=wait)
        except SigvaultError as exc:
            raise SigvaultError(
                f"{what}, but the database could not be compacted to erase the freed bytes "
                f"({exc}); run `sigvault db purge` when the vault is idle"
            ) from exc
        return erasure

    def purge(self, *, wait: float = 0.0) -> Erasure:
        """``sigvault db purge``: erase from the database files the bytes of every row removed until now, waiting
        up to ``wait`` seconds for older transactions to end on PostgreSQL (:func:`sigvault.erasure.erase_waiting`)."""
        from sigvault.erasure import erase_waiting

        return erase_waiting(self.engine, wait=wait)

    def compact(self) -> None:
        """Rewrite the tables that hold images and vectors so that deleted bytes are physically gone."""
        reclaim_space(self.engine, ("refs", "ref_images"))


    # ------------------------------------------------------------------------------------- reembed

    def reembed(self, progress: ReembedProgress | None = None) -> ReembedResult:
        """Recompute every reference's embedding from its stored image with the loaded model, atomically
        (:mod:`sigvault.reembed`).

        Images are read, measured and embedded first, with the scoring's reference views, outside any write
        transaction; then one transaction replaces every vector and refits every threshold from them, reading
        no image. Overrides are cleared (they were set on the old model's score scale) and listed in the
        result. The old models' index files are deleted and the index is rebuilt. When every vector is the
        loaded model's already, the persons whose scorer was fitted for another scoring (method, cohort or
        views: the model's card changed, not its network) are refitted instead, in one transaction
        (``n_refitted``). ``progress`` is called with (references embedded, references in all).

        Raises:
            ImageError: a stored image cannot be used by this model (nothing changed).
        """
        from sigvault.reembed import reembed

        return reembed(self, progress)

    # --------------------------------------------------------------------------------------- index

    @property
    def _index_cache(self) -> tuple[tuple[int, int], VectorIndex] | None:
        """The index this process last brought in line with SQL (None: load it again, as a fresh process)."""
        return self._indexes.cache

    @_index_cache.setter
    def _index_cache(self, value: tuple[tuple[int, int], VectorIndex] | None) -> None:
        self._indexes.cache = value

    def check_index(self) -> IndexReport:
        """Compare the index files (base and journal) with SQL, ids and vectors, without changing anything."""
        return self._indexes.check(self.model_id, self.embedder.dim)

    def rebuild_index(self) -> IndexReport:
        """Rebuild the index files from SQL alone and save them atomically."""
        return self._indexes.rebuild(self.model_id, self.embedder.dim)

    def sync_index(self) -> int:
        """Bring this process's index in line with SQL (cheap when it already is, as after any search); returns
        how many references it holds. The HTTP service's readiness check."""
        with transaction(self.engine) as conn:
            return int(self._current_index(conn).ntotal)

    def _current_index(self, conn: Connection) -> VectorIndex:
        """The index for searching, in line with SQL."""
        return self._indexes.current(conn, self.model_id, self.embedder.dim)

    def _update_index_after_commit(self, ids: np.ndarray, vectors: np.ndarray) -> list[str]:
        """Record committed references in the index; returns a warning when it could not (repaired on next use)."""
        return self._indexes.record_added(self.model_id, self.embedder.dim, ids, vectors)

    # ---------------------------------------------------------------------------------------- log

    def log_verify(self) -> decision_log.ChainReport:
        """Check the decision log's hash chain; the report names the first bad entry."""
        with transaction(self.engine) as conn:
            return decision_log.verify_chain(conn)

    def log_entries(
        self, after: int = 0, *, where: decision_log.LogFilter | None = None
    ) -> Iterator[decision_log.Entry]:
        """The decision log entries with id > ``after``, in order (streamed inside one read transaction): all
        of them, verifications and events alike, or those ``where`` keeps (:func:`log_filter`)."""
        with transaction(self.engine) as conn:
            yield from decision_log.iter_entries(conn, after=after, where=where)

    def decision(self, decision_id: int) -> decision_log.Entry:
        """One decision log entry by id.

        Raises:
            DecisionNotFoundError: the log has no entry with that id.
        """
        with transaction(self.engine) as conn:
            entry = decision_log.get_entry(conn, decision_id)
        if entry is None:
            raise DecisionNotFoundError(f"decision {decision_id} is not in the decision log; see `sigvault log export`")
        return entry

    def log_head(self) -> int:
        """The id of the last decision log entry (0 when empty): later entries have larger ids."""
        with transaction(self.engine) as conn:
            return decision_log.head(conn)[0]

    def reference_images(self, ids: Sequence[int]) -> dict[int, bytes]:
        """The stored image bytes of the given references (absent ids are left out)."""
        with transaction(self.engine) as conn:
            return queries.reference_images(conn, ids)

    # ------------------------------------------------------------------------------------- helpers

    def _get_person(self, conn: Connection, person_id: str, *, lock: bool = False) -> queries.PersonRow:
        row = queries.get_person(conn, person_id, lock=lock)
        if row is None:
            raise PersonNotFoundError(f"person {person_id!r} is not enrolled; see `sigvault people list`")
        return row

    def _require_model(self, conn: Connection) -> None:
        """Refuse to mix models: every stored vector must come from the loaded model."""
        other = queries.other_model(conn, self.model_id)
        if other is not None:
            model, n = other
            raise ModelMismatchError(
                f"the vault holds {n} references made by model {model}, but the loaded model is "
                f"{self.model_id}; run `sigvault reembed`"
            )

    def _load(self, source: Source, name: str | None = None, *, views: bool = False) -> _LoadedImage:
        """Read an image once (its exact bytes are hashed and stored) and preprocess it; with ``views`` (for
        enrolment), also its views' canvases when the scoring has views."""
        if name is None:
            name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
        data = imaging.read_bytes(source, name, self.limits)  # the bytes imaging validated, read once
        sha256 = hashlib.sha256(data).hexdigest()
        grey = imaging.read_image(data, name=name, limits=self.limits)
        wanted = self.embedder.scoring.views if views else ()
        # the scan is shrunk once for its canvas, its capture and its views (none when no views are wanted)
        canvases, capture = imaging.preprocess_views(grey, self.embedder.spec, wanted, name=name)
        return _LoadedImage(name, data, sha256, canvases[0], capture, canvases[1:] if wanted else None)

    def _load_reference(self, source: Source, name: str | None = None) -> _LoadedImage:
        return self._load(source, name, views=True)

    def _load_all(self, sources: Sequence[Source], names: Sequence[str] | None = None) -> list[_LoadedImage]:
        """:meth:`_load_reference` of each source, in order, on two threads: decoding (Pillow), preprocessing
        (OpenCV) and hashing release the GIL, so 10 scans of 1800x800 load 1.9x faster on 2 cores (156 -> 83
        ms). The first failing source in order raises, as with a loop."""
        given = list(names) if names is not None else [None] * len(sources)
        if len(sources) < 2 or (os.cpu_count() or 1) < 2:
            return [self._load_reference(s, n) for s, n in zip(sources, given, strict=True)]
        from concurrent.futures import ThreadPoolExecutor

        _ = self.embedder.spec  # load the model before the threads ask for its preprocessing
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sigvault-load") as pool:
            return list(pool.map(self._load_reference, sources, given))

    def _embed_with_views(self, loaded: Sequence[_LoadedImage]) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings of loaded references (n, dim), and of their views (n, len(scoring.views), dim) or None
        when the scoring has none; one batched pass."""
        k = len(self.embedder.scoring.views)
        if not k:
            return self._embed([item.canvas for item in loaded]), None
        canvases = [c for item in loaded for c in (item.canvas, *item.views)]  # type: ignore[misc]
        vecs = self._embed(canvases).reshape(len(loaded), k + 1, -1)
        return vecs[:, 0], vecs[:, 1:]

    def _stored_derived(
        self, conn: Connection, refs: Sequence[queries.ReferenceRow]
    ) -> tuple[np.ndarray | None, list[imaging.InkCapture]]:
        """What stored references' images give besides their embeddings (derived data, never stored per
        reference): their views (n, len(scoring.views), dim), None when the scoring has no views, and their
        captures (``imaging.measure_capture``)."""
        spec, wanted = self.embedder.spec, self.embedder.scoring.views
        images = queries.reference_images(conn, [r.id for r in refs]) if refs else {}
        canvases: list[np.ndarray] = []
        captures: list[imaging.InkCapture] = []
        for r in refs:
            name = f"reference {r.id} ({r.source_name or 'image'})"
            grey = imaging.read_image(images[r.id], name=name, limits=self.limits)
            derived, capture = imaging.preprocess_views(grey, spec, wanted, name=name, original=False)  # one shrink
            canvases.extend(derived)
            captures.append(capture)
        if not wanted:
            return None, captures
        if not refs:
            return np.zeros((0, len(wanted), self.embedder.dim), dtype=np.float32), captures
        return self._embed(canvases).reshape(len(refs), len(wanted), -1), captures

    def _embed(self, canvases: Sequence[np.ndarray]) -> np.ndarray:
        """(n, H, W) canvases -> (n, dim) float32 L2-normalised, in batches of :data:`MODEL_BATCH`."""
        embedder = self.embedder
        if not canvases:
            return np.zeros((0, embedder.dim), dtype=np.float32)
        parts = [
            np.asarray(embedder.embed(np.stack(canvases[i : i + MODEL_BATCH])), dtype=np.float32)
            for i in range(0, len(canvases), MODEL_BATCH)
        ]
        return np.concatenate(parts)


def _display_name(name: str) -> str:
    """The file name kept with a reference (its base name only: paths can reveal more than needed)."""
    return Path(name).name[:1000] if name != "<bytes>" else name

