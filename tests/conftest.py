"""Shared fixtures: a deterministic fake embedder, synthetic signature images, SQLite and PostgreSQL vaults.

Images are drawn here with Pillow (never taken from a dataset). Storage, vault and CLI tests run against
SQLite and the real PostgreSQL server on 127.0.0.1 (a fresh database per test, dropped afterwards); the
PostgreSQL cases are skipped with a visible reason only when no server is reachable.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sigvault.config import Settings, sqlite_url
from sigvault.imaging import PreprocessSpec
from sigvault.scoring import ScoringConfig

PG_SERVER = os.environ.get("SIGVAULT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


# ------------------------------------------------------------------------------------------ fake model


@dataclass
class FakeEmbedder:
    """Satisfies the Embedder contract: block-average the canvas to 8x16, centre, project with a fixed
    random matrix, L2-normalise. Deterministic, fast, and similar strokes give similar vectors."""

    seed: int = 0
    dim: int = 32
    spec: PreprocessSpec = field(default_factory=lambda: PreprocessSpec(canvas_height=64, canvas_width=128))
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    cohort: np.ndarray | None = None  # wd-svm tests give one (fake_cohort)
    cohort_id: str | None = None
    calls: int = 0

    def __post_init__(self) -> None:
        self.model_id = f"fake-{self.seed}"
        self._proj = np.random.default_rng(self.seed).standard_normal((8 * 16, self.dim)).astype(np.float32)

    def embed(self, canvases: np.ndarray) -> np.ndarray:
        n, h, w = canvases.shape
        assert (h, w) == (self.spec.canvas_height, self.spec.canvas_width)
        self.calls += 1
        pooled = canvases.reshape(n, 8, h // 8, 16, w // 16).mean(axis=(2, 4)).reshape(n, -1)
        pooled = pooled - pooled.mean(axis=1, keepdims=True)
        out = np.vstack([row @ self._proj for row in pooled])  # row by row: a vector's value never depends on its batch
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


# ----------------------------------------------------------------------------------------- images


def signature_png(person: int, variant: int = 0, *, size: tuple[int, int] = (600, 200), jitter: float = 4.0) -> bytes:
    """A synthetic signature: the person's fixed random stroke, redrawn with small jitter per variant."""
    base = np.random.default_rng([person, 0])
    w, h = size
    xs = np.linspace(0.08 * w, 0.92 * w, 9)
    ys = base.uniform(0.25 * h, 0.75 * h, size=9)
    noise = np.random.default_rng([person, variant + 1]).normal(0.0, jitter, size=(2, 9)) if variant else 0.0
    points = np.stack([xs, ys]) + noise
    im = Image.new("L", size, 255)
    draw = ImageDraw.Draw(im)
    draw.line([(float(x), float(y)) for x, y in points.T], fill=0, width=5, joint="curve")
    draw.ellipse((points[0, 2] - 15, points[1, 2] - 25, points[0, 2] + 15, points[1, 2] + 25), outline=0, width=4)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class ImageFactory:
    directory: Path

    def write(self, name: str, person: int, variant: int = 0, **kw: object) -> Path:
        path = self.directory / name
        path.write_bytes(signature_png(person, variant, **kw))  # type: ignore[arg-type]
        return path

    def refs(self, person: int, n: int, prefix: str | None = None) -> list[Path]:
        prefix = prefix or f"p{person}"
        return [self.write(f"{prefix}-ref{i}.png", person, i) for i in range(1, n + 1)]


@pytest.fixture
def images(tmp_path: Path) -> ImageFactory:
    directory = tmp_path / "images"
    directory.mkdir()
    return ImageFactory(directory)


# --------------------------------------------------------------------------------------- databases


def _pg_admin():  # noqa: ANN202 - sqlalchemy Engine, imported lazily
    from sqlalchemy import create_engine

    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")


_PG_REASON: list[str] = []


def _pg_unreachable() -> str | None:
    """None if the PostgreSQL server answers, else the reason (computed once)."""
    if not _PG_REASON:
        from sqlalchemy import text

        try:
            engine = _pg_admin()
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _PG_REASON.append("")
        except Exception as exc:  # any failure to connect means: skip, saying why
            _PG_REASON.append(
                f"PostgreSQL at {PG_SERVER} unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            )
    return _PG_REASON[0] or None


@contextmanager
def pg_database(prefix: str = "sigvault_test") -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database of its own name, dropped afterwards; skips the test
    when no server is reachable."""
    reason = _pg_unreachable()
    if reason:
        pytest.skip(reason)
    from sqlalchemy import text

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with pg_database() as url:
        yield url


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, home: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of the parametrized backend (the SQLite file lives in the home)."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return sqlite_url(home / "sigvault.db")


@pytest.fixture
def settings(home: Path, db_url: str) -> Settings:
    return Settings(home=home, database_url=db_url)


@pytest.fixture
def vault(settings: Settings, embedder: FakeEmbedder) -> Iterator[object]:
    """A vault at head schema over the parametrized backend, with the fake embedder."""
    from sigvault.vault import Vault, upgrade_database

    upgrade_database(settings)
    v = Vault.open(settings, embedder=embedder)
    try:
        yield v
    finally:
        v.close()
