"""``sigvault demo`` as a library call: a disposable home, synthetic people, one decision per questioned image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sigvault import demo
from sigvault.errors import UsageError
from sigvault.imaging import DEFAULT_SPEC
from sigvault.scoring import ScoringConfig


class CanvasEmbedder:
    """A deterministic stand-in for the shipped model: the canvas, pooled and blurred, as the vector."""

    model_id = "fake-canvas-1"
    spec = DEFAULT_SPEC
    scoring = ScoringConfig()
    cohort = None
    cohort_id = None

    def __init__(self) -> None:
        h, w = self.spec.canvas_height // 8, self.spec.canvas_width // 8
        self.dim = h * w

    def embed(self, canvases: np.ndarray) -> np.ndarray:
        n, h, w = canvases.shape
        pooled = canvases.reshape(n, h // 8, 8, w // 8, 8).mean(axis=(2, 4)).reshape(n, -1).astype(np.float32)
        pooled -= pooled.mean(axis=1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    messages: list[str] = []
    result = demo.run_demo(home, people=3, references=4, embedder=CanvasEmbedder(), progress=messages.append)
    assert result.people == ("alice", "bruno", "chen")
    assert result.model == "fake-canvas-1"
    assert [(r.person, r.kind) for r in result.rows] == [
        (p, k) for p in ("alice", "bruno", "chen") for k in ("genuine", "forgery", "other")
    ]
    assert [r.questioned for r in result.rows if r.kind == "other"] == ["other: bruno", "other: chen", "other: alice"]
    for row in result.rows:
        assert row.decision in ("accept", "reject", "refer")
        assert 0.0 <= row.probability <= 1.0
        assert row.threshold == pytest.approx(result.thresholds[row.person])
        assert row.image.is_file() and row.image.is_relative_to(home)
    assert len(list((home / "samples" / "alice").glob("reference-*.png"))) == 4
    assert (home / "sigvault.db").is_file()
    assert any(m.startswith("enrolled alice: 4 references") for m in messages)
    counts = result.counts()
    assert counts["genuine_total"] == counts["forgery_total"] == counts["other_total"] == 3
    assert result.summary().startswith("9 questioned signatures: genuine ")
    lines = demo.render_lines(result)
    assert lines[0].split() == ["person", "questioned", "decision", "score", "threshold", "P(genuine)"]
    assert len(lines) == 2 + 9 + 3
    assert result.to_dict()["counts"] == counts


def test_demo_starts_afresh_in_its_own_home(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    first = demo.run_demo(home, people=2, references=2, embedder=CanvasEmbedder())
    again = demo.run_demo(home, people=2, references=2, embedder=CanvasEmbedder())  # no duplicate-reference error
    assert [(r.decision, r.score) for r in again.rows] == [(r.decision, r.score) for r in first.rows]


def test_demo_refuses_a_home_that_is_not_a_demo(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    home.mkdir()
    (home / "sigvault.db").write_bytes(b"somebody's vault")
    with pytest.raises(UsageError, match="not an earlier sigvault demo"):
        demo.run_demo(home, embedder=CanvasEmbedder())
    assert (home / "sigvault.db").read_bytes() == b"somebody's vault"
    # A demo home with a foreign file in it is refused too.
    demo_home = tmp_path / "demo-home"
    demo.run_demo(demo_home, people=2, references=2, embedder=CanvasEmbedder())
    (demo_home / "notes.txt").write_text("mine")
    with pytest.raises(UsageError):
        demo.run_demo(demo_home, people=2, references=2, embedder=CanvasEmbedder())
    assert (demo_home / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"people": 1}, "people"), ({"people": 99}, "people"), ({"references": 0}, "references")]
)
def test_demo_bad_arguments(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        demo.run_demo(tmp_path / "h", embedder=CanvasEmbedder(), **kwargs)
    assert not (tmp_path / "h").exists()


def test_default_home_ignores_the_user_vault() -> None:
    assert demo.default_home({}) == Path("demo-home")
    assert demo.default_home({"SIGVAULT_HOME": "/tmp/x"}) == Path("/tmp/x")
    assert demo.default_home({"SIGVAULT_HOME": ""}) == Path("demo-home")


@pytest.mark.slow
def test_demo_with_the_shipped_model(tmp_path: Path) -> None:
    """What `make demo` runs: the real weights, four people. Another person's signature is never accepted."""
    from sigvault.embedder import shipped_model_dir

    if not (shipped_model_dir() / "model.onnx").is_file():
        pytest.skip("no shipped weights in sigvault/weights yet")
    result = demo.run_demo(tmp_path / "demo-home")
    assert len(result.rows) == 12
    assert result.model
    assert not [r for r in result.rows if r.kind == "other" and r.decision == "accept"]
