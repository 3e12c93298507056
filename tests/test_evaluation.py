"""``sigvault evaluate``: the protocol end to end, capture-bias probes, the shortcut test, the outputs.

Datasets are made here (``sigvault.synth`` and the Pillow strokes of conftest), never taken from
``shared/datasets``. The fake embedder keeps every run to a few seconds; one test uses the shipped model
when it exists.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, signature_png

from sigvault import evaluation, imaging, probes
from sigvault.errors import UsageError
from sigvault.scoring import ScoringConfig
from sigvault.synth import Capture, write_dataset

# ------------------------------------------------------------------------------------------ datasets


def tiny_dataset(root: Path, writers: int = 4, genuine: int = 5, forged: int = 2) -> Path:
    """Pillow strokes: writer k signs as conftest's person k; a forgery is a shakier redraw of it."""
    for k in range(writers):
        g = root / f"writer{k}" / "genuine"
        f = root / f"writer{k}" / "forged"
        g.mkdir(parents=True)
        f.mkdir(parents=True)
        for j in range(genuine):
            (g / f"g{j}.png").write_bytes(signature_png(k, j + 1))
        for j in range(forged):
            (f / f"f{j}.png").write_bytes(signature_png(k, 100 + j, jitter=14.0))
    return root


@pytest.fixture(scope="module")
def synth_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 6 writers twice: captured alike ("clean"), and with the forgeries on whiter paper than the
    genuine signatures ("biased", the capture-session cue of FINDINGS.md)."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root / "clean", writers=6, genuine=6, forged=4, seed=5)
    write_dataset(
        root / "biased",
        writers=6,
        genuine=6,
        forged=4,
        seed=5,
        capture=Capture(paper=(226.0, 238.0)),
        forged_capture=Capture(paper=(248.0, 254.0)),
    )
    return {"clean": root / "clean", "biased": root / "biased"}


@pytest.fixture(scope="module")
def synth_reports(synth_sets: dict[str, Path]) -> dict[str, evaluation.EvaluationReport]:
    return {
        name: evaluation.run_evaluation(path, embedder=FakeEmbedder(), references=3, splits=2, seed=0)
        for name, path in synth_sets.items()
    }


# --------------------------------------------------------------------------------------- capture bias


def test_capture_cue_is_named_on_the_biased_set(synth_reports: dict[str, evaluation.EvaluationReport]) -> None:
    report = synth_reports["biased"]
    assert report.capture_bias
    paper = next(p for p in report.probes if p.key == "paper_grey")
    assert paper.flagged
    assert paper.auc == 1.0  # whiter paper for every forgery: perfectly separable without references
    assert paper.direction == "paper lighter in forgeries"
    (warning,) = [w for w in report.warnings if w.startswith("capture bias")]
    assert "NOT trustworthy" in warning
    assert "paper grey level (AUC 1.00, paper lighter in forgeries)" in warning
    # The preprocessing removes the paper, so the model's embedding does not carry the cue...
    embedding = next(p for p in report.probes if p.key == "embedding")
    assert not embedding.flagged
    # ...and the model passes the shortcut test.
    assert not report.shortcut
    assert report.figures["eer_skilled_swapped"].mean > evaluation.SHORTCUT_WARN_EER


def test_no_warning_on_the_clean_set(synth_reports: dict[str, evaluation.EvaluationReport]) -> None:
    report = synth_reports["clean"]
    assert not report.capture_bias
    assert not report.shortcut
    assert report.warnings == ()
    assert [p.key for p in report.probes if p.flagged] == []
    assert {p.key for p in report.probes} == {*probes.NUMERIC_CUES, *probes.CATEGORICAL_CUES, "embedding"}
    kinds = next(p for p in report.probes if p.key == "file_kind")
    assert (kinds.auc, kinds.direction) == (0.5, "all PNG L")


