"""``sigvault evaluate``: measure the system on a folder of scans, honestly.

Input: a folder in the dataset layout ``<writer>/{genuine,forged}/*`` (any supported image format).

1. **One read pass.** Every image is read once (:func:`imaging.read_image`), its raw capture statistics are
   taken (:func:`probes.image_stats`), it is preprocessed with the model's spec and embedded, in batches of
   :data:`READ_PASS_BATCH`; a genuine image is also embedded in the scoring's views (turned and blurred copies,
   :func:`imaging.preprocess_views`), should it be drawn as a reference. Unreadable images, images without ink
   and exact duplicate files are skipped and listed in the report; the run goes on.
2. **S seeded splits.** Per writer, N random genuine signatures are the references. They are enrolled
   through :meth:`sigvault.vault.Vault.enroll` in a temporary store, exactly as ``sigvault enroll`` does;
   the thresholds the vault stores are the ones the deployed rule uses. Questioned items (the writer's other
   genuine signatures, all its skilled forgeries, and one genuine signature of every other writer) are
   scored by :func:`protocol.run_split` with :mod:`sigvault.scoring`, the functions ``verify`` uses. With
   ``--questioned DIR`` (``questioned_dir``), the questioned items are read from ``DIR`` instead: the same
   scans captured another way, paired by writer folder, genuine/forged and file name (:func:`_pair_questioned`),
   so that references from one scanner are measured against questioned items from another.
3. **Figures**, mean ± std over splits: EER (skilled, random; one global threshold chosen after the fact,
   the figure comparable to the literature), AUC, FRR at 1 % FAR (skilled), and the deployed rule's FRR,
   FAR (skilled, random) and refer rate with each writer's own threshold.
4. **Capture bias** (:mod:`sigvault.probes`): reference-free probes, and the shortcut test of the model:
   the skilled-forgery EER when each writer's questioned items are scored against ANOTHER writer's
   references (:func:`swapped_by_writer`, :func:`pooled_swapped`). A model that compares signatures is near 50 % there. The EER pools
   every writer's scores, so writers whose items all sit high or low against the swapped references move it
   away from 50 % with no shortcut at all; the per-writer AUC (:func:`swapped_writer_auc`, genuine above
   forged, averaged over writers) is free of that and is 0.5 for a model that compares, 1.0 for one that
   recognises the capture. Either figure past its limit (EER below 0.35, AUC above 0.75) warns
   (:func:`shortcut_warning`).

The library never prints: :func:`render_text` returns the lines the CLI shows.
"""

from __future__ import annotations

import csv
import hashlib
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np

from sigvault import imaging, metrics, probes, protocol, scoring
from sigvault.errors import ImageError, SigvaultError, UsageError

if TYPE_CHECKING:
    from sigvault.embedder import Embedder

