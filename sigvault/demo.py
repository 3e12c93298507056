"""``sigvault demo``: the product end to end on synthetic signatures, in a disposable vault.

The demo draws signatures for a few invented people (:mod:`sigvault.synth`; no dataset image is shipped),
enrolls five genuine signatures each through :class:`sigvault.vault.Vault` exactly as ``sigvault enroll``
does, then verifies, for each person, a fresh genuine signature, a forgery of it, and another person's
signature, as ``sigvault verify`` does. The library returns the results; the CLI renders them.

The demo never touches the user's vault: it always uses an embedded SQLite database in its own home
(``SIGVAULT_DATABASE_URL`` is ignored), by default ``./demo-home``. That home is disposable: each run
deletes the previous demo's files and starts afresh, and a directory holding anything else is refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sigvault import config
from sigvault.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image

    from sigvault.embedder import Embedder

__all__ = ["DEFAULT_HOME", "DemoResult", "DemoRow", "default_home", "render_lines", "run_demo"]

DEFAULT_HOME = Path("demo-home")
MARKER = ".sigvault-demo"
DEMO_SEED = 20_251_125
PEOPLE = ("alice", "bruno", "chen", "dara", "emeka", "farah", "gustav", "hana")
# What a demo home may hold, besides the marker: the vault's own files and the drawn samples.
_OWN_ENTRIES = {config.DATABASE_FILENAME, config.INDEX_DIRNAME, "images", "samples"}

Kind = Literal["genuine", "forgery", "other"]
EXPECTED: dict[str, str] = {"genuine": "accept", "forgery": "reject", "other": "reject"}


@dataclass(frozen=True)
class DemoRow:
    """One questioned signature and the vault's decision on it."""

    person: str  # whose references it was verified against
    questioned: str  # "genuine", "forgery", or "other: <person>" (another person's genuine signature)
    kind: Kind
    expected: str  # "accept" for genuine, "reject" otherwise
    decision: str  # "accept" | "reject" | "refer"
    score: float
    threshold: float
    probability: float
    image: Path

    @property
    def correct(self) -> bool:
        return self.decision == self.expected


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo did; ``rows`` in order (per person: genuine, forgery, other)."""

    home: Path
    model: str
    people: tuple[str, ...]
    references_per_person: int
    thresholds: dict[str, float]
    rows: tuple[DemoRow, ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind in ("genuine", "forgery", "other"):
            rows = [r for r in self.rows if r.kind == kind]
            out[f"{kind}_total"] = len(rows)
            out[f"{kind}_correct"] = sum(r.correct for r in rows)
        out["referred"] = sum(r.decision == "refer" for r in self.rows)
        return out

    def summary(self) -> str:
        """One line, e.g. ``12 questioned: genuine 4/4 accepted, forgeries 3/4 rejected, ...``."""
        c = self.counts()
        return (
            f"{len(self.rows)} questioned signatures: genuine {c['genuine_correct']}/{c['genuine_total']} accepted, "
            f"forgeries {c['forgery_correct']}/{c['forgery_total']} rejected, "
            f"other persons {c['other_correct']}/{c['other_total']} rejected, "
            f"{c['referred']} referred to a reviewer (model {self.model})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "model": self.model,
            "people": list(self.people),
            "references_per_person": self.references_per_person,
            "thresholds": dict(self.thresholds),
            "rows": [asdict(r) | {"image": str(r.image), "correct": r.correct} for r in self.rows],
            "counts": self.counts(),
            "summary": self.summary(),
        }


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """The demo's home: ``SIGVAULT_HOME`` when it is set, else ``./demo-home`` (never the per-user vault)."""
    env = os.environ if env is None else env
    value = env.get(config.ENV_HOME) or None
    return Path(value).expanduser() if value else DEFAULT_HOME


def _prepare_home(home: Path) -> None:
    """Make ``home`` an empty demo home, deleting an earlier demo's files; refuse anything else."""
    if home.exists() and not home.is_dir():
        raise UsageError(f"{home} is a file; give the demo a directory (SIGVAULT_HOME=./demo-home)")
    if home.is_dir():
        entries = {p.name for p in home.iterdir()}
        if entries:
            foreign = sorted(
                e for e in entries - {MARKER} if e not in _OWN_ENTRIES and not e.startswith(config.DATABASE_FILENAME)
            )
            if MARKER not in entries or foreign:
                raise UsageError(
                    f"{home} already holds files that are not an earlier sigvault demo; "
                    "run the demo in an empty or new directory, e.g. SIGVAULT_HOME=./demo-home sigvault demo"
                )
            for name in entries:
                path = home / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("Made by `sigvault demo`: this directory is deleted and remade by every demo run.\n")