def test_synth_counts_and_figures(synth_reports: dict[str, evaluation.EvaluationReport]) -> None:
    report = synth_reports["clean"]
    c = report.counts
    assert (c.writers, c.writers_evaluated, c.images, c.images_used, c.genuine, c.forged, c.skipped) == (
        6,
        6,
        60,
        60,
        36,
        24,
        0,
    )
    # per split: 6 writers x (6 - 3) genuine, 6 x 4 skilled, 6 x 5 random
    assert c.trials_per_split == {"genuine": 18.0, "skilled": 24.0, "random": 30.0}
    for key in evaluation.FIGURE_KEYS:
        fig = report.figures[key]
        assert len(fig.values) == 2
        assert math.isfinite(fig.mean) and 0.0 <= fig.mean <= 1.0
        assert fig.std == pytest.approx(float(np.std(fig.values)))
    # The fake model compares strokes: random forgeries are easier than skilled ones.
    assert report.figures["eer_random"].mean < report.figures["eer_skilled"].mean
    assert report.figures["auc_random"].mean > 0.9
    # Biased and clean sets hold the same strokes: only the paper differs, which preprocessing removes.
    biased = synth_reports["biased"]
    assert biased.figures["auc_random"].mean == pytest.approx(report.figures["auc_random"].mean, abs=0.05)


# ------------------------------------------------------------------------------------ shortcut test


def test_swapped_scores_of_a_model_that_compares() -> None:
    """Forgeries identical to genuine signatures: against another writer's references they score alike."""
    e = np.eye(4, dtype=np.float32)
    emb = np.vstack([e[[0, 0, 0, 0]], e[[0, 0]], e[[1, 1, 1, 1]], e[[1, 1]]])
    writers = np.array(["a"] * 6 + ["b"] * 6)
    forged = np.array([False] * 4 + [True] * 2 + [False] * 4 + [True] * 2)
    refs = {"a": np.array([0, 1]), "b": np.array([6, 7])}
    g, sk = evaluation.pooled_swapped(evaluation.swapped_by_writer(emb, writers, forged, refs, ScoringConfig()))
    np.testing.assert_array_equal(g, np.zeros(4))
    np.testing.assert_array_equal(sk, np.zeros(4))
    assert evaluation._eer(g, sk) == 0.5
    assert evaluation.swapped_writer_auc(evaluation.swapped_by_writer(emb, writers, forged, refs, ScoringConfig())) == 0.5


def test_swapped_writer_auc_is_free_of_the_pooled_eers_composition_effect() -> None:
    """Within each writer genuine and forged items score alike against the other's references, but writer a
    (1 questioned genuine, 4 forgeries) scores high there and writer b (4 genuine, 1 forgery) low: pooled,
    forgeries sit above genuine signatures (EER over 50 %) with no shortcut; per writer the AUC is 0.5."""
    e = np.eye(4, dtype=np.float32)
    a_item, b_item = 0.8 * e[1] + 0.6 * e[2], e[3]
    emb = np.vstack([e[[0, 0]], [a_item] * 5, e[[1, 1]], [b_item] * 5]).astype(np.float32)
    writers = np.array(["a"] * 7 + ["b"] * 7)
    forged = np.array([False] * 3 + [True] * 4 + [False] * 6 + [True])
    refs = {"a": np.array([0, 1]), "b": np.array([7, 8])}
    per_writer = evaluation.swapped_by_writer(emb, writers, forged, refs, ScoringConfig())
    g, sk = evaluation.pooled_swapped(per_writer)
    np.testing.assert_allclose(np.sort(g), [0, 0, 0, 0, 0.8], atol=1e-6)
    np.testing.assert_allclose(np.sort(sk), [0, 0.8, 0.8, 0.8, 0.8], atol=1e-6)
    assert evaluation._eer(g, sk) == pytest.approx(0.8)
    assert evaluation.swapped_writer_auc(per_writer) == 0.5