READ_PASS_BATCH = 64  # canvases the model embeds per call in the read pass (no transaction is held meanwhile)
TARGET_FAR = 0.01  # FRR is reported at this false-accept rate on skilled forgeries
SHORTCUT_WARN_EER = 0.35  # swapped-reference skilled EER below this: the model separates without comparing
SHORTCUT_WARN_AUC = 0.75  # ...or the per-writer swapped-reference AUC above this (a comparing model is near 0.5)
DECISIONS: tuple[str, ...] = scoring.DECISIONS
FIGURE_KEYS = (
    "eer_skilled",
    "eer_random",
    "auc_skilled",
    "auc_random",
    "frr_at_far1_skilled",
    "frr",
    "far_skilled",
    "far_random",
    "refer_rate",
    "eer_skilled_swapped",
    "auc_skilled_swapped_writer",
)
FIGURE_LABELS = {
    "eer_skilled": "EER, skilled forgeries",
    "eer_random": "EER, random forgeries",
    "auc_skilled": "AUC, skilled forgeries",
    "auc_random": "AUC, random forgeries",
    "frr_at_far1_skilled": "FRR at 1% FAR, skilled",
    "frr": "deployed rule: FRR",
    "far_skilled": "deployed rule: FAR, skilled",
    "far_random": "deployed rule: FAR, random",
    "refer_rate": "deployed rule: refer rate",
    "eer_skilled_swapped": "shortcut test: skilled EER, other writer's refs",
    "auc_skilled_swapped_writer": "shortcut test: AUC per writer, other writer's refs",
}
RATE_KEYS = frozenset(FIGURE_KEYS) - {"auc_skilled", "auc_random", "auc_skilled_swapped_writer"}  # shown as %

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total); stages: "reading", "splits"."""


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Figure:
    """One figure over the splits: mean, standard deviation (population, 0 for one split), per-split values.

    NaN (JSON null) when the data cannot give it (no skilled forgeries, say)."""

    mean: float
    std: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Figure:
        arr = np.asarray(values, dtype=np.float64)
        ok = arr[np.isfinite(arr)]
        if not ok.size:
            return cls(float("nan"), float("nan"), tuple(float(v) for v in arr))
        return cls(float(ok.mean()), float(ok.std()), tuple(float(v) for v in arr))


@dataclass(frozen=True)
class SkippedImage:
    path: str
    reason: str


@dataclass(frozen=True)
class Counts:
    writers: int  # writer folders found
    writers_evaluated: int  # with at least references + 1 usable genuine signatures
    images: int  # image files found
    images_used: int  # read, inked and embedded
    genuine: int  # used genuine images
    forged: int  # used forged images
    skipped: int
    trials_per_split: dict[str, float]  # kind -> mean number of questioned items per split


class TrialRecord(NamedTuple):
    """One scored questioned item of one split: the claimed writer, the kind of item (genuine, skilled, random),
    its score, the writer's threshold and the deployed rule's decision."""

    split: int
    writer: str
    kind: str
    score: float
    threshold: float
    decision: str


@dataclass(frozen=True)
class EvaluationReport:
    dataset: str
    model_id: str
    references: int
    splits: int
    seed: int
    counts: Counts
    figures: dict[str, Figure]
    confusion: dict[str, dict[str, int]]  # kind -> decision -> count, summed over splits
    probes: tuple[probes.ProbeResult, ...]
    warnings: tuple[str, ...]
    skipped: tuple[SkippedImage, ...]
    writers_not_evaluated: tuple[str, ...]
    files: tuple[str, ...] = ()  # written with out_dir
    capture_bias: bool = False  # a probe is flagged
    shortcut: bool = False  # shortcut_warning flagged the swapped-reference figures
    questioned: str | None = None  # the folder the questioned items were read from, when not ``dataset``
    questioned_located: bool = False  # its images were whole documents, the signature located on each
    # kind -> questioned items (summed over splits) captured at another resolution than their references
    # (scoring.capture_mismatch), and of those, the rejections the capture guard referred instead
    capture_mismatch: dict[str, int] = field(default_factory=dict)
    capture_referred: dict[str, int] = field(default_factory=dict)
    # with a questioned folder: how its captures differ from the dataset's, scan by scan (the same scan in both
    # folders), medians: {"scale": questioned ink scale / dataset's, "stroke": questioned stroke width / dataset's}
    questioned_capture: dict[str, float] | None = None
    # every scored questioned item of every split, for comparisons writer by writer (training.cv); not in to_json
    trials: tuple[TrialRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object: the figures' means at top level (fractions), ``<key>_std`` beside them."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "questioned": self.questioned,
            "model": self.model_id,
            "references": self.references,
            "splits": self.splits,
            "seed": self.seed,
        }
        for key, fig in self.figures.items():
            out[key] = _num(fig.mean)
            out[f"{key}_std"] = _num(fig.std)
        out["per_split"] = {key: [_num(v) for v in fig.values] for key, fig in self.figures.items()}
        out["counts"] = asdict(self.counts)
        out["confusion"] = self.confusion
        out["capture_mismatch"] = self.capture_mismatch
        out["capture_referred"] = self.capture_referred
        if self.questioned_capture is not None:
            out["questioned_capture"] = self.questioned_capture
        if self.questioned_located:
            out["questioned_located"] = True
        out["capture_bias"] = self.capture_bias
        out["shortcut"] = self.shortcut
        out["probe_auc_warn"] = probes.AUC_WARN
        out["shortcut_eer_warn"] = SHORTCUT_WARN_EER
        out["shortcut_auc_warn"] = SHORTCUT_WARN_AUC
        out["probes"] = [
            {k: _num(v) if isinstance(v, float) else v for k, v in p.to_dict().items()} for p in self.probes
        ]
        out["warnings"] = list(self.warnings)
        out["skipped"] = [asdict(s) for s in self.skipped]
        out["writers_not_evaluated"] = list(self.writers_not_evaluated)
        out["files"] = list(self.files)
        return out


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# --------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class DatasetItem:
    path: Path
    writer: str
    forged: bool


def scan_dataset(root: Path) -> tuple[list[str], list[DatasetItem]]:
    """Writers (sorted folder names holding ``genuine/``) and their files, in a stable order.

    Raises:
        UsageError: the folder does not exist or holds no writer in the dataset layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder; give a folder laid out as <writer>/genuine/* and <writer>/forged/*")
    writers = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "genuine").is_dir())
    if not writers:
        raise UsageError(
            f"{root}: no writer folder with a genuine/ subfolder; lay the scans out as "
            "<writer>/genuine/* and <writer>/forged/*"
        )
    items = []
    for w in writers:
        for sub, is_forged in (("genuine", False), ("forged", True)):
            folder = root / w / sub
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    items.append(DatasetItem(p, w, is_forged))
    return writers, items


@dataclass
class _ReadPass:
    """What the single read pass keeps: embeddings, raw statistics, canvas hashes (for the vault)."""

    items: list[DatasetItem] = field(default_factory=list)
    stats: list[probes.ImageStats] = field(default_factory=list)
    canvas_keys: list[bytes] = field(default_factory=list)
    emb: list[np.ndarray] = field(default_factory=list)
    captures: list[imaging.InkCapture] = field(default_factory=list)  # per item (scoring.capture_guard)
    views: list[np.ndarray] = field(default_factory=list)  # per item (len(scoring.views), dim); zeros if forged
    view_keys: list[bytes] = field(default_factory=list)  # the genuine items' view canvases, hashed...
    view_emb: list[np.ndarray] = field(default_factory=list)  # ...and their embeddings, for the vault's cache
    skipped: list[SkippedImage] = field(default_factory=list)


def _canvas_key(canvas: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(canvas, dtype=np.float32).tobytes()).digest()


def _read_all(
    items: Sequence[DatasetItem],
    embedder: Embedder,
    limits: imaging.ImageLimits,
    progress: Progress | None,
    *,
    views: bool = True,
    stage: str = "reading",
    locate: bool = False,
) -> _ReadPass:
    """Read, measure, preprocess and embed every image once; skip (and list) the ones that fail. Genuine
    images (the only possible references) are also embedded in their views when the scoring has some and
    ``views``. Without ``views`` (questioned-only items, another capture) the capture statistics of the
    probes, which describe the dataset, are not computed either (``stats`` stays empty). With ``locate`` the
    images are whole documents: the signature is found on each as ``verify --locate`` finds it, and its zone is
    what is read; a document on which none is found is skipped with the locator's reason."""
    out = _ReadPass()
    seen: dict[str, str] = {}
    wanted = embedder.scoring.views if views else ()
    batch: list[np.ndarray] = []  # canvases: each item's, followed by its views if it is genuine
    sizes: list[int] = []  # canvases in the batch per item

    def flush() -> None:
        if batch:
            vecs = np.asarray(embedder.embed(np.stack(batch)), dtype=np.float32)
            at = 0
            for n in sizes:
                out.emb.append(vecs[at])
                out.views.append(vecs[at + 1 : at + n] if n > 1 else np.zeros((len(wanted), embedder.dim), np.float32))
                out.view_emb.extend(vecs[at + 1 : at + n])
                at += n
            batch.clear()
            sizes.clear()

    for k, item in enumerate(items):
        name = str(item.path)
        try:
            data = imaging.read_bytes(item.path, name, limits)
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                raise ImageError(
                    f"{name}: same file as {seen[digest]}; a duplicate would leak between references and questioned items"
                )
            grey = imaging.read_image(data, name=name, limits=limits)
            if locate:
                grey = _located(grey, name)
            own, capture = imaging.preprocess_views(grey, embedder.spec, () if item.forged else wanted, name=name)
            canvases = list(own)
        except ImageError as exc:
            out.skipped.append(SkippedImage(name, str(exc)))
        else:
            seen[digest] = name
            out.items.append(item)
            out.captures.append(capture)
            if views:
                kind, dpi = probes.header_info(data)
                out.stats.append(probes.image_stats(grey, file_kind=kind, dpi=dpi))
            out.canvas_keys.append(_canvas_key(canvases[0]))
            out.view_keys.extend(_canvas_key(c) for c in canvases[1:])
            batch.extend(canvases)
            sizes.append(len(canvases))
            if len(batch) >= READ_PASS_BATCH:
                flush()
        if progress is not None:
            progress(stage, k + 1, len(items))
    flush()
    return out


def _located(grey: np.ndarray, name: str) -> np.ndarray:
    """The signature's zone of a whole document, as ``verify --locate`` cuts it (a signature box: whole).

    Raises:
        NoSignatureFoundError: no single signature on the document.
    """
    from sigvault.documents import signature_box

    box, _ = signature_box(grey, name=name, locate=True)
    return grey if box is None else box.crop(grey)


def _item_key(item: DatasetItem) -> tuple[str, bool, str]:
    """What pairs a scan with its other capture: writer folder, genuine or forged, file name without extension
    (another capture may be another format)."""
    return item.writer, item.forged, item.path.stem


def _capture_change(dataset: Sequence[imaging.InkCapture], questioned: Sequence[imaging.InkCapture]) -> dict[str, float]:
    """How the questioned folder's captures differ from the dataset's, each scan against its own other capture:
    the medians of the ratios of their ink scales and of their stroke widths (nan when no scan is paired)."""
    if not dataset:
        return {"scale": float("nan"), "stroke": float("nan")}
    pairs = list(zip(dataset, questioned, strict=True))
    return {
        "scale": float(np.median([q.scale / d.scale for d, q in pairs])),
        "stroke": float(np.median([q.stroke / d.stroke for d, q in pairs])),
    }


def _pair_questioned(
    loaded: _ReadPass,
    root: Path,
    embedder: Embedder,
    limits: imaging.ImageLimits,
    progress: Progress | None,
    locate: bool = False,
) -> tuple[_ReadPass, np.ndarray, list[imaging.InkCapture]]:
    """Read the questioned captures in ``root`` (the dataset's files captured another way, laid out alike) and
    pair them with the dataset's usable items: returns the dataset's items that have a usable counterpart
    (the others are skipped, with the reason) and the counterparts' embeddings and captures, row for row.

    Raises:
        UsageError: ``root`` is not in the dataset layout, or two of its files would pair with one scan.
    """
    _, items = scan_dataset(root)
    other = _read_all(items, embedder, limits, progress, views=False, stage="reading questioned", locate=locate)
    index: dict[tuple[str, bool, str], int] = {}
    for j, item in enumerate(other.items):
        key = _item_key(item)
        if key in index:
            raise UsageError(
                f"{item.path}: same writer, kind and file name as {other.items[index[key]].path}; "
                "keep one capture of each scan in the questioned folder"
            )
        index[key] = j
    keep, rows = [], []
    skipped = list(other.skipped)
    for i, item in enumerate(loaded.items):
        j = index.pop(_item_key(item), -1)
        if j < 0:
            skipped.append(SkippedImage(
                str(item.path), f"{item.path}: no usable capture of it in {root} (same writer, kind and file name)"
            ))
        else:
            keep.append(i)
            rows.append(j)
    for j in sorted(index.values()):
        path = other.items[j].path
        skipped.append(SkippedImage(str(path), f"{path}: no usable scan of that name in the references' folder"))
    paired = _ReadPass(
        items=[loaded.items[i] for i in keep],
        stats=[loaded.stats[i] for i in keep],
        canvas_keys=[loaded.canvas_keys[i] for i in keep],
        emb=[loaded.emb[i] for i in keep],
        captures=[loaded.captures[i] for i in keep],
        views=[loaded.views[i] for i in keep],
        view_keys=loaded.view_keys,
        view_emb=loaded.view_emb,
        skipped=loaded.skipped + skipped,
    )
    q_emb = np.vstack([other.emb[j] for j in rows]) if rows else np.zeros((0, embedder.dim), dtype=np.float32)
    return paired, q_emb, [other.captures[j] for j in rows]


# ------------------------------------------------------------------------------------ vault enrolment


class _CachedEmbedder:
    """The evaluation's embedder as the vault sees it: canvases already embedded in the read pass are looked
    up (by the hash of the canvas) instead of being embedded again; anything else is embedded for real."""

    def __init__(self, inner: Embedder, keys: Sequence[bytes], emb: np.ndarray) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.spec = inner.spec
        self.scoring = inner.scoring
        self.cohort = getattr(inner, "cohort", None)
        self.cohort_id = getattr(inner, "cohort_id", None)
        self._cache = {k: i for i, k in enumerate(keys)}
        self._emb = emb
        self.hits = 0
        self.misses = 0

    def embed(self, canvases: np.ndarray) -> np.ndarray:
        out = np.empty((canvases.shape[0], self.dim), dtype=np.float32)
        todo = []
        for j, canvas in enumerate(canvases):
            i = self._cache.get(_canvas_key(canvas))
            if i is None:
                todo.append(j)
            else:
                out[j] = self._emb[i]
        if todo:
            out[todo] = np.asarray(self.inner.embed(canvases[todo]), dtype=np.float32)
        self.hits += canvases.shape[0] - len(todo)
        self.misses += len(todo)
        return out


def enroll_references(
    refs: dict[str, np.ndarray],
    paths: Sequence[Path],
    embedder: _CachedEmbedder,
    limits: imaging.ImageLimits,
) -> dict[str, float]:
    """Enroll each writer's references through :meth:`Vault.enroll` in a temporary store, as ``sigvault
    enroll`` does; -> {writer: the threshold the vault stored}."""
    from sigvault.config import Settings, sqlite_url
    from sigvault.vault import Vault

    thresholds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sigvault-evaluate-") as tmp:
        home = Path(tmp)
        settings = Settings(
            home=home,
            database_url=sqlite_url(home / "evaluate.db"),
            max_image_pixels=limits.max_pixels,
            max_image_bytes=limits.max_bytes,
        )
        with Vault.open(settings, embedder=embedder) as vault:
            for k, (writer, idx) in enumerate(sorted(refs.items())):
                person = _person_id(writer, k)
                # force: the protocol chose these references; the enrolment gate is measured apart
                # (scripts/reference_gate.py), and a refusal here would stop the evaluation
                result = vault.enroll(person, [paths[i] for i in idx], force=True)
                stored = vault.person(result.person).threshold
                if stored is None:  # pragma: no cover - enroll always stores one
                    raise SigvaultError(f"evaluate: the temporary vault stored no threshold for {writer!r}")
                thresholds[writer] = stored
    return thresholds


def _person_id(writer: str, k: int) -> str:
    from sigvault.errors import InvalidPersonIdError
    from sigvault.vault import normalize_person_id

    try:
        return normalize_person_id(writer)
    except InvalidPersonIdError:
        return f"writer-{k}"


# ------------------------------------------------------------------------------------------- protocol


def choose_references(
    writers: np.ndarray, forged: np.ndarray, n_refs: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per writer with more than ``n_refs`` genuine items, ``n_refs`` of them at random (sorted indices)."""
    refs = {}
    for w in sorted(set(writers.tolist())):
        g = np.flatnonzero((writers == w) & ~forged)
        if g.size > n_refs:
            refs[w] = np.sort(rng.choice(g, size=n_refs, replace=False))
    return refs


def shortcut_warning(eer_swapped: float, auc_writer: float) -> str | None:
    """The shortcut warning, or None: the swapped-reference EER below ``SHORTCUT_WARN_EER`` or the per-writer
    swapped-reference AUC above ``SHORTCUT_WARN_AUC`` (the latter also catches a shortcut that the pooled EER
    hides when writers' scores sit at different heights); nan figures (no forgeries) never warn."""
    by_eer = math.isfinite(eer_swapped) and eer_swapped < SHORTCUT_WARN_EER
    by_auc = math.isfinite(auc_writer) and auc_writer > SHORTCUT_WARN_AUC
    if not (by_eer or by_auc):
        return None
    return (
        f"shortcut: with ANOTHER writer's references the model still separates genuine signatures from "
        f"skilled forgeries (EER {100 * eer_swapped:.1f}%, AUC per writer {auc_writer:.2f}; chance is 50% and "
        "0.50). It recognises forgeries without comparing them with the references, so its skilled-forgery "
        "figures are not trustworthy here."
    )


def pooled_swapped(per_writer: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`swapped_by_writer`'s scores pooled over writers: (genuine scores, skilled scores). A model that
    compares signatures cannot tell them apart (EER near 0.5); one that recognises forgeries by their capture
    still can."""
    if not per_writer:
        return np.zeros(0), np.zeros(0)
    return np.concatenate([g for g, _ in per_writer]), np.concatenate([sk for _, sk in per_writer])


def swapped_writer_auc(per_writer: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The shortcut test per writer: the AUC of each writer's genuine items above its skilled forgeries, both
    scored against the next writer's references (:func:`swapped_by_writer`), averaged over the writers that
    have both; nan if none has."""
    aucs = [metrics.auc(g, sk) for g, sk in per_writer if g.size and sk.size]
    return float(np.mean(aucs)) if aucs else float("nan")


def swapped_by_writer(
    emb: np.ndarray,
    writers: np.ndarray,
    forged: np.ndarray,
    refs: dict[str, np.ndarray],
    cfg: scoring.ScoringConfig,
    cohort: np.ndarray | None = None,
    views: np.ndarray | None = None,
    questioned: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The shortcut test: per enrolled writer (sorted), its questioned items (its non-reference genuine
    signatures, its skilled forgeries) scored against the references of the NEXT enrolled writer: a list of
    (genuine scores, skilled scores). ``questioned``: the items' embeddings as questioned (another capture,
    :func:`protocol.run_split`); default ``emb``."""
    asked = emb if questioned is None else questioned
    names = sorted(refs)
    if len(names) < 2:
        return []
    out = []
    for k, w in enumerate(names):
        theirs = refs[names[(k + 1) % len(names)]]
        other = scoring.person_scorer(emb[theirs], cfg, cohort, views=None if views is None else views[theirs])
        mine = writers == w
        rest = np.setdiff1d(np.flatnonzero(mine & ~forged), refs[w])
        skilled = np.flatnonzero(mine & forged)
        out.append((
            other.scores(asked[rest]) if rest.size else np.zeros(0),
            other.scores(asked[skilled]) if skilled.size else np.zeros(0),
        ))
    return out


def _eer(g: np.ndarray, i: np.ndarray) -> float:
    return metrics.eer(g, i)[0] if g.size and i.size else float("nan")


def _auc(g: np.ndarray, i: np.ndarray) -> float:
    return metrics.auc(g, i) if g.size and i.size else float("nan")


def _frr_at(g: np.ndarray, i: np.ndarray, far: float) -> float:
    return metrics.frr_at_far(g, i, far) if g.size and i.size else float("nan")


def split_figures(trials: protocol.Trials, cfg: scoring.ScoringConfig) -> dict[str, float]:
    """The figures of one split (everything but the shortcut test)."""
    g, sk, rd = (trials.scores(k) for k in protocol.KINDS)
    out = {
        "eer_skilled": _eer(g, sk),
        "eer_random": _eer(g, rd),
        "auc_skilled": _auc(g, sk),
        "auc_random": _auc(g, rd),
        "frr_at_far1_skilled": _frr_at(g, sk, TARGET_FAR),
    }
    out.update(protocol.deployed_rates(trials, cfg))
    return out


def _decisions(trials: protocol.Trials, dec: np.ndarray) -> dict[str, dict[str, int]]:
    """kind -> decision -> count, from the items' decisions ``dec`` (``trials.decisions``)."""
    return {k: {d: int(np.sum((trials.kind == k) & (dec == d))) for d in DECISIONS} for k in protocol.KINDS}


# ----------------------------------------------------------------------------------------------- main


def run_evaluation(
    dataset_dir: Path | str,
    *,
    embedder: Embedder,
    references: int = 5,
    splits: int = 5,
    seed: int = 0,
    out_dir: Path | str | None = None,
    progress: Progress | None = None,
    limits: imaging.ImageLimits = imaging.DEFAULT_LIMITS,
    questioned_dir: Path | str | None = None,
    locate_questioned: bool = False,
) -> EvaluationReport:
    """Run ``sigvault evaluate`` on a dataset folder; see the module docstring for the protocol.

    Args:
        dataset_dir: folder laid out as ``<writer>/{genuine,forged}/*``.
        embedder: the model (``embedder.load_embedder()``), or any object with its contract.
        references: genuine signatures enrolled per writer in each split (N).
        splits: number of seeded splits (S).
        seed: the seed of the splits (and of the embedding probe's writer halves).
        out_dir: if given, ``report.json``, ``det.png``, ``histograms.png`` and ``confusion.csv`` are
            written there (created if needed).
        progress: called as ``progress(stage, done, total)``.
        limits: image size limits.
        questioned_dir: if given, the questioned items are scored from this folder instead: the dataset's
            scans captured another way (another scanner, resolution, format), in the same layout with the
            same writer folders and file names (extensions may differ). References are still enrolled from
            ``dataset_dir``; a scan without a usable counterpart is left out of both and listed as skipped.
        locate_questioned: the questioned folder holds whole documents (e.g. the scans signed on cheques,
            ``training.perturb --kinds document-colour``): the signature is found on each (``verify --locate``);
            a document on which none is found is skipped, with the reason, and its scan left out.

    Raises:
        UsageError: bad arguments, no dataset, or too few usable writers (fewer than 2 with N + 1 genuine
            signatures).
    """
    if references < 1:
        raise UsageError(f"--references {references}: enroll at least 1 reference per writer")
    if splits < 1:
        raise UsageError(f"--splits {splits}: run at least 1 split")
    root = Path(dataset_dir)
    writer_names, items = scan_dataset(root)
    if locate_questioned and questioned_dir is None:
        raise UsageError("--locate finds the signature on the questioned documents: give --questioned DIR too")
    data = _read_dataset(items, embedder, limits, progress, questioned_dir, locate_questioned)
    genuine_count = {w: int(np.sum((data.writers == w) & ~data.forged)) for w in writer_names}
    evaluable = [w for w in writer_names if genuine_count[w] > references]
    not_evaluated = tuple(w for w in writer_names if genuine_count[w] <= references)
    if len(evaluable) < 2:
        raise UsageError(
            f"{root}: only {len(evaluable)} writer(s) have more than {references} usable genuine signatures; "
            "evaluation needs at least 2 (lower --references or add scans)"
        )

    cached = _CachedEmbedder(
        embedder,
        data.loaded.canvas_keys + data.loaded.view_keys,
        np.vstack([data.emb, *data.loaded.view_emb]) if data.loaded.view_emb else data.emb,
    )
    tally = _SplitTally()
    for s in range(splits):
        _run_split(data, embedder, cached, limits, references, np.random.default_rng([seed, s]), tally)
        if progress is not None:
            progress("splits", s + 1, splits)

    figures = {k: Figure.of(v) for k, v in tally.figures.items()}
    probe_results = probes.run_probes(data.loaded.stats, data.emb, data.writers, data.forged, seed) if data.loaded.items else ()
    capture = probes.capture_warning(probe_results)
    shortcut = shortcut_warning(figures["eer_skilled_swapped"].mean, figures["auc_skilled_swapped_writer"].mean)
    warnings = _warnings(data, tally, cached, embedder.scoring, references, not_evaluated, capture, shortcut, questioned_dir)
    counts = Counts(
        writers=len(writer_names),
        writers_evaluated=len(evaluable),
        images=len(items),
        images_used=len(data.loaded.items),
        genuine=int((~data.forged).sum()),
        forged=int(data.forged.sum()),
        skipped=len(data.loaded.skipped),
        trials_per_split={k: tally.trials[k] / splits for k in protocol.KINDS},
    )
    report = EvaluationReport(
        dataset=str(root),
        model_id=embedder.model_id,
        references=references,
        splits=splits,
        seed=seed,
        counts=counts,
        figures=figures,
        confusion=tally.confusion,
        probes=probe_results,
        warnings=tuple(warnings),
        skipped=tuple(data.loaded.skipped),
        writers_not_evaluated=not_evaluated,
        capture_bias=capture is not None,
        shortcut=shortcut is not None,
        questioned=None if questioned_dir is None else str(questioned_dir),
        questioned_located=locate_questioned,
        capture_mismatch=tally.capture_mismatch,
        capture_referred=tally.capture_referred,
        questioned_capture=None if data.q_captures is None else _capture_change(data.loaded.captures, data.q_captures),
        trials=tuple(tally.records),
    )
    if out_dir is not None:
        scores = {k: np.concatenate(v) if v else np.zeros(0) for k, v in tally.pooled.items()}
        report = replace(report, files=tuple(str(p) for p in write_outputs(report, scores, Path(out_dir))))
    return report


@dataclass(frozen=True)
class _Dataset:
    """The read pass's outcome as the splits use it: one row per usable image (arrays in item order)."""

    loaded: _ReadPass
    writers: np.ndarray  # (n,) object: writer names
    forged: np.ndarray  # (n,) bool
    paths: list[Path]
    emb: np.ndarray  # (n, dim) float32
    views: np.ndarray | None  # (n, len(scoring.views), dim) when the scoring has views
    q_emb: np.ndarray | None  # (n, dim): the questioned captures' embeddings (--questioned), else None
    q_captures: list[imaging.InkCapture] | None


def _read_dataset(
    items: Sequence[DatasetItem],
    embedder: Embedder,
    limits: imaging.ImageLimits,
    progress: Progress | None,
    questioned_dir: Path | str | None,
    locate_questioned: bool = False,
) -> _Dataset:
    """Step 1: read, measure and embed every image once (and pair the questioned captures, if given)."""
    loaded = _read_all(items, embedder, limits, progress)
    q_emb, q_captures = None, None
    if questioned_dir is not None:
        loaded, q_emb, q_captures = _pair_questioned(
            loaded, Path(questioned_dir), embedder, limits, progress, locate=locate_questioned
        )
    emb = np.vstack(loaded.emb) if loaded.emb else np.zeros((0, embedder.dim), dtype=np.float32)
    return _Dataset(
        loaded=loaded,
        writers=np.array([it.writer for it in loaded.items], dtype=object),
        forged=np.array([it.forged for it in loaded.items], dtype=bool),
        paths=[it.path for it in loaded.items],
        emb=emb,
        views=np.stack(loaded.views) if embedder.scoring.views and loaded.views else None,
        q_emb=q_emb,
        q_captures=q_captures,
    )


@dataclass
class _SplitTally:
    """What the splits add up to: figures per split, decisions and capture counts and scores per trial kind."""

    figures: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in FIGURE_KEYS})
    confusion: dict[str, dict[str, int]] = field(
        default_factory=lambda: {k: dict.fromkeys(DECISIONS, 0) for k in protocol.KINDS}
    )
    trials: dict[str, int] = field(default_factory=lambda: dict.fromkeys(protocol.KINDS, 0))
    capture_mismatch: dict[str, int] = field(default_factory=lambda: dict.fromkeys(protocol.KINDS, 0))
    capture_referred: dict[str, int] = field(default_factory=lambda: dict.fromkeys(protocol.KINDS, 0))
    pooled: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in protocol.KINDS})
    mismatched: int = 0  # thresholds the vault stored that differ from the protocol's (an internal check)
    records: list[TrialRecord] = field(default_factory=list)


def _run_split(
    data: _Dataset,
    embedder: Embedder,
    cached: _CachedEmbedder,
    limits: imaging.ImageLimits,
    references: int,
    rng: np.random.Generator,
    tally: _SplitTally,
) -> None:
    """Step 2, once per split: choose references, enroll them through the vault, score every questioned
    item with the thresholds the vault stored, and add the split's figures and decisions to ``tally``."""
    cfg = embedder.scoring
    cohort = getattr(embedder, "cohort", None)
    refs = choose_references(data.writers, data.forged, references, rng)
    thresholds = enroll_references(refs, data.paths, cached, limits)
    trials = protocol.run_split(
        data.emb,
        data.writers,
        data.forged,
        references,
        int(rng.integers(2**31)),
        cfg,
        references=refs,
        cohort=cohort,
        views=data.views,
        questioned=data.q_emb,
        captures=data.loaded.captures,
        questioned_captures=data.q_captures,
    )
    # The deployed rule uses the thresholds the vault stored at enrolment.
    vault_thr = np.array([thresholds[w] for w in trials.writer.tolist()], dtype=np.float64)
    tally.mismatched += int(np.sum(~np.isclose(vault_thr, trials.threshold, rtol=0, atol=1e-6)))
    trials = replace(trials, threshold=vault_thr)
    figs = split_figures(trials, cfg)
    per_writer = swapped_by_writer(data.emb, data.writers, data.forged, refs, cfg, cohort, data.views, data.q_emb)
    figs["eer_skilled_swapped"] = _eer(*pooled_swapped(per_writer))
    figs["auc_skilled_swapped_writer"] = swapped_writer_auc(per_writer)
    for k in FIGURE_KEYS:
        tally.figures[k].append(figs[k])
    decided = trials.decisions(cfg)
    split = len(tally.figures[FIGURE_KEYS[0]]) - 1
    tally.records.extend(
        TrialRecord(split, w, k, float(sc), float(t), str(d))
        for w, k, sc, t, d in zip(trials.writer.tolist(), trials.kind.tolist(), trials.score, trials.threshold, decided)
    )
    for kind, row in _decisions(trials, decided).items():
        for d, n in row.items():
            tally.confusion[kind][d] += n
    mismatch = np.array([scoring.capture_mismatch(c, cfg) for c in trials.capture], dtype=bool)
    turned = (trials.decisions(cfg, guard=False) == "reject") & (decided == "refer")
    for kind in protocol.KINDS:
        sc = trials.scores(kind)
        tally.trials[kind] += int(sc.size)
        tally.capture_mismatch[kind] += int(np.sum(mismatch & (trials.kind == kind)))
        tally.capture_referred[kind] += int(np.sum(turned & (trials.kind == kind)))
        tally.pooled[kind].append(sc)


def _warnings(
    data: _Dataset,
    tally: _SplitTally,
    cached: _CachedEmbedder,
    cfg: scoring.ScoringConfig,
    references: int,
    not_evaluated: tuple[str, ...],
    capture: str | None,
    shortcut: str | None,
    questioned_dir: Path | str | None,
) -> list[str]:
    """Step 3: what the reader must know before trusting the figures, in the order the report lists it."""
    warnings: list[str] = []
    if capture:
        warnings.append(capture)
    if shortcut:
        warnings.append(shortcut)
    if not data.forged.any():
        warnings.append(
            "no usable skilled forgeries (forged/ folders): skilled-forgery figures and probes are not available"
        )
    if not_evaluated:
        shown = ", ".join(not_evaluated[:10]) + (", ..." if len(not_evaluated) > 10 else "")
        warnings.append(
            f"{len(not_evaluated)} writer(s) have {references} or fewer usable genuine signatures and were not "
            f"evaluated: {shown}"
        )
    genuine = tally.trials["genuine"]
    if genuine and tally.capture_mismatch["genuine"] > 0.1 * genuine:
        share = 100 * tally.capture_mismatch["genuine"] / genuine
        warnings.append(
            f"{share:.0f} % of the genuine questioned items are scanned at another resolution than their references "
            f"(ink enlarged more than {cfg.capture_ratio_max:g} times as much, or less, with its strokes thinner, or "
            f"thicker, by more than {cfg.capture_stroke_min:g} times): the network rejects such "
            "captures too often, so their rejections near the threshold are referred (the refer rate rises); "
            "enroll references captured like the questioned items"
        )
    if data.loaded.skipped:
        why = "unreadable, no ink, duplicate or unpaired" if questioned_dir is not None else "unreadable, no ink or duplicate"
        warnings.append(f"{len(data.loaded.skipped)} image(s) skipped ({why}); see the list")
    if tally.mismatched:
        warnings.append(
            f"internal check: {tally.mismatched} threshold(s) stored by the vault differ from the protocol's; "
            "please report this"
        )
    if cached.misses:
        warnings.append(
            f"internal check: {cached.misses} reference(s) preprocessed differently by the vault; please report this"
        )
    return warnings


# -------------------------------------------------------------------------------------------- outputs


def write_outputs(report: EvaluationReport, scores: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
    """report.json, confusion.csv, det.png, histograms.png in ``out_dir``; scores pooled over splits by kind."""
    import io
    import json

    from sigvault.durable import atomic_write, private_dir

    private_dir(out_dir)  # 0700 and files 0600, as every output of sigvault (sigvault.durable)
    paths = [out_dir / "report.json", out_dir / "confusion.csv", out_dir / "det.png", out_dir / "histograms.png"]
    text = io.StringIO(newline="")
    wr = csv.writer(text)
    wr.writerow(["kind", *DECISIONS, "total"])
    for kind, row in report.confusion.items():
        wr.writerow([kind, *(row[d] for d in DECISIONS), sum(row.values())])
    atomic_write(paths[1], text.getvalue().encode())
    for plot, path in ((_plot_det, paths[2]), (_plot_histograms, paths[3])):
        png = io.BytesIO()
        plot(scores, png, report.model_id)
        atomic_write(path, png.getvalue())
    data = report.to_json() | {"files": [str(p) for p in paths]}
    atomic_write(paths[0], (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())
    return paths


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _plot_det(scores: dict[str, np.ndarray], path: Path | BinaryIO, title: str) -> None:
    """DET curve on probit (normal deviate) axes: skilled and random forgeries."""
    from scipy.stats import norm

    plt = _pyplot()
    eps = 1e-4
    ticks = np.array([0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    try:
        for kind, colour in (("skilled", "tab:red"), ("random", "tab:blue")):
            g, i = scores["genuine"], scores[kind]
            if not g.size or not i.size:
                continue
            far, frr = metrics.det_points(g, i)
            e = metrics.eer(g, i)[0]
            ax.plot(
                norm.ppf(np.clip(far, eps, 1 - eps)),
                norm.ppf(np.clip(frr, eps, 1 - eps)),
                color=colour,
                label=f"{kind} forgeries (pooled EER {100 * e:.1f}%)",
            )
        lim = norm.ppf([eps * 5, 0.85])  # up to 85 %: a weak model's skilled curve stays in view
        ax.plot(lim, lim, color="grey", lw=0.6, ls=":")
        ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
        ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_xlabel("false accept rate (%)")
        ax.set_ylabel("false reject rate (%)")
        ax.set_title(f"DET, {title}", fontsize=9)
        ax.grid(True, lw=0.3)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _plot_histograms(scores: dict[str, np.ndarray], path: Path | BinaryIO, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        everything = (
            np.concatenate([v for v in scores.values() if v.size])
            if any(v.size for v in scores.values())
            else np.zeros(1)
        )
        bins = np.linspace(float(everything.min()), float(everything.max()) + 1e-9, 50)
        for kind, colour in (("genuine", "tab:green"), ("skilled", "tab:red"), ("random", "tab:blue")):
            if scores[kind].size:
                ax.hist(
                    scores[kind],
                    bins=bins,
                    density=True,
                    alpha=0.45,
                    color=colour,
                    label=f"{kind} ({scores[kind].size})",
                )
        ax.set_xlabel("score against the references")
        ax.set_ylabel("density")
        ax.set_title(f"Scores, {title}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ text


def _fmt(key: str, fig: Figure) -> str:
    if not math.isfinite(fig.mean):
        return "n/a"
    if key in RATE_KEYS:
        return f"{100 * fig.mean:5.1f}% ± {100 * fig.std:4.1f}"
    return f"{fig.mean:6.3f} ± {fig.std:5.3f}"


def render_text(report: EvaluationReport) -> list[str]:
    """The lines ``sigvault evaluate`` shows (no trailing newlines): figures ± std, probes, warnings, files."""
    c = report.counts
    lines = [
        f"sigvault evaluate  {report.dataset}",
        *([f"questioned items read from {report.questioned} (references from the folder above)"
           + ("; whole documents, the signature located on each" if report.questioned_located else "")]
          if report.questioned else []),
        f"model {report.model_id}; {report.references} references per writer, {report.splits} split(s), seed {report.seed}",
        f"{c.writers_evaluated} of {c.writers} writers evaluated; {c.images_used} of {c.images} images used "
        f"({c.genuine} genuine, {c.forged} forged, {c.skipped} skipped)",
        "questioned items per split: " + ", ".join(f"{k} {v:g}" for k, v in c.trials_per_split.items()),
        "",
    ]
    width = max(len(v) for v in FIGURE_LABELS.values())
    for key in FIGURE_KEYS:
        lines.append(f"  {FIGURE_LABELS[key]:<{width}}  {_fmt(key, report.figures[key])}")
    lines += ["", "deployed decisions (all splits)   accept   refer  reject"]
    for kind, row in report.confusion.items():
        lines.append(f"  {kind:<31} {row['accept']:7d} {row['refer']:7d} {row['reject']:7d}")
    if report.questioned_capture is not None:
        change = report.questioned_capture
        lines.append(
            f"questioned captures against the dataset's, scan by scan (medians): ink enlarged x{change['scale']:.2f} "
            f"as much, strokes x{change['stroke']:.2f} as wide"
        )
    if any(report.capture_mismatch.values()):
        lines.append(
            "capture mismatches (another resolution than the references): "
            + ", ".join(f"{k} {n}" for k, n in report.capture_mismatch.items())
            + "; rejections referred instead: "
            + ", ".join(f"{k} {n}" for k, n in report.capture_referred.items())
        )
    if report.probes:
        lines += [
            "",
            f"capture-bias probes (AUC genuine vs forged without references; warning at {probes.AUC_WARN:.2f})",
        ]
        pw = max(len(p.cue) for p in report.probes)
        for p in report.probes:
            value = "n/a " if p.auc is None else f"{p.auc:.2f}"
            mark = "  <- CUE" if p.flagged else ""
            extra = p.direction if p.key in probes.NUMERIC_CUES else (p.note or "")
            lines.append(f"  {p.cue:<{pw}}  {value}  {extra}{mark}".rstrip())
    if report.warnings:
        lines.append("")
        lines += [f"WARNING: {w}" for w in report.warnings]
    if report.skipped:
        lines += ["", "skipped images:"]
        lines += [f"  {s.reason}" for s in report.skipped[:20]]
        if len(report.skipped) > 20:
            lines.append(f"  ... and {len(report.skipped) - 20} more (see the JSON)")
    if report.files:
        lines += ["", "written:"] + [f"  {f}" for f in report.files]
    return lines
