"""The embedding model at run time: an exported ONNX graph run by onnxruntime, with its model card.

Training (torch, timm) lives in ``training/``; the product only needs onnxruntime. A model is a folder (or
an ``.onnx`` file with ``model_card.json`` beside it) holding:

- ``model.onnx``: input ``canvas`` float32 (n, 1, H, W), output ``embedding`` float32 (n, D), rows L2-normalised;
- ``model_card.json``: architecture, preprocessing spec, scoring configuration and calibration, training
  data, evaluation figures;
- ``cohort.npy`` (needed when the card's scoring method is ``wd-svm``): float32 (m, D) embeddings of other
  people's signatures, the negatives of each person's linear SVM (shipped: genuine signatures and skilled
  forgeries of the training writers; the card's ``cohort`` says what a model's holds).

The model id names the architecture and hashes the graph bytes together with the preprocessing spec, so
vectors made by different weights or different preprocessing can never be mixed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sigvault.errors import ModelError
from sigvault.imaging import PreprocessSpec
from sigvault.scoring import ScoringConfig

CARD_NAME = "model_card.json"
GRAPH_NAME = "model.onnx"
COHORT_NAME = "cohort.npy"


class Embedder(Protocol):
    """What the vault needs from a model."""

    model_id: str
    dim: int
    spec: PreprocessSpec
    scoring: ScoringConfig
    cohort: np.ndarray | None  # (m, dim) negatives of wd-svm scoring, or None
    cohort_id: str | None  # hash of the cohort: a stored person scorer made with another cohort is refitted

    def embed(self, canvases: np.ndarray) -> np.ndarray:
        """(n, H, W) float32 canvases -> (n, dim) float32, rows L2-normalised."""
        ...


def shipped_model_dir() -> Path:
    """Folder of the weights shipped inside the package."""
    return Path(str(resources.files("sigvault") / "weights"))


def _locate(path: Path) -> tuple[Path, Path]:
    """-> (graph, card) for a model folder or an .onnx file."""
    if path.is_dir():
        graph, card = path / GRAPH_NAME, path / CARD_NAME
    else:
        graph, card = path, path.with_name(CARD_NAME)
        if not card.exists():
            card = path.with_suffix(".json")
    if not graph.is_file():
        raise ModelError(f"{graph}: model file not found; set SIGVAULT_MODEL to a folder holding {GRAPH_NAME}")
    if not card.is_file():
        raise ModelError(f"{card}: model card not found; export the model with `python -m training.export`")
    return graph, card


def model_id_for(graph_bytes: bytes, card: dict[str, Any]) -> str:
    """Architecture + hash of (graph bytes, preprocessing spec). The spec is hashed as the library resolves it,
    defaults included, so a rule the library adds with a default changes the id of a card that predates it."""
    h = hashlib.sha256(graph_bytes)
    h.update(json.dumps(PreprocessSpec.from_dict(card.get("preprocess", {})).to_dict(), sort_keys=True).encode())
    return f"{card.get('name', 'model')}-{h.hexdigest()[:12]}"


@dataclass
class OnnxEmbedder:
    """An exported model run by onnxruntime (imported lazily)."""

    model_id: str
    dim: int
    spec: PreprocessSpec
    scoring: ScoringConfig
    card: dict[str, Any]
    path: Path
    cohort: np.ndarray | None = None
    cohort_id: str | None = None
    _session: Any = None
    # Canvases per onnxruntime run. Its memory arena keeps the activations of the largest batch run, so a
    # process's peak RSS grows with this while throughput stops growing after a few canvases
    # (benchmarks/embed_batch.py measures both; figures in docs/speed.md, "Audits").
    batch_size: int = 8

    @classmethod
    def load(cls, path: Path | None = None, *, threads: int | None = None) -> OnnxEmbedder:
        path = Path(path) if path is not None else shipped_model_dir()
        graph, card_path = _locate(path)
        try:
            card = json.loads(card_path.read_text())
            graph_bytes = graph.read_bytes()
        except (OSError, ValueError) as exc:
            raise ModelError(f"{card_path}: unreadable model card ({exc}); re-export the model") from None
        try:
            spec = PreprocessSpec.from_dict(card["preprocess"])
            scoring = ScoringConfig.from_dict(card.get("scoring", {}))
            dim = int(card["embed_dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{card_path}: model card incomplete ({exc}); re-export the model") from None
        cohort, cohort_id = _load_cohort(graph.with_name(COHORT_NAME), dim, scoring)
        emb = cls(model_id_for(graph_bytes, card), dim, spec, scoring, card, graph, cohort, cohort_id)
        emb._open(graph_bytes, threads)
        return emb

    def _open(self, graph_bytes: bytes, threads: int | None) -> None:
        """Open the onnxruntime session: ``threads`` intra-op threads (None: ``SIGVAULT_THREADS``, else
        min(2, CPUs)), without spin-waiting.

        onnxruntime's pool threads spin by default between and after runs: that about doubles the CPU time of a
        batch-1 embedding and takes the other core from whatever runs next (audit workers, SQL, other
        processes), for no gain in wall time (docs/speed.md, "Non-model overheads")."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        n = threads if threads is not None else int(os.environ.get("SIGVAULT_THREADS", "0") or 0)
        opts.intra_op_num_threads = n if n > 0 else min(2, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(graph_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: not a loadable ONNX model ({exc}); re-export it") from None
        self._input = self._session.get_inputs()[0].name

    def embed(self, canvases: np.ndarray) -> np.ndarray:
        """(n, H, W) float32 canvases -> (n, dim) float32, rows L2-normalised."""
        if canvases.ndim != 3 or canvases.shape[1:] != (self.spec.canvas_height, self.spec.canvas_width):
            raise ValueError(
                f"expected canvases (n, {self.spec.canvas_height}, {self.spec.canvas_width}), got {canvases.shape}"
            )
        out = np.empty((canvases.shape[0], self.dim), dtype=np.float32)
        for i in range(0, canvases.shape[0], self.batch_size):
            x = np.ascontiguousarray(canvases[i : i + self.batch_size, None], dtype=np.float32)
            (y,) = self._session.run(None, {self._input: x})
            out[i : i + x.shape[0]] = y
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def _load_cohort(path: Path, dim: int, scoring: ScoringConfig) -> tuple[np.ndarray | None, str | None]:
    """The cohort beside the graph; required by wd-svm scoring, ignored otherwise."""
    if scoring.method == "cosine":
        return None, None
    try:
        data = path.read_bytes()
        cohort = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: {scoring.method} scoring needs this cohort file ({exc}); re-export the model"
        ) from None
    if cohort.ndim != 2 or cohort.shape[1] != dim or cohort.shape[0] < 2 or not np.isfinite(cohort).all():
        raise ModelError(f"{path}: cohort must be a finite ({dim}-column) matrix, got {cohort.shape}; re-export the model")
    return np.ascontiguousarray(cohort, dtype=np.float32), hashlib.sha256(data).hexdigest()[:12]


def load_embedder(path: Path | str | None = None, *, threads: int | None = None) -> OnnxEmbedder:
    """The shipped model, or the one at ``path`` (``SIGVAULT_MODEL``)."""
    return OnnxEmbedder.load(Path(path) if path is not None else None, threads=threads)