def test_shortcut_warning_from_either_swapped_figure() -> None:
    assert evaluation.shortcut_warning(0.5, 0.5) is None
    assert evaluation.shortcut_warning(float("nan"), float("nan")) is None
    assert evaluation.shortcut_warning(0.36, 0.74) is None
    assert evaluation.shortcut_warning(0.2, 0.9) == (
        "shortcut: with ANOTHER writer's references the model still separates genuine signatures from skilled "
        "forgeries (EER 20.0%, AUC per writer 0.90; chance is 50% and 0.50). It recognises forgeries without "
        "comparing them with the references, so its skilled-forgery figures are not trustworthy here."
    )
    # a pooled EER near chance hides a per-writer shortcut when writers' scores sit at different heights
    assert evaluation.shortcut_warning(0.48, 0.8) is not None
    assert evaluation.shortcut_warning(0.3, float("nan")) is not None


def test_swapped_scores_of_a_model_that_learned_the_capture() -> None:
    """Every forgery carries the same "forgery" direction: it is told apart even with the wrong references."""
    e = np.eye(4, dtype=np.float32)
    cue = ((e[0] + e[3]) / np.sqrt(2), (e[1] + e[3]) / np.sqrt(2))
    emb = np.vstack([e[[0] * 4], [cue[0]] * 2, e[[1] * 4], [cue[1]] * 2]).astype(np.float32)
    emb[:4] = 0.8 * e[0] + 0.6 * e[2]  # genuine share a "capture" direction (axis 2) with each other
    emb[6:10] = 0.8 * e[1] + 0.6 * e[2]
    writers = np.array(["a"] * 6 + ["b"] * 6)
    forged = np.array([False] * 4 + [True] * 2 + [False] * 4 + [True] * 2)
    refs = {"a": np.array([0, 1]), "b": np.array([6, 7])}
    g, sk = evaluation.pooled_swapped(evaluation.swapped_by_writer(emb, writers, forged, refs, ScoringConfig()))
    np.testing.assert_allclose(g, 0.36)  # 0.6 * 0.6 through the shared capture direction
    np.testing.assert_allclose(sk, 0.0, atol=1e-7)
    assert evaluation._eer(g, sk) == 0.0
    assert evaluation.swapped_writer_auc(evaluation.swapped_by_writer(emb, writers, forged, refs, ScoringConfig())) == 1.0