def run_demo(
    home: Path | str = DEFAULT_HOME,
    *,
    people: int = 4,
    references: int = 5,
    seed: int = DEMO_SEED,
    skill: float = 0.7,
    model: Path | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Enroll synthetic people and verify genuine, forged and other persons' signatures against them.

    Args:
        home: the demo's disposable home (see the module docstring); made empty first.
        people: how many people (2 to 8).
        references: genuine signatures enrolled per person.
        seed: draws the people's signatures; the same seed gives the same images.
        skill: the forgers' skill, in [0, 1] (see :meth:`sigvault.synth.SyntheticWriter.forgery`).
        model: other weights (``SIGVAULT_MODEL``); None for the shipped model.
        embedder: an embedder to use instead of loading ``model`` (tests).
        progress: called with a short message after each step (the CLI prints them); the library never prints.

    Returns:
        The decisions, one row per questioned signature, and the thresholds set at enrollment.

    Raises:
        UsageError: bad arguments, or ``home`` holds something other than an earlier demo.
        SigvaultError: from the vault (e.g. ModelError when the weights are missing).
    """
    from sigvault import synth
    from sigvault.vault import Vault

    if not 2 <= people <= len(PEOPLE):
        raise UsageError(f"people must be between 2 and {len(PEOPLE)}, got {people}")
    if references < 1:
        raise UsageError(f"references must be at least 1, got {references}")
    note = progress or (lambda _message: None)
    home = Path(home).absolute()
    _prepare_home(home)

    names = PEOPLE[:people]
    writers = [synth.SyntheticWriter(synth.writer_seed(seed, k)) for k in range(people)]
    samples = home / "samples"
    enrolled: dict[str, list[Path]] = {}
    questioned: dict[str, list[tuple[str, Kind, Path]]] = {}
    for k, (name, writer) in enumerate(zip(names, writers, strict=True)):
        folder = samples / name
        folder.mkdir(parents=True)
        refs = []
        for i in range(references):
            path = folder / f"reference-{i + 1:02d}.png"
            writer.genuine(i).save(path, format="PNG")
            refs.append(path)
        enrolled[name] = refs
        other_k = (k + 1) % people
        other = names[other_k]
        items: list[tuple[str, Kind, Path]] = []
        drawn: list[tuple[str, Kind, Image.Image]] = [
            ("genuine", "genuine", writer.genuine(references)),
            ("forgery", "forgery", writer.forgery(k, skill=skill)),
            # Another person's genuine signature, not one of their references nor their questioned one.
            (f"other: {other}", "other", writers[other_k].genuine(references + 1)),
        ]
        for label, kind, image in drawn:
            path = folder / f"questioned-{kind}.png"
            image.save(path, format="PNG")
            items.append((label, kind, path))
        questioned[name] = items
    note(f"drew {people} people's signatures in {samples}")

    settings = config.Settings(
        home=home,
        database_url=config.sqlite_url(home / config.DATABASE_FILENAME),
        model=model,
    )
    rows: list[DemoRow] = []
    thresholds: dict[str, float] = {}
    with Vault.open(settings, embedder=embedder) as vault:
        for name in names:
            result = vault.enroll(name, enrolled[name])
            thresholds[name] = result.threshold
            note(
                f"enrolled {name}: {result.n_references} references, threshold {result.threshold:.3f} "
                f"({result.threshold_method})"
            )
        for name in names:
            for label, kind, path in questioned[name]:
                v = vault.verify(name, path)
                rows.append(
                    DemoRow(
                        person=name,
                        questioned=label,
                        kind=kind,
                        expected=EXPECTED[kind],
                        decision=v.decision,
                        score=v.score,
                        threshold=v.threshold,
                        probability=v.probability,
                        image=path,
                    )
                )
        model_id = vault.model_id
    return DemoResult(
        home=home,
        model=model_id,
        people=names,
        references_per_person=references,
        thresholds=thresholds,
        rows=tuple(rows),
    )


def render_lines(result: DemoResult) -> list[str]:
    """A plain-text table and the summary, for a terminal or a log (the CLI may render its own)."""
    header = ("person", "questioned", "decision", "score", "threshold", "P(genuine)", "")
    body = [
        (
            r.person,
            r.questioned,
            r.decision,
            f"{r.score:.3f}",
            f"{r.threshold:.3f}",
            f"{r.probability:.2f}",
            "" if r.correct else ("(review)" if r.decision == "refer" else "(wrong)"),
        )
        for r in result.rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    right = {3, 4, 5}

    def fmt(row: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    lines = [fmt(header), fmt(tuple("-" * w if h else "" for h, w in zip(header, widths, strict=True)))]
    lines += [fmt(row) for row in body]
    lines.append("")
    lines.append(result.summary())
    lines.append(f"images and vault: {result.home}")
    return lines
