"""The synthetic signature generator: deterministic, varied, fast, and free of capture cues by default."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sigvault.synth import Capture, SyntheticWriter, write_dataset, writer_seed


def sha(im: Image.Image) -> str:
    return hashlib.sha256(im.tobytes()).hexdigest()


def paper_and_ink(im: Image.Image) -> tuple[float, float]:
    """Median grey of the paper and of the ink (pixels clearly darker than the paper)."""
    a = np.asarray(im, dtype=np.float64)
    paper = float(np.median(a))
    ink = a < paper - 60
    return paper, float(np.median(a[ink]))


def test_same_seed_same_pixels() -> None:
    a, b = SyntheticWriter(7), SyntheticWriter(7)
    assert sha(a.genuine(3)) == sha(b.genuine(3))
    assert sha(a.forgery(2, skill=0.4)) == sha(b.forgery(2, skill=0.4))
    # Order of calls does not matter: each sample has its own random stream.
    a.genuine(0)
    assert sha(a.genuine(5)) == sha(SyntheticWriter(7).genuine(5))


def test_golden_pixels() -> None:
    """Pins the generator: demo output and evaluation tests rely on it. If this fails after a Pillow or
    numpy upgrade (not a change of synth.py), check the images by eye and update the hashes."""
    w = SyntheticWriter(1234)
    g, f = w.genuine(0), w.forgery(0, skill=0.5)
    assert (g.size, g.mode) == ((889, 394), "L")
    assert (f.size, f.mode) == ((919, 406), "L")
    assert sha(g) == "50d4f3677f1ef4572d8297f309cb06c2c035474e5207005ff8e7b7848d302c2c"
    assert sha(f) == "950853bebb48722e999ea1a23241067270e1c3a78f8215c947eb929852c5d728"


@pytest.mark.parametrize("seed", [0, 1, 99, 2**31 + 5])
def test_images_look_like_scans(seed: int) -> None:
    w = SyntheticWriter(seed)
    for im in (w.genuine(0), w.forgery(0), w.forgery(1, skill=0.0), w.forgery(2, skill=1.0)):
        assert im.mode == "L"
        width, height = im.size
        assert 860 <= width <= 940 and 380 <= height <= 420
        a = np.asarray(im)
        paper, ink = paper_and_ink(im)
        assert 215 <= paper <= 252
        assert ink < 150
        # Some ink, but mostly paper; nothing touches the borders (the signature sits within margins).
        dark = a < paper - 60
        assert 0.003 < dark.mean() < 0.2
        assert not dark[:5].any() and not dark[-5:].any() and not dark[:, :5].any() and not dark[:, -5:].any()


def test_genuine_samples_vary_but_stay_close() -> None:
    w = SyntheticWriter(11)
    a, b = np.asarray(w.genuine(0), dtype=np.float64), np.asarray(w.genuine(1), dtype=np.float64)
    assert sha(w.genuine(0)) != sha(w.genuine(1))
    assert a.shape != b.shape or np.abs(a - b).mean() > 1.0


def test_writers_differ() -> None:
    assert sha(SyntheticWriter(1).genuine(0)) != sha(SyntheticWriter(2).genuine(0))
    assert SyntheticWriter(1).style.n_letters >= 4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="skill"):
        SyntheticWriter(1).forgery(0, skill=1.5)
    with pytest.raises(ValueError, match="seed"):
        SyntheticWriter(-1)


def test_preprocessing_finds_the_signature() -> None:
    """The library's preprocessing accepts every sample (ink found, canvas filled)."""
    from sigvault.imaging import DEFAULT_SPEC, preprocess

    w = SyntheticWriter(5)
    for im in (w.genuine(0), w.forgery(0)):
        canvas = preprocess(np.asarray(im))
        assert canvas.shape == (DEFAULT_SPEC.canvas_height, DEFAULT_SPEC.canvas_width)
        assert canvas.max() > 0.5
        assert 0.01 < (canvas > 0).mean() < 0.5


def test_no_capture_cue_by_default() -> None:
    """Genuine signatures and forgeries share paper and ink, so only the signature tells them apart."""
    genuine, forged = [], []
    for k in range(12):
        w = SyntheticWriter(300 + k)
        genuine.append(paper_and_ink(w.genuine(0)))
        forged.append(paper_and_ink(w.forgery(0)))
    g, f = np.array(genuine), np.array(forged)
    assert abs(g[:, 0].mean() - f[:, 0].mean()) < 4.0  # paper
    assert abs(g[:, 1].mean() - f[:, 1].mean()) < 12.0  # ink


def test_injected_capture_cue() -> None:
    w = SyntheticWriter(8)
    white = Capture(paper=(253.0, 255.0), noise=(0.5, 1.0))
    dark_ink = Capture(ink_shift=-60.0)
    assert paper_and_ink(w.forgery(0, capture=white))[0] >= 251
    assert paper_and_ink(w.genuine(0))[0] < 250
    assert paper_and_ink(w.genuine(0, capture=dark_ink))[1] < paper_and_ink(w.genuine(0))[1]


def test_write_dataset_layout(tmp_path: Path) -> None:
    info = write_dataset(tmp_path / "ds", writers=3, genuine=4, forged=2, seed=42)
    assert info.writers == ("w000", "w001", "w002")
    for name in info.writers:
        assert sorted(p.name for p in (tmp_path / "ds" / name / "genuine").iterdir()) == [
            "g000.png",
            "g001.png",
            "g002.png",
            "g003.png",
        ]
        assert sorted(p.name for p in (tmp_path / "ds" / name / "forged").iterdir()) == ["f000.png", "f001.png"]
    first = tmp_path / "ds" / "w001" / "genuine" / "g002.png"
    with Image.open(first) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert sha(im) == sha(SyntheticWriter(writer_seed(42, 1)).genuine(2))
    # Same arguments, same files.
    write_dataset(tmp_path / "again", writers=3, genuine=4, forged=2, seed=42)
    for path in (tmp_path / "ds").rglob("*.png"):
        twin = tmp_path / "again" / path.relative_to(tmp_path / "ds")
        assert path.read_bytes() == twin.read_bytes()


def test_write_dataset_forged_capture(tmp_path: Path) -> None:
    write_dataset(tmp_path, writers=2, genuine=1, forged=1, seed=3, forged_capture=Capture(paper=(254.0, 255.0)))
    with Image.open(tmp_path / "w000" / "forged" / "f000.png") as im:
        assert paper_and_ink(im)[0] >= 252
    with Image.open(tmp_path / "w000" / "genuine" / "g000.png") as im:
        assert paper_and_ink(im)[0] < 250


def test_fast_enough() -> None:
    """About 10 ms per image on the 2-core CI machine; the bound is loose so a busy machine passes."""
    w = SyntheticWriter(21)
    w.genuine(0)
    start = time.perf_counter()
    for i in range(10):
        w.genuine(i)
        w.forgery(i)
    per_image = (time.perf_counter() - start) / 20
    assert per_image < 0.08