@dataclass
class CaptureLearner(FakeEmbedder):
    """A model that learned the capture session: on top of the strokes, every canvas of the "genuine
    session" shares one direction and every canvas of the "forgery session" another."""

    forged_keys: frozenset[bytes] = frozenset()
    cue: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.dim += 2
        self.model_id = "capture-learner"

    def embed(self, canvases: np.ndarray) -> np.ndarray:
        base = super().embed(canvases)
        is_forged = np.array([evaluation._canvas_key(c) in self.forged_keys for c in canvases])
        session = self.cue * np.stack([~is_forged, is_forged], axis=1).astype(np.float32)
        out = np.hstack([base, session]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_shortcut_is_reported(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data")
    spec = FakeEmbedder().spec
    keys = frozenset(evaluation._canvas_key(imaging.load_canvas(p, spec)) for p in root.glob("*/forged/*.png"))
    report = evaluation.run_evaluation(root, embedder=CaptureLearner(forged_keys=keys), references=3, splits=2)
    assert report.shortcut
    assert report.figures["eer_skilled_swapped"].mean == 0.0
    assert any(w.startswith("shortcut: with ANOTHER writer's references") for w in report.warnings)
    embedding = next(p for p in report.probes if p.key == "embedding")
    assert embedding.flagged and embedding.auc == 1.0
    assert report.capture_bias


# ------------------------------------------------------------------------------- protocol, outputs


def test_tiny_dataset_end_to_end(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data")
    out = tmp_path / "out"
    seen: list[tuple[str, int, int]] = []
    embedder = FakeEmbedder()
    report = evaluation.run_evaluation(
        root, embedder=embedder, references=3, splits=3, seed=7, out_dir=out, progress=lambda *a: seen.append(a)
    )
    assert (report.counts.writers, report.counts.images_used, report.counts.skipped) == (4, 28, 0)
    assert report.counts.trials_per_split == {"genuine": 8.0, "skilled": 8.0, "random": 12.0}
    # every image embedded once, in one batch (28 < 64); the vault's enrolments hit the cache
    assert embedder.calls == 1
    assert seen[-1] == ("splits", 3, 3) and ("reading", 28, 28) in seen
    # deployed decisions over 3 splits add up to the questioned items
    assert {k: sum(row.values()) for k, row in report.confusion.items()} == {"genuine": 24, "skilled": 24, "random": 36}
    assert not [w for w in report.warnings if w.startswith("internal check")]

    # files
    assert [Path(f).name for f in report.files] == ["report.json", "confusion.csv", "det.png", "histograms.png"]
    for f in report.files:
        assert Path(f).stat().st_size > 0
    assert (out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "confusion.csv").read_text().splitlines()
    assert lines[0] == "kind,accept,refer,reject,total"
    assert lines[1].startswith("genuine,") and lines[1].endswith(",24")
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(json.dumps(report.to_json()))
    for key in ("eer_skilled", "eer_random", "frr", "far_skilled", "far_random", "refer_rate", "eer_skilled_swapped"):
        assert data[key] == report.figures[key].mean
        assert data[f"{key}_std"] == report.figures[key].std
        assert 0.0 <= data[key] <= 1.0

    # text for the CLI
    text = evaluation.render_text(report)
    assert all("\n" not in line for line in text)
    assert any(line.strip().startswith("EER, skilled forgeries") and "±" in line for line in text)
    assert "written:" in text


def test_same_seed_same_report(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data", writers=3, genuine=4, forged=1)
    a = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=2, seed=1)
    b = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=2, seed=1)
    c = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=2, seed=2)
    assert a.to_json() == b.to_json()
    assert a.to_json()["per_split"] != c.to_json()["per_split"]


def test_bad_images_are_skipped_and_listed(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data", writers=3, genuine=4, forged=1)
    (root / "writer0" / "genuine" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "writer1" / "genuine" / "empty.png").write_bytes(b"")
    from PIL import Image

    Image.new("L", (300, 100), 250).save(root / "writer1" / "forged" / "blank.png")
    (root / "writer2" / "genuine" / "g9-copy.png").write_bytes((root / "writer2" / "genuine" / "g0.png").read_bytes())
    (root / "writer2" / "genuine" / ".DS_Store").write_bytes(b"junk")
    (root / "notes").mkdir()  # not a writer: no genuine/ folder
    report = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=1)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert sorted(reasons) == ["blank.png", "broken.png", "empty.png", "g9-copy.png"]
    assert "not a readable image" in reasons["broken.png"] or "damaged" in reasons["broken.png"]
    assert "empty" in reasons["empty.png"]
    assert "no signature ink" in reasons["blank.png"]
    assert "same file as" in reasons["g9-copy.png"] and "g0.png" in reasons["g9-copy.png"]
    c = report.counts
    assert (c.writers, c.images, c.images_used, c.skipped) == (3, 19, 15, 4)
    assert any("4 image(s) skipped" in w for w in report.warnings)
    assert json.loads(json.dumps(report.to_json()))["skipped"][0]["path"].endswith(".png")


def test_writers_with_too_few_genuine_are_listed(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data", writers=3, genuine=4, forged=1)
    for p in sorted((root / "writer1" / "genuine").iterdir())[1:]:
        p.unlink()
    report = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=1)
    assert report.writers_not_evaluated == ("writer1",)
    assert report.counts.writers_evaluated == 2
    assert any("writer1" in w and "not evaluated" in w for w in report.warnings)


def test_without_forgeries_skilled_figures_are_null(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data", writers=3, genuine=4, forged=0)
    report = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=2, out_dir=tmp_path / "o")
    data = json.loads((tmp_path / "o" / "report.json").read_text())  # strict JSON: no NaN
    assert data["eer_skilled"] is None and data["eer_skilled_std"] is None
    assert data["eer_random"] is not None
    assert all(p["auc"] is None for p in data["probes"])
    assert any("no usable skilled forgeries" in w for w in report.warnings)
    assert any("n/a" in line for line in evaluation.render_text(report))


# ------------------------------------------------------------------------- questioned from another capture


def _recapture(src: Path, dst: Path, *, fmt: str = "PNG", swap: bool = False, factor: float = 1.0) -> Path:
    """The dataset's scans written again under ``dst`` (same writer folders and file stems) in ``fmt``; with
    ``swap``, each writer's files hold the NEXT writer's scans of the same names (a capture that lies); with
    ``factor``, shrunk by it (box filter: a coarser scanner)."""
    from PIL import Image

    writers = sorted(p.name for p in src.iterdir())
    for k, w in enumerate(writers):
        source = writers[(k + 1) % len(writers)] if swap else w
        for sub in ("genuine", "forged"):
            (dst / w / sub).mkdir(parents=True, exist_ok=True)
            for p in sorted((src / source / sub).iterdir()):
                with Image.open(p) as im:
                    im = im.convert("L")
                    if factor != 1.0:
                        im = im.resize((round(im.width * factor), round(im.height * factor)), Image.Resampling.BOX)
                    im.save(dst / w / sub / f"{p.stem}.{fmt.lower()}", format=fmt, quality=95)
    return dst


def test_coarse_questioned_captures_are_counted_and_their_rejections_referred(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data")
    coarse = _recapture(root, tmp_path / "coarse", factor=0.12)  # ink enlarged about 8 times more than the refs'
    guarded = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=2, seed=7, questioned_dir=coarse)
    off = FakeEmbedder(scoring=ScoringConfig(capture_ratio_max=0.0))
    plain = evaluation.run_evaluation(root, embedder=off, references=3, splits=2, seed=7, questioned_dir=coarse)
    assert guarded.capture_mismatch == {"genuine": 16, "skilled": 16, "random": 24}  # every item, 2 splits
    assert plain.capture_mismatch == {"genuine": 0, "skilled": 0, "random": 0}
    assert guarded.to_json()["per_split"]["eer_skilled"] == plain.to_json()["per_split"]["eer_skilled"]  # scores alike
    for kind, referred in guarded.capture_referred.items():  # exactly the rejections the guard turned
        g, p = guarded.confusion[kind], plain.confusion[kind]
        assert (g["accept"], g["refer"] - p["refer"], p["reject"] - g["reject"]) == (p["accept"], referred, referred)
    assert sum(guarded.capture_referred.values()) > 0
    assert any(w.startswith("100 % of the genuine questioned items are scanned at another resolution") for w in guarded.warnings)
    assert json.loads(json.dumps(guarded.to_json()))["capture_mismatch"] == guarded.capture_mismatch
    assert any(line.startswith("capture mismatches (another resolution than the references): genuine 16,")
               for line in evaluation.render_text(guarded))
    # how the coarse folder differs, scan by scan: medians of the measured ratios (exactly imaging's)
    spec = FakeEmbedder().spec
    measured = [
        [imaging.measure_capture(imaging.read_image(p.read_bytes()), spec) for p in (path, coarse / path.relative_to(root))]
        for path in sorted(root.rglob("*.png"))
    ]
    expected = {
        "scale": float(np.median([q.scale / d.scale for d, q in measured])),
        "stroke": float(np.median([q.stroke / d.stroke for d, q in measured])),
    }
    assert guarded.questioned_capture == expected and guarded.to_json()["questioned_capture"] == expected
    assert expected["scale"] > 4 and expected["stroke"] < 0.5  # coarser: ink enlarged more, strokes thinner
    assert (
        f"questioned captures against the dataset's, scan by scan (medians): ink enlarged x{expected['scale']:.2f} "
        f"as much, strokes x{expected['stroke']:.2f} as wide"
    ) in evaluation.render_text(guarded)


def test_questioned_folder_of_the_same_scans_gives_the_same_report(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data")
    again = _recapture(root, tmp_path / "again")
    plain = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=2, seed=7)
    paired = evaluation.run_evaluation(
        root, embedder=FakeEmbedder(), references=3, splits=2, seed=7, questioned_dir=again
    )
    assert paired.questioned == str(again) and plain.questioned is None
    assert paired.to_json()["per_split"] == plain.to_json()["per_split"]
    assert paired.confusion == plain.confusion and paired.counts == plain.counts
    text = evaluation.render_text(paired)
    assert text[1] == f"questioned items read from {again} (references from the folder above)"
    assert json.loads(json.dumps(paired.to_json()))["questioned"] == str(again)
    assert paired.questioned_capture == {"scale": 1.0, "stroke": 1.0} and "questioned_capture" not in plain.to_json()


def test_questioned_items_come_from_the_other_folder(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data")
    liar = _recapture(root, tmp_path / "liar", swap=True)
    report = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=2, seed=7, questioned_dir=liar)
    plain = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=2, seed=7)
    # Every "genuine" questioned item is now another writer's signature: none is accepted any more.
    assert plain.confusion["genuine"]["accept"] > 0
    assert report.confusion["genuine"]["accept"] == 0
    assert report.figures["frr"].mean > plain.figures["frr"].mean


