"""Settings, resolved once at the edge: explicit flags > ``SIGVAULT_*`` environment > defaults.

This module is imported by the CLI for every command, so it stays light: no numpy, SQLAlchemy or ONNX.

=============================  =========================================================================
environment variable           meaning (default)
=============================  =========================================================================
``SIGVAULT_HOME``              data directory (``platformdirs.user_data_dir("sigvault")``)
``SIGVAULT_DATABASE_URL``      SQLAlchemy URL (``sqlite:///<home>/sigvault.db``); PostgreSQL works too
``SIGVAULT_MODEL``             path of other ONNX weights (the shipped model)
``SIGVAULT_MAX_IMAGE_PIXELS``  decompression-bomb guard, pixels per image (``imaging.ImageLimits``)
``SIGVAULT_MAX_IMAGE_BYTES``   largest accepted image file, bytes (``imaging.ImageLimits``)
``SIGVAULT_OPERATOR``          who asks, recorded with every log entry (the OS user name)
``SIGVAULT_MIN_REFERENCES``    references a person needs before any automatic accept or reject (the model
                               card's ``scoring.min_references``, 3 for the shipped model)
=============================  =========================================================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sigvault.errors import UsageError

if TYPE_CHECKING:
    from sigvault.imaging import ImageLimits

ENV_HOME = "SIGVAULT_HOME"
ENV_DATABASE_URL = "SIGVAULT_DATABASE_URL"
ENV_MODEL = "SIGVAULT_MODEL"
ENV_MAX_IMAGE_PIXELS = "SIGVAULT_MAX_IMAGE_PIXELS"
ENV_MAX_IMAGE_BYTES = "SIGVAULT_MAX_IMAGE_BYTES"
ENV_OPERATOR = "SIGVAULT_OPERATOR"
ENV_MIN_REFERENCES = "SIGVAULT_MIN_REFERENCES"

OPERATOR_MAX = 200  # as sigvault.db.models (not imported: this module stays free of SQLAlchemy)
REASON_MAX = 1000

DATABASE_FILENAME = "sigvault.db"
INDEX_DIRNAME = "index"


@dataclass(frozen=True)
class Settings:
    """Where the vault lives and which model it uses.

    ``model`` None means the shipped weights; ``max_image_pixels`` / ``max_image_bytes`` None mean the
    defaults of :class:`sigvault.imaging.ImageLimits` (kept there, not repeated here). ``operator`` and
    ``reason`` are written with every log entry the command makes (None: nobody named, no reason given).
    """

    home: Path
    database_url: str
    model: Path | None = None
    max_image_pixels: int | None = None
    max_image_bytes: int | None = None
    operator: str | None = None
    reason: str | None = None
    min_references: int | None = None  # None: the model card's scoring.min_references

    @classmethod
    def resolve(
        cls,
        *,
        home: Path | str | None = None,
        database_url: str | None = None,
        model: Path | str | None = None,
        operator: str | None = None,
        reason: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build the settings from flags (the arguments), then ``env`` (default ``os.environ``), then defaults.

        Raises:
            UsageError: a limit in the environment is not a positive integer; an operator or reason is empty
                or too long.
        """
        env = os.environ if env is None else env
        home_value = home if home is not None else env.get(ENV_HOME) or None
        if home_value is None:
            import platformdirs

            home_path = Path(platformdirs.user_data_dir("sigvault"))
        else:
            home_path = Path(home_value).expanduser()
        home_path = home_path.absolute()
        url = database_url or env.get(ENV_DATABASE_URL) or sqlite_url(home_path / DATABASE_FILENAME)
        model_value = model if model is not None else env.get(ENV_MODEL) or None
        return cls(
            home=home_path,
            database_url=url,
            model=Path(model_value).expanduser() if model_value is not None else None,
            max_image_pixels=_positive_int(env, ENV_MAX_IMAGE_PIXELS),
            max_image_bytes=_positive_int(env, ENV_MAX_IMAGE_BYTES),
            operator=_text("operator", operator or env.get(ENV_OPERATOR) or _os_user(), OPERATOR_MAX),
            reason=_text("reason", reason, REASON_MAX) if reason is not None else None,
            min_references=_positive_int(env, ENV_MIN_REFERENCES),
        )

    @property
    def index_dir(self) -> Path:
        """Directory of the FAISS cache files, one per model."""
        return self.home / INDEX_DIRNAME

    def image_limits(self) -> ImageLimits:
        """The image size limits: the configured ones, imaging's defaults for the rest."""
        from sigvault.imaging import ImageLimits

        given = {"max_pixels": self.max_image_pixels, "max_bytes": self.max_image_bytes}
        return ImageLimits(**{k: v for k, v in given.items() if v is not None})


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of a SQLite file (absolute path: ``sqlite:////abs/path``)."""
    return f"sqlite:///{path}"


def index_path(index_dir: Path, model_id: str) -> Path:
    """The FAISS cache file of one model: ``<index_dir>/<model_id>.faiss`` (model id made filename-safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)
    return index_dir / f"{safe}.faiss"


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(f"{name}={raw!r} is not a positive whole number; fix or unset it")
    return value


def _os_user() -> str | None:
    """The OS user running the command, the operator when none is named; None when it has no name."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return None


def _text(what: str, value: str | None, limit: int) -> str | None:
    """A one-line operator or reason, whitespace collapsed; refused when blank or too long."""
    if value is None:
        return None
    text = " ".join(value.split())
    if not text:
        raise UsageError(f"the {what} is empty: give a name or leave the option out")
    if len(text) > limit:
        raise UsageError(f"the {what} is {len(text)} characters long; the limit is {limit}")
    return text