def test_questioned_captures_pair_by_name_across_formats(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "data", writers=3, genuine=4, forged=1)
    jpeg = _recapture(root, tmp_path / "jpeg", fmt="JPEG")
    (jpeg / "writer0" / "genuine" / "g3.jpeg").unlink()  # no counterpart: g3 is left out of both
    (jpeg / "writer1" / "forged" / "extra.png").write_bytes(signature_png(9, 1))  # no scan of that name
    report = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=1, questioned_dir=jpeg)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert sorted(reasons) == ["extra.png", "g3.png"]
    assert reasons["g3.png"].endswith(f"no usable capture of it in {jpeg} (same writer, kind and file name)")
    assert reasons["extra.png"].endswith("no usable scan of that name in the references' folder")
    c = report.counts
    assert (c.images, c.images_used, c.skipped, c.genuine, c.forged) == (15, 14, 2, 11, 3)
    assert any("2 image(s) skipped (unreadable, no ink, duplicate or unpaired)" in w for w in report.warnings)

    (jpeg / "writer2" / "genuine" / "g0.png").write_bytes((root / "writer2" / "genuine" / "g0.png").read_bytes())
    with pytest.raises(UsageError, match=r"g0\.png: same writer, kind and file name as .*g0\.jpeg") as exc:
        evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=1, questioned_dir=jpeg)
    assert exc.value.exit_code == 2
    with pytest.raises(UsageError, match="no such folder"):
        evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=2, splits=1, questioned_dir=tmp_path / "x")


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda p: p / "missing", {}, "no such folder"),
        (lambda p: p, {}, "no writer folder"),
        (lambda p: tiny_dataset(p / "d", writers=2, genuine=3, forged=0), {"references": 3}, "only 0 writer"),
        (lambda p: tiny_dataset(p / "d", writers=2, genuine=3, forged=0), {"references": 0}, "at least 1 reference"),
        (lambda p: tiny_dataset(p / "d", writers=2, genuine=3, forged=0), {"splits": 0}, "at least 1 split"),
    ],
)
def test_usage_errors(tmp_path: Path, make, kwargs, message) -> None:  # noqa: ANN001
    root = make(tmp_path)
    with pytest.raises(UsageError, match=message) as exc:
        evaluation.run_evaluation(root, embedder=FakeEmbedder(), **{"references": 2, "splits": 1, **kwargs})
    assert exc.value.exit_code == 2


# ----------------------------------------------------------------------------------------- probes


def test_image_stats_on_a_drawn_scan() -> None:
    grey = np.full((100, 200), 230, dtype=np.uint8)
    grey[40:46, 20:180] = 60  # one stroke, 6 pixels wide
    s = probes.image_stats(grey, file_kind="PNG L", dpi="300")
    assert (s.paper_grey, s.paper_noise, s.ink_grey) == (230.0, 0.0, 60.0)
    assert s.stroke_width == pytest.approx(2 * 6 * 160 / (2 * 160 + 2 * 4))  # area / half the boundary
    assert (s.pixels, s.aspect, s.file_kind, s.dpi) == (20000, 2.0, "PNG L", "300")


def test_numeric_probe_direction_and_flag() -> None:
    forged = np.array([False] * 20 + [True] * 20)
    lighter = np.r_[np.full(20, 240.0), np.full(20, 252.0)]
    p = probes.numeric_probe("paper_grey", lighter, forged)
    assert (p.auc, p.direction, p.flagged) == (1.0, "paper lighter in forgeries", True)
    p = probes.numeric_probe("paper_grey", -lighter, forged)
    assert (p.auc, p.direction, p.flagged) == (1.0, "paper darker in forgeries", True)
    p = probes.numeric_probe("paper_grey", np.full(40, 240.0), forged)
    assert (p.auc, p.flagged) == (0.5, False)


def test_small_samples_need_more_than_the_level() -> None:
    # AUC 0.75 on 4 + 4 items is well within chance; on 100 + 100 it is not.
    assert not probes.is_flagged(0.75, 4, 4)
    assert probes.is_flagged(0.75, 100, 100)
    assert not probes.is_flagged(0.64, 10_000, 10_000)  # below the documented level, however sure


def test_categorical_probe() -> None:
    forged = np.array([False] * 3 + [True] * 3)
    p = probes.categorical_probe("file_kind", ["PNG L"] * 3 + ["JPEG RGB"] * 3, forged)
    assert p.auc == 1.0 and p.flagged is False  # perfect, but 3 + 3 items could be chance (1 in 20)
    assert p.direction == "JPEG RGB: 3 forged / 0 genuine; PNG L: 0 forged / 3 genuine"
    p = probes.categorical_probe("file_kind", ["PNG L"] * 30 + ["JPEG RGB"] * 30, np.repeat(forged, 10))
    assert (p.auc, p.flagged) == (1.0, True)
    mixed = probes.categorical_probe("file_kind", ["PNG L", "JPEG RGB"] * 30, np.repeat(forged, 10))
    assert (mixed.auc, mixed.flagged) == (0.5, False)


def test_embedding_probe_is_writer_disjoint() -> None:
    rng = np.random.default_rng(0)
    writers = np.repeat([f"w{k}" for k in range(8)], 10)
    forged = np.tile(np.arange(10) >= 5, 8)
    emb = rng.standard_normal((80, 16))
    noise = probes.embedding_probe(emb, writers, forged, seed=0)
    assert noise.auc is not None and not noise.flagged
    emb[forged, 0] += 4.0  # a "forgery" direction shared by all writers
    cue = probes.embedding_probe(emb, writers, forged, seed=0)
    assert cue.auc is not None and cue.auc > 0.95 and cue.flagged
    in_a, in_b = probes.writer_halves(writers, 0)
    assert not set(writers[in_a]) & set(writers[in_b]) and in_a.sum() == 40


def test_capture_warning_names_the_cues() -> None:
    ok = probes.ProbeResult("ink_grey", "ink darkness", 0.55, "darker ink in forgeries", 50, 50, False)
    assert probes.capture_warning([ok]) is None
    bad = probes.ProbeResult("ink_grey", "ink darkness", 0.9, "darker ink in forgeries", 50, 50, True)
    text = probes.capture_warning([ok, bad])
    assert text is not None
    assert "ink darkness (AUC 0.90, darker ink in forgeries)" in text and "NOT trustworthy" in text


# ------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_shipped_model_on_a_synthetic_set(synth_sets: dict[str, Path]) -> None:
    from sigvault.embedder import GRAPH_NAME, shipped_model_dir

    if not (shipped_model_dir() / GRAPH_NAME).is_file():
        pytest.skip("no shipped model yet (sigvault/weights/model.onnx); train and export it first")
    from sigvault.embedder import load_embedder

    model = load_embedder()
    report = evaluation.run_evaluation(synth_sets["biased"], embedder=model, references=3, splits=1)
    assert report.model_id == model.model_id
    assert not [w for w in report.warnings if w.startswith("internal check")]
    assert math.isfinite(report.figures["eer_random"].mean)
    assert report.capture_bias  # the paper probe sees the cue whatever the model
    assert not next(p for p in report.probes if p.key == "embedding").flagged  # the model does not


def _on_documents(src: Path, dst: Path) -> Path:
    """The dataset's scans each pasted at the lower right of a page with printed text (a form), under ``dst``
    with the same writer folders and file stems."""
    import cv2
    from PIL import Image

    for w in sorted(p.name for p in src.iterdir()):
        for sub in ("genuine", "forged"):
            (dst / w / sub).mkdir(parents=True, exist_ok=True)
            for p in sorted((src / w / sub).iterdir()):
                page = np.full((900, 1800), 255, np.uint8)
                for row in range(60, 420, 40):
                    cv2.putText(page, "PAY TO THE ORDER OF  ACCOUNT 0042", (40, row), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1)
                with Image.open(p) as im:
                    scan = np.asarray(im.convert("L"))
                h, w_ = scan.shape
                page[560 : 560 + h, 1100 : 1100 + w_] = np.minimum(page[560 : 560 + h, 1100 : 1100 + w_], scan)
                Image.fromarray(page).save(dst / w / sub / f"{p.stem}.png")
    return dst


def test_questioned_documents_are_verified_on_the_located_signature(tmp_path: Path) -> None:
    """`evaluate --questioned DIR --locate`: each questioned page is verified on the signature found on it, so the
    figures are those of the scans themselves; without --locate the whole page would be compared."""
    root = tiny_dataset(tmp_path / "data")
    pages = _on_documents(root, tmp_path / "pages")
    plain = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=2, seed=7)
    located = evaluation.run_evaluation(
        root, embedder=FakeEmbedder(), references=3, splits=2, seed=7, questioned_dir=pages, locate_questioned=True
    )
    whole = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=2, seed=7, questioned_dir=pages)
    assert located.counts == plain.counts and located.skipped == ()
    assert located.to_json()["per_split"] == plain.to_json()["per_split"]
    assert whole.to_json()["per_split"] != plain.to_json()["per_split"]
    assert located.to_json()["questioned_located"] is True and "questioned_located" not in whole.to_json()
    assert evaluation.render_text(located)[1].endswith("; whole documents, the signature located on each")
    with pytest.raises(UsageError, match="--locate finds the signature on the questioned documents: give --questioned DIR too"):
        evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=2, seed=7, locate_questioned=True)


def test_a_reference_the_enrolment_gate_would_refuse_does_not_stop_the_evaluation(tmp_path: Path) -> None:
    """The protocol chooses each split's references; the enrolment gate (measured apart, by
    scripts/reference_gate.py) must not refuse one of them and stop the evaluation."""
    from PIL import Image

    root = tiny_dataset(tmp_path / "data", writers=4, genuine=4)
    odd = sorted((root / "writer0" / "genuine").iterdir())[0]  # writer 0's genuine folder gets writer 3's signature
    with Image.open(sorted((root / "writer3" / "genuine").iterdir())[0]) as im:
        im.save(odd, compress_level=1)  # other bytes than writer 3's file: not a duplicate scan
    report = evaluation.run_evaluation(root, embedder=FakeEmbedder(), references=3, splits=4, seed=7)
    assert report.counts.writers_evaluated == 4 and report.counts.skipped == 0
