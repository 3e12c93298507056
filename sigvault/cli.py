"""The ``sigvault`` command line: parse, resolve settings, call ONE library function, render text or JSON.

This is the only module that prints or exits. Every :class:`~sigvault.errors.SigvaultError` becomes one
line ``error: <message>`` on stderr and its exit code (1 runtime error, 2 usage error); 0 means the
command did its job (a rejected signature is a completed verification).

Heavy libraries (numpy, SQLAlchemy, FAISS, onnxruntime) are imported inside command bodies only, so
``sigvault --help`` stays instant.

Adding a command: write the work as a library function (in its own module), then add a small function
here under the matching section, decorated with ``@app.command()`` (or a sub-app's) and ``@_handled``,
with a docstring whose last paragraph is an ``Example:`` block. Commands whose work is owned by other
modules (``audit``, ``evaluate``, ``demo``) are in the "other modules" section at the end.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from sigvault.errors import SigvaultError, UsageError

if TYPE_CHECKING:
    from sigvault.config import Settings
    from sigvault.vault import Vault

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="sigvault",
    help=(
        "Offline handwritten-signature verification: enroll reference signatures, verify questioned ones.\n\n"
        "Data lives in SIGVAULT_HOME (or --home); SIGVAULT_DATABASE_URL selects another database (PostgreSQL "
        "works), SIGVAULT_MODEL other weights. Exit codes: 0 done (a rejected signature is still a completed "
        "verification), 1 runtime error, 2 usage error.\n\n"
        "\b\nExample:\n  sigvault enroll alice ref1.png ref2.png ref3.png\n  sigvault verify alice cheque-0042.png"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
people_app = typer.Typer(help="List, inspect and remove enrolled persons; override thresholds.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
index_app = typer.Typer(help="The FAISS index (a cache of the database).", no_args_is_help=True)
log_app = typer.Typer(help="The tamper-evident decision log.", no_args_is_help=True)
app.add_typer(people_app, name="people")
app.add_typer(db_app, name="db")
app.add_typer(index_app, name="index")
app.add_typer(log_app, name="log")
keys_app = typer.Typer(help="API keys of the HTTP service (`sigvault serve`).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
ImageArg = Annotated[
    Path, typer.Argument(help="Image file of a signature (PNG, JPEG, TIFF, BMP, GIF).", show_default=False)
]
PersonArg = Annotated[str, typer.Argument(help="The person's id (name or customer number).", show_default=False)]
RegionOpt = Annotated[
    str | None,
    typer.Option("--region", metavar="X,Y,W,H", help="Use only this zone of a whole cheque or form: pixels, or % of the image (58%,54%,40%,27%)."),
]
LayoutOpt = Annotated[str | None, typer.Option("--layout", metavar="NAME", help="Use the signature zone of this layout (see --layouts).")]
LayoutsOpt = Annotated[
    Path | None,
    typer.Option("--layouts", metavar="FILE", help="Layouts file (TOML) for --layout; default <home>/layouts.toml.", show_default=False),
]
LocateOpt = Annotated[bool, typer.Option("--locate", help="The image may be a whole document: find the signature on it.")]
_PAGE_HELP = "Page N (from 1) of a multi-page TIFF, which is refused without it."
PageOpt = Annotated[int | None, typer.Option("--page", min=1, metavar="N", help=_PAGE_HELP, show_default=False)]
ForceEnrolOpt = Annotated[
    bool,
    typer.Option("--force", help="Enrol references the enrolment gate refuses (logged, with --reason)."),
]


# -------------------------------------------------------------------------------------------- plumbing


@dataclass(frozen=True)
class _Flags:
    home: Path | None
    database_url: str | None
    model: Path | None
    operator: str | None
    reason: str | None


@app.callback()
def _main(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option("--home", help="Data directory [env: SIGVAULT_HOME].")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="SQLAlchemy URL [env: SIGVAULT_DATABASE_URL].")
    ] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Model folder or .onnx [env: SIGVAULT_MODEL].")] = None,
    operator: Annotated[
        str | None,
        typer.Option(
            "--operator", help="Who asks, recorded with every log entry [env: SIGVAULT_OPERATOR; default: the OS user]."
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why, recorded with every log entry this command makes.")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=lambda v: _version(v), help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = _Flags(home, database_url, model, operator, reason)


def _version(show: bool) -> None:
    if show:
        from sigvault import __version__

        typer.echo(f"sigvault {__version__}")
        raise typer.Exit(0)


def _handled(fn: F) -> F:
    """Turn library errors into ``error: <message>`` on stderr and the error's exit code, never a traceback;
    with ``--json``, into one JSON object on stdout (:func:`_fail`).

    ``SIGVAULT_DEBUG=1`` re-raises unexpected exceptions with their traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except SigvaultError as exc:
            from sigvault.audit.records import error_kind

            _fail(str(exc), exc.exit_code, kind=error_kind(exc), as_json=as_json)
        except KeyboardInterrupt:
            _fail("interrupted", 130, kind="interrupted", as_json=as_json)
        except BrokenPipeError:  # the reader went away (`sigvault log export | head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("SIGVAULT_DEBUG"):
                raise
            detail = " ".join(str(exc).split())[:300]
            message = f"internal error ({type(exc).__name__}: {detail}); rerun with SIGVAULT_DEBUG=1 and report it"
            _fail(message, 1, kind="internal", as_json=as_json)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int, *, kind: str = "failed", as_json: bool = False) -> None:
    """Exit with ``code``: ``error: <message>`` on stderr, or with ``--json`` one object on stdout,
    ``{"error": true, "kind": ..., "message": ..., "exit_code": ...}`` (``kind`` as in an audit's error rows)."""
    message = " ".join(message.split())
    if as_json:
        _echo_json({"error": True, "kind": kind, "message": message, "exit_code": code})
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class _Bar:
    """Moves a rich progress display: ``bar(done, total)``, ``total`` None while unknown; ``stage`` relabels it."""

    def __init__(self, display: Any, task: Any) -> None:
        self._display, self._task = display, task

    def __call__(self, done: int, total: int | None, stage: str | None = None) -> None:
        label = {"description": stage} if stage is not None else {}
        self._display.update(self._task, completed=done, total=total, **label)


@contextmanager
def _progress(label: str, *, quiet: bool = False) -> Iterator[_Bar | None]:
    """A progress display on stderr while the block runs (rich; removed when done); yields the :class:`_Bar`
    that moves it. Yields None, and shows nothing, with ``quiet`` or when stderr is not a terminal: piped or
    logged output gets no animation."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as display:
        yield _Bar(display, display.add_task(label, total=None))


def _settings(ctx: typer.Context) -> Settings:
    from sigvault.config import Settings

    flags: _Flags = ctx.obj
    return Settings.resolve(
        home=flags.home,
        database_url=flags.database_url,
        model=flags.model,
        operator=flags.operator,
        reason=flags.reason,
    )


@contextmanager
def _vault(ctx: typer.Context) -> Iterator[Vault]:
    from sigvault.vault import Vault

    with Vault.open(_settings(ctx)) as vault:
        yield vault


def _stdin_is_terminal() -> bool:
    """Can a question be asked (``people remove``'s confirmation)? Not when input is a pipe or a file."""
    return sys.stdin.isatty()


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, default=str))


def _rows(pairs: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        typer.echo(f"{key.ljust(width)}  {value}")


# -------------------------------------------------------------------------------- enroll and verify


@app.command()
@_handled
def enroll(
    ctx: typer.Context,
    person: PersonArg,
    images: Annotated[list[Path], typer.Argument(help="Reference signature images.", show_default=False)],
    as_json: JsonFlag = False,
    region: RegionOpt = None,
    layout: LayoutOpt = None,
    layouts: LayoutsOpt = None,
    locate: LocateOpt = False,
    page: PageOpt = None,
    force: ForceEnrolOpt = False,
) -> None:
    """Add reference signatures for a person (creating the person); logged.

    All or nothing: if any image is unusable, nothing is enrolled and the error names the file. An image
    already enrolled, for this person or another, is refused. The enrolment gate scores each new reference
    against the person's others: one unlike them (another person's signature, an imitation, a blank, a
    stamp) is refused unless --force, which enrols it and logs it with --reason. Until a person has enough
    references (3 by default), every decision about them is refer. Prints the reference count and
    threshold. From a signature card or an account-opening form, --region, --layout or --locate choose the
    signature's zone of each image; --page N, the page of each multi-page TIFF (the page alone is stored).

    \b
    Example:
      sigvault enroll alice ref1.png ref2.png ref3.png
      sigvault enroll alice signature-card.tif --layout signature-card
      sigvault enroll alice account-opening.tif --page 3
      sigvault --reason "specimen re-signed at the branch" enroll alice ref4.png --force
    """
    from sigvault.documents import DocumentOptions, signature_zone
    from sigvault.imaging import page_name

    options = DocumentOptions(region, layout, layouts, locate)
    settings = _settings(ctx)
    zones = [signature_zone(p, options, home=settings.home, limits=settings.image_limits(), page=page) for p in images]
    with _vault(ctx) as vault:
        result = vault.enroll(
            person, [src for src, _ in zones], names=[page_name(str(p), page) for p in images], force=force
        )
    if as_json:
        _echo_json(result.to_dict())
        return
    verb = "enrolled new person" if result.created else "added to"
    typer.echo(f"{verb} {result.person!r}: {len(result.added)} reference(s) added, {result.n_references} in total")
    typer.echo(f"threshold {result.threshold:.4f} ({result.threshold_method})")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command()
@_handled
def verify(
    ctx: typer.Context,
    person: PersonArg,
    image: ImageArg,
    as_json: JsonFlag = False,
    region: RegionOpt = None,
    layout: LayoutOpt = None,
    layouts: LayoutsOpt = None,
    locate: LocateOpt = False,
    page: PageOpt = None,
) -> None:
    """Verify a questioned signature against the person's references.

    Decision accept, reject or refer (a review band around the person's threshold), with the fused score,
    the calibrated probability that the signature is genuine, the threshold and the similarity to each
    reference. Every verification is recorded in the decision log. On a whole cheque or form, --region,
    --layout or --locate choose the zone compared; the box used is printed and kept with the decision.
    --page N chooses the page of a multi-page TIFF (kept with the decision too).

    \b
    Example:
      sigvault verify alice cheque-0042.png
      sigvault verify alice cheque-0042.png --json
      sigvault verify alice cheque-10442.tif --region 58%,54%,40%,27%
      sigvault verify alice mandate-2291.tif --page 2
    """
    from sigvault.documents import DocumentOptions, signature_zone
    from sigvault.imaging import page_name

    settings = _settings(ctx)
    source, zone = signature_zone(image, DocumentOptions(region, layout, layouts, locate), home=settings.home,
                                  limits=settings.image_limits(), page=page)
    details = {**({"region": zone} if zone else {}), **({"page": page} if page is not None else {})}
    with _vault(ctx) as vault:
        result = vault.verify(person, source, name=page_name(str(image), page), details=details or None)
    if as_json:
        _echo_json({**result.to_dict(), **({"region": zone} if zone else {})})
        return
    best = result.best_reference
    _rows(
        [
            ("decision", result.decision),
            *([("referred", f"every decision is refer: {result.referred}")] if result.referred else []),
            ("person", result.person),
            ("score", f"{result.score:.4f}"),
            ("probability", f"{result.probability:.3f} that the signature is genuine"),
            ("threshold", f"{result.threshold:.4f} ({result.threshold_method})"),
            ("best-match", f"reference {best.reference_id} (similarity {best.similarity:.4f})"),
            ("references", "  ".join(f"{r.reference_id}: {r.similarity:.4f}" for r in result.references)),
            ("model", result.model),
            ("decision-id", f"{result.decision_id} (in the decision log)"),
            *([("capture", _capture_note(result.capture_ratio, "the references", _VERIFY_CAPTURE))] if result.capture_ratio is not None else []),
            *([("region", _region_note(zone))] if zone else []),
        ]
    )


def _region_note(zone: dict[str, Any]) -> str:
    """The zone of a document that was compared, as ``verify`` prints it."""
    how = {"region": "--region", "layout": f"layout {zone.get('layout')}", "located": "located"}[str(zone["how"])]
    return f"x {zone['x']}, y {zone['y']}, {zone['w']}x{zone['h']} px of the image ({how})"


_VERIFY_CAPTURE = (
    "a rejection near the threshold is referred, not made. Rescan at the references' resolution, or enroll "
    "references from this kind of scan"
)
_COMPARE_CAPTURE = '"different writers" near the threshold is reported as "uncertain". Scan both alike'


def _capture_note(ratio: float, against: str, outcome: str) -> str:
    """What a capture mismatch (``scoring.capture_guard``) means, for the person reading ``verify`` or ``compare``:
    the ink's scale against ``against``, then what the guard did (``outcome``)."""
    how, strokes = ("coarser", "thinner") if ratio > 1 else ("finer", "thicker")
    return (
        f"the ink is enlarged {ratio:.2f}x as much as in {against} and its strokes are {strokes} in scan pixels: "
        f"a {how} scan; {outcome}"
    )


@app.command()
@_handled
def compare(
    ctx: typer.Context,
    image_a: ImageArg,
    image_b: ImageArg,
    as_json: JsonFlag = False,
    page_a: Annotated[
        int | None, typer.Option("--page-a", min=1, metavar="N", help=f"The first image's page: {_PAGE_HELP}", show_default=False)
    ] = None,
    page_b: Annotated[
        int | None, typer.Option("--page-b", min=1, metavar="N", help=f"The second image's page: {_PAGE_HELP}", show_default=False)
    ] = None,
) -> None:
    """Probability that two signatures were written by the same person (no enrolment needed).

    \b
    Example:
      sigvault compare contract.png cheque.png
      sigvault compare account-opening.tif cheque.png --page-a 3
    """
    from sigvault.imaging import page_source

    limits = _settings(ctx).image_limits()
    (a, name_a), (b, name_b) = page_source(image_a, page_a, limits=limits), page_source(image_b, page_b, limits=limits)
    with _vault(ctx) as vault:
        result = vault.compare(a, b, names=(name_a, name_b))
    if as_json:
        _echo_json(result.to_dict())
        return
    _rows(
        [
            ("label", result.label),
            ("probability", f"{result.probability:.3f} that one person wrote both"),
            ("similarity", f"{result.similarity:.4f}"),
            ("model", result.model),
            *([("capture", _capture_note(result.capture_ratio, "the first", _COMPARE_CAPTURE))] if result.capture_ratio is not None else []),
        ]
    )


@app.command()
@_handled
def identify(
    ctx: typer.Context,
    image: ImageArg,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="How many persons to list.")] = 5,
    as_json: JsonFlag = False,
    page: PageOpt = None,
) -> None:
    """Who most likely signed this: the enrolled persons whose references match best.

    Useful to catch a signature enrolled under the wrong person. Nothing is logged. --page N chooses the page
    of a multi-page TIFF.

    \b
    Example:
      sigvault identify unknown.png --top 3
    """
    from sigvault.imaging import page_source

    source, name = page_source(image, page, limits=_settings(ctx).image_limits())
    with _vault(ctx) as vault:
        candidates = vault.identify(source, top, name=name)
    if as_json:
        _echo_json({"candidates": [c.to_dict() for c in candidates]})
        return
    if not candidates:
        typer.echo("nobody is enrolled")
    for rank, c in enumerate(candidates, start=1):
        typer.echo(
            f"{rank}. {c.person}  score {c.score:.4f}  threshold {c.threshold:.4f}  {c.decision}  "
            f"(best reference {c.best_reference.reference_id})"
        )


@app.command()
@_handled
def reembed(ctx: typer.Context) -> None:
    """Recompute every reference's embedding with the current model, from the stored images.

    Needed after a model change (verify then says "run `sigvault reembed`"). Atomic: on any failure
    nothing changes. Thresholds are recomputed; overrides are cleared and listed. After a change of the
    model's scoring alone (same network), refits every person's scorer at once; verify and audit would
    otherwise refit each person on first use.

    \b
    Example:
      SIGVAULT_MODEL=/opt/models/v2 sigvault reembed
    """
    with _vault(ctx) as vault, _progress("re-embedding references") as update:
        result = vault.reembed(update)
    if result.n_references == 0:
        if result.n_refitted:
            typer.echo(
                f"every reference is already embedded by {result.model}; refitted the scorers of "
                f"{result.n_refitted} of {result.n_persons} persons to its scoring"
            )
        else:
            typer.echo(f"nothing to do: every reference is already embedded by {result.model}")
        return
    typer.echo(f"re-embedded {result.n_references} references of {result.n_persons} persons with {result.model}")
    for person in result.overrides_cleared:
        typer.echo(f"warning: threshold override of {person!r} cleared (set for the previous model)", err=True)


# -------------------------------------------------------------------------------------------- people


@people_app.command("list")
@_handled
def people_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List enrolled persons with their reference count and threshold.

    \b
    Example:
      sigvault people list
    """
    with _vault(ctx) as vault:
        people = vault.people()
    if as_json:
        _echo_json(
            {
                "people": [
                    {
                        "person": p.person_id,
                        "references": p.n_references,
                        "threshold": p.threshold,
                        "override": p.is_override,
                        "created_at": p.created_at.isoformat(),
                    }
                    for p in people
                ]
            }
        )
        return
    if not people:
        typer.echo("nobody is enrolled")
    for p in people:
        threshold = "-" if p.threshold is None else f"{p.threshold:.4f}" + (" (override)" if p.is_override else "")
        typer.echo(f"{p.person_id}\t{p.n_references} references\tthreshold {threshold}")


@people_app.command("show")
@_handled
def people_show(ctx: typer.Context, person: PersonArg, as_json: JsonFlag = False) -> None:
    """Show a person's references with dates, the threshold with how it was set, and whether decisions
    about them may be automatic (if not, why: too few references, an implausible threshold).

    \b
    Example:
      sigvault people show alice
    """
    with _vault(ctx) as vault:
        detail = vault.person(person)
    if as_json:
        _echo_json(detail.to_dict())
        return
    how = "override" if detail.is_override else detail.threshold_method
    set_at = f", set {detail.threshold_set_at:%Y-%m-%d %H:%M} UTC" if detail.threshold_set_at else ""
    typer.echo(f"person     {detail.person} (enrolled {detail.created_at:%Y-%m-%d %H:%M} UTC)")
    typer.echo(f"threshold  {detail.threshold:.4f} ({how}{set_at})" if detail.threshold is not None else "threshold  -")
    if detail.automatic:
        typer.echo("decisions  automatic (accept, refer or reject)")
    else:
        typer.echo(f"decisions  every one is refer: {detail.refer_reason}")
    if detail.capture_scale is not None:
        strokes = f", strokes {detail.capture_stroke:.1f} px wide" if detail.capture_stroke is not None else ""
        typer.echo(
            f"capture    ink scaled {detail.capture_scale:.2f}x into the canvas{strokes} (references' medians); a "
            "questioned scan far coarser or finer is referred rather than rejected near the threshold"
        )
    typer.echo(f"references {len(detail.references)} (at least {detail.min_references} for automatic decisions)")
    for r in detail.references:
        typer.echo(f"  {r.reference_id}\t{r.created_at:%Y-%m-%d %H:%M}\t{r.sha256[:16]}\t{r.source or ''}\t{r.model}")
        if r.forced:
            typer.echo(f"  warning: reference {r.reference_id} was {r.forced}")


@people_app.command("references")
@_handled
def people_references(ctx: typer.Context, person: PersonArg, as_json: JsonFlag = False) -> None:
    """List a person's references: id, SHA-256 prefix, source file, when added, and cosine similarity to the
    others (mean and lowest). One far from all the others is the one to check; remove it with
    `people remove-reference`.

    \b
    Example:
      sigvault people references alice
    """
    from sigvault.vault import normalize_person_id

    with _vault(ctx) as vault:
        refs = vault.references(person)
    if as_json:
        _echo_json({"person": normalize_person_id(person), "references": [r.to_dict() for r in refs]})
        return
    typer.echo("id\tsha256\t\tadded\t\t\tsimilarity to the others (mean, lowest)\tsource")
    for r in refs:
        sims = "-" if r.mean_similarity is None else f"{r.mean_similarity:.4f}, {r.min_similarity:.4f}"
        typer.echo(f"{r.reference_id}\t{r.sha256[:16]}\t{r.created_at:%Y-%m-%d %H:%M}\t{sims}\t\t\t{r.source or ''}")
        if r.forced:
            typer.echo(f"  warning: reference {r.reference_id} was {r.forced}")


@people_app.command("remove-reference")
@_handled
def people_remove_reference(
    ctx: typer.Context,
    person: PersonArg,
    reference_id: Annotated[int, typer.Argument(help="The reference's id (`people references`).", show_default=False)],
    force: Annotated[
        bool, typer.Option("--force", help="Remove it even if fewer references than the minimum are left.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove one reference of a person (its image and vector are erased); the threshold and scorer are
    refitted from the others and the removal is logged.

    Refused when it would leave fewer references than automatic decisions need, unless --force.

    \b
    Example:
      sigvault --reason "signed by the spouse" people remove-reference alice 17
    """
    with _vault(ctx) as vault:
        result = vault.remove_reference(person, reference_id, force=force)
    if as_json:
        _echo_json(result.to_dict())
        return
    how = "override" if result.is_override else result.threshold_method
    typer.echo(
        f"removed reference {result.reference_id} of {result.person!r}: {result.n_references} left, threshold "
        f"{result.threshold:.4f} ({how})"
    )


@people_app.command("remove")
@_handled
def people_remove(
    ctx: typer.Context,
    person: PersonArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Erase a person: references, stored images, vectors, threshold and index entries; logged.

    Asks for confirmation on a terminal; elsewhere (a script), pass --yes. The decision log keeps its
    entries (hashes and scores only).

    \b
    Example:
      sigvault people remove alice
      sigvault --reason "account closed" people remove alice --yes
    """
    with _vault(ctx) as vault:
        detail = vault.person(person)  # an unknown person is an error before any question
        if not yes:
            if not _stdin_is_terminal():
                raise UsageError(
                    f"people remove {detail.person}: no terminal to confirm on; pass --yes to erase the person"
                )
            question = f"erase {detail.person!r}, {len(detail.references)} reference(s) and their stored images?"
            if not typer.confirm(question, default=False, err=True):
                _fail(f"{detail.person!r} was not removed", 1, kind="cancelled", as_json=as_json)
        result = vault.remove(person)
    if as_json:
        _echo_json({"person": result.person, "n_references": result.n_references})
        return
    typer.echo(f"removed {result.person!r} and {result.n_references} reference(s)")
    _echo_erasure(result.erasure)


@people_app.command("threshold")
@_handled
def people_threshold(
    ctx: typer.Context,
    person: PersonArg,
    value: Annotated[float | None, typer.Argument(help="New threshold (override).", show_default=False)] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Drop the override; compute from the references.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Set a value outside the range of thresholds seen on calibration writers.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Override a person's threshold, or go back to the computed one with --auto; logged with the old value.

    A value outside the range thresholds take on calibration writers needs --force.

    \b
    Example:
      sigvault people threshold alice 0.72
      sigvault people threshold alice --auto
    """
    if (value is None) == (not auto):
        raise UsageError("give either a threshold value or --auto")
    with _vault(ctx) as vault:
        change = vault.set_threshold(person, None if auto else value, force=force)
    if as_json:
        _echo_json(
            {
                "person": change.person,
                "threshold": change.threshold,
                "threshold_method": change.threshold_method,
                "is_override": change.is_override,
            }
        )
        return
    how = "override" if change.is_override else change.threshold_method
    typer.echo(f"threshold of {change.person!r} is {change.threshold:.4f} ({how})")


# ------------------------------------------------------------------------------------- db and index


@db_app.command("upgrade")
@_handled
def db_upgrade(ctx: typer.Context) -> None:
    """Create or upgrade the database schema to the version this sigvault needs.

    \b
    Example:
      SIGVAULT_DATABASE_URL=postgresql+psycopg://sigvault@dbhost/sigvault sigvault db upgrade
    """
    from sigvault.vault import upgrade_database

    before, after = upgrade_database(_settings(ctx))
    if before == after:
        typer.echo(f"database already at revision {after}")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to revision {after}")


@db_app.command("compact")
@_handled
def db_compact(ctx: typer.Context) -> None:
    """Rewrite the database so that the bytes of removed persons are physically gone.

    `people remove` does this itself; run it if that step failed (for example while the vault was busy).

    \b
    Example:
      sigvault db compact
    """
    with _vault(ctx) as vault:
        vault.compact()
    typer.echo("database compacted")


def _echo_erasure(erasure: Any) -> None:
    """What became of removed bytes in the database files (:class:`sigvault.erasure.Erasure`): a line on
    stdout when they are erased, a warning on stderr when the erasure waits or cannot be confirmed."""
    if erasure is None:
        return
    if erasure.erased:
        typer.echo(erasure.message())
    else:
        typer.echo(f"warning: {erasure.message()}", err=True)


@db_app.command("purge")
@_handled
def db_purge(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option("--wait", min=0, metavar="SECONDS", help="Wait this long for older transactions to end.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Erase from the database files the bytes of removed persons that still wait there. Exit 1 while they wait.

    On PostgreSQL a removed person's images and vectors stay on disk while a transaction older than the
    removal is open (`people remove` says so and lists them); once those end, this rewrites the tables
    (VACUUM FULL). On SQLite it rewrites the file (VACUUM), as `people remove` does when the vault is idle.

    \b
    Example:
      sigvault db purge
      sigvault db purge --wait 600    # e.g. from cron, after a removal that reported waiting
    """
    with _vault(ctx) as vault:
        erasure = vault.purge(wait=wait)
    if as_json:
        _echo_json(erasure.to_dict())
        if not erasure.erased:
            raise typer.Exit(1)
        return
    if not erasure.erased:
        _fail(erasure.message().replace("their images", "removed images"), 1)
    typer.echo("removed images and vectors are erased from the database files")


@index_app.command("check")
@_handled
def index_check(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check that the index file matches the database (ids and vectors). Exit 1 if it does not.

    \b
    Example:
      sigvault index check
    """
    with _vault(ctx) as vault:
        report = vault.check_index()
    if as_json:
        _echo_json(
            {
                "model": report.model,
                "path": str(report.path),
                "consistent": report.consistent,
                "problem": report.problem,
                "sql": report.sql.__dict__,
                "index": report.index.__dict__ if report.index else None,
            }
        )
    else:
        found = f"{report.index.count} vectors" if report.index else "no readable index"
        typer.echo(f"database {report.sql.count} references, index {found} ({report.path})")
    if not report.consistent:
        _fail(f"index does not match the database: {report.problem}; run `sigvault index rebuild`", 1)
    if not as_json:
        typer.echo("index consistent with the database")


@index_app.command("rebuild")
@_handled
def index_rebuild(ctx: typer.Context) -> None:
    """Rebuild the index file from the database alone.

    \b
    Example:
      sigvault index rebuild
    """
    with _vault(ctx) as vault:
        report = vault.rebuild_index()
    typer.echo(f"index rebuilt: {report.sql.count} vectors ({report.path})")


# ------------------------------------------------------------------------------------------ backups


KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", metavar="FILE", help="Key file of an encrypted backup: 64 hex digits (openssl rand -hex 32).", show_default=False),
]
PassphraseFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        metavar="FILE",
        help="Read the backup passphrase from the first line of FILE [else env: SIGVAULT_BACKUP_PASSPHRASE, else a prompt].",
        show_default=False,
    ),
]


def _backup_secret(key_file: Path | None, passphrase_file: Path | None, *, confirm: bool, what: str) -> Any:
    """The secret of an encrypted backup from the options or the environment, else asked on the terminal
    (twice with ``confirm``); a UsageError when there is no terminal to ask on."""
    from sigvault.encryption import ENV_PASSPHRASE, passphrase, resolve_secret

    secret = resolve_secret(os.environ, key_file=key_file, passphrase_file=passphrase_file)
    if secret is not None:
        return secret
    if not sys.stdin.isatty():
        raise UsageError(
            f"{what}: no passphrase; set {ENV_PASSPHRASE}, or give --passphrase-file or --key-file (no terminal to ask on)"
        )
    text = typer.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    return passphrase(text, "the prompt")


@app.command()
@_handled
def backup(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="New or empty directory for the backup.", show_default=False)],
    as_json: JsonFlag = False,
    encrypt: Annotated[bool, typer.Option("--encrypt", help="Encrypt the backup (AES-256-GCM) with a passphrase or --key-file.")] = False,
    key_file: KeyFileOpt = None,
    passphrase_file: PassphraseFileOpt = None,
) -> None:
    """Back up the whole vault (persons, reference images and vectors, thresholds, decision log, model ids).

    One consistent snapshot, safe while the vault is in use. DIR gets vault.db (SQLite, whatever the
    database) and manifest.json (row counts, model ids, log head, SHA-256 of vault.db). With --encrypt (or
    --key-file) DIR gets vault.db.enc instead, encrypted with the passphrase (SIGVAULT_BACKUP_PASSPHRASE,
    --passphrase-file, or asked twice on the terminal) or the key file; keep either away from the backups.

    \b
    Example:
      sigvault backup /backups/sigvault-2025-11-25
      sigvault backup /backups/sigvault-2025-11-25 --encrypt --key-file /etc/sigvault/backup.key
    """
    from sigvault.backup import backup_vault

    secret = None
    if encrypt or key_file is not None or passphrase_file is not None:
        secret = _backup_secret(key_file, passphrase_file, confirm=True, what=str(directory))
    with _progress("backing up"):
        result = backup_vault(_settings(ctx), directory, secret=secret)
    if as_json:
        _echo_json(result.to_dict())
        return
    tables = result.tables
    log = result.manifest["log"]
    typer.echo(
        f"backed up {tables['persons']} persons, {tables['refs']} references, {tables['decisions']} log entries "
        f"({result.size} bytes{', encrypted' if result.encrypted else ''}) to {directory}"
    )
    for model, n in sorted(result.manifest["models"].items()):
        typer.echo(f"model {model}: {n} references")
    if not log["intact"]:
        typer.echo(f"warning: the decision log was already broken: {log['problem']}", err=True)


@app.command()
@_handled
def restore(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="A directory written by `sigvault backup`.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace the vault the database holds.")] = False,
    as_json: JsonFlag = False,
    key_file: KeyFileOpt = None,
    passphrase_file: PassphraseFileOpt = None,
) -> None:
    """Restore a backup into the configured database (empty, or replaced with --force); rebuild the index.

    The backup's checksums, row counts and decision-log chain are checked; on any failure nothing changes.
    An encrypted backup is decrypted with its passphrase (SIGVAULT_BACKUP_PASSPHRASE, --passphrase-file, or
    asked on the terminal) or --key-file; a wrong one is refused before anything changes.

    \b
    Example:
      SIGVAULT_DATABASE_URL=postgresql+psycopg://sigvault@dbhost/sigvault sigvault restore /backups/sigvault-2025-11-25
      sigvault restore /backups/sigvault-2025-11-25 --key-file /etc/sigvault/backup.key
    """
    from sigvault.backup import is_encrypted_backup, restore_vault

    secret = None
    if key_file is not None or passphrase_file is not None or is_encrypted_backup(directory):
        secret = _backup_secret(key_file, passphrase_file, confirm=False, what=str(directory))
    with _progress("restoring"):
        result = restore_vault(_settings(ctx), directory, force=force, secret=secret)
    if as_json:
        _echo_json(result.to_dict())
        return
    t = result.tables
    verb = "replaced the vault with" if result.replaced else "restored"
    typer.echo(f"{verb} {t['persons']} persons, {t['refs']} references, {t['decisions']} log entries from {directory}")
    for model, n in sorted(result.models.items()):
        typer.echo(f"model {model}: {n} references")
    typer.echo(f"index rebuilt ({len(result.indexes)} file(s)); decision log head {result.log_head[0]}")


# ------------------------------------------------------------------------------------- decision log


@log_app.command("verify")
@_handled
def log_verify(
    ctx: typer.Context,
    export: Annotated[
        Path | None,
        typer.Option("--export", metavar="FILE", help="Check a file written by `log export` (filtered or not) instead."),
    ] = None,
) -> None:
    """Check the decision log's hash chain; names the first edited, deleted or reordered entry. Exit 1 if broken.

    With --export, checks an exported file alone, line by line (each entry's hash, and the chain between
    consecutive entries); no vault is needed.

    \b
    Example:
      sigvault log verify
      sigvault log verify --export alice-2026-12.jsonl
    """
    if export is not None:
        from sigvault.db.decision_log import check_export

        try:
            with open(export, encoding="utf-8") as fh:
                checked = check_export(fh)
        except (OSError, UnicodeDecodeError) as exc:
            raise SigvaultError(f"{export}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        if not checked.ok:
            _fail(f"{export}: {checked.problem}", 1)
        typer.echo(f"{export}: {checked.entries} entries intact ({checked.linked} chained to the entry before)")
        return
    with _vault(ctx) as vault:
        report = vault.log_verify()
    if not report.ok:
        _fail(f"decision log broken at entry {report.first_bad}: {report.problem}", 1)
    typer.echo(f"decision log intact: {report.entries} entries, head {report.head_hash}")


@log_app.command("export")
@_handled
def log_export(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    person: Annotated[str | None, typer.Option("--person", help="Only this person's entries.")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="Only entries of this kind (repeatable): verify, audit, or an event: enroll, reference-remove, "
            "threshold-set, threshold-reset, person-remove, restore, reembed, key-create, key-revoke, review.",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar="YYYY-MM-DD", help="Only entries from this UTC date on.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", metavar="YYYY-MM-DD", help="Only entries up to this UTC date, included.")
    ] = None,
) -> None:
    """Write the decision log as JSON Lines, one entry per line with its hashes: verifications and events
    (enrolments, removals, threshold changes, restores, re-embeddings, keys, reviews), with who asked and why.

    The filters keep each entry's prev_hash and hash, so every exported line can still be checked on its
    own; `log verify` checks the whole chain.

    \b
    Example:
      sigvault log export -o decisions.jsonl
      sigvault log export --person alice --kind enroll --kind threshold-set --since 2026-12-01
    """
    from sigvault.vault import log_filter

    where = log_filter(person=person, kinds=kind or (), since=since, until=until)
    with _vault(ctx) as vault:
        if output is None:
            for entry in vault.log_entries(where=where):
                _echo_json(entry.to_dict())
            return
        from sigvault.durable import atomic_write

        lines = [json.dumps(entry.to_dict(), ensure_ascii=False) + "\n" for entry in vault.log_entries(where=where)]
    try:
        atomic_write(output, "".join(lines).encode())
    except OSError as exc:
        raise SigvaultError(f"{output}: cannot be written ({exc.strerror or exc})") from None
    typer.echo(f"wrote {len(lines)} entries to {output}", err=True)


# -------------------------------------------------------------------------------- HTTP service and keys


@app.command()
@_handled
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (put TLS in a reverse proxy in front).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (several: use PostgreSQL).")] = 1,
) -> None:
    """Serve the vault over HTTP: versioned JSON endpoints under /v1, API keys, OpenAPI docs at /docs.

    Every call but /healthz and /readyz needs `Authorization: Bearer <secret>` of a key made with
    `sigvault keys create`. Needs the `serve` extra (pip install 'sigvault[serve]'). See docs/service.md.

    \b
    Example:
      sigvault keys create teller-app --scope verify
      sigvault serve --port 8080 --workers 2
    """
    try:
        from sigvault.service import serve as run
    except ImportError as exc:
        raise UsageError(f"the HTTP service needs the serve extra ({exc}); pip install 'sigvault[serve]'") from None
    run(_settings(ctx), host=host, port=port, workers=workers)


ScopeOption = Annotated[
    str, typer.Option("--scope", help="verify (verify, compare, identify, read), enroll (also enroll) or admin (also remove, thresholds).")
]


@keys_app.command("create")
@_handled
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name, recorded with each decision it asks for.", show_default=False)],
    scope: ScopeOption = "verify",
    as_json: JsonFlag = False,
) -> None:
    """Create an API key and print its secret, shown this once only (the vault keeps only its hash).

    \b
    Example:
      sigvault keys create teller-app --scope verify
    """
    from sigvault.keys import ApiKeys

    with _vault(ctx) as vault:
        key, secret = ApiKeys(vault.engine, operator=vault.operator, reason=vault.reason).create(name, scope)
    if as_json:
        _echo_json(key.to_dict() | {"secret": secret})
        return
    typer.echo(f"created key {key.name!r} with scope {key.scope}; its secret (shown only now, keep it safe):")
    typer.echo(secret)


@keys_app.command("list")
@_handled
def keys_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List API keys (names, scopes, dates; never secrets).

    \b
    Example:
      sigvault keys list
    """
    from sigvault.keys import ApiKeys

    with _vault(ctx) as vault:
        keys = ApiKeys(vault.engine).list()
    if as_json:
        _echo_json({"keys": [k.to_dict() for k in keys]})
        return
    if not keys:
        typer.echo("no API keys; create one with `sigvault keys create NAME --scope verify`")
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        typer.echo(f"{k.name}\t{k.scope}\tcreated {k.created_at:%Y-%m-%d %H:%M}\t{state}")


@keys_app.command("revoke")
@_handled
def keys_revoke(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)]
) -> None:
    """Revoke an API key: every later call with it is refused. Its name is never given to another key.

    \b
    Example:
      sigvault keys revoke teller-app
    """
    from sigvault.keys import ApiKeys

    with _vault(ctx) as vault:
        key = ApiKeys(vault.engine, operator=vault.operator, reason=vault.reason).revoke(name)
    typer.echo(f"key {key.name!r} is revoked (since {key.revoked_at:%Y-%m-%d %H:%M} UTC)")


# -------------------------------------------------------------------------------------- review loop
# `sigvault review ITEM ...` is short for `sigvault review record ITEM ...`; the work is in sigvault.review.


class _ReviewGroup(TyperGroup):
    """The ``review`` group: a first argument that names no sub-command is the ITEM of ``review record``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            args = ["record", *args]
        return super().resolve_command(ctx, args)


review_app = typer.Typer(
    cls=_ReviewGroup,
    help=(
        "Record reviewers' outcomes beside the model's decisions; how often they disagree.\n\n"
        "`sigvault review ITEM --outcome genuine|forged` is short for `sigvault review record ITEM ...`.\n\n"
        "\b\nExample:\n  sigvault review 1042 --outcome forged --reason 'pen lifts unlike the card'\n"
        "  sigvault review import outcomes.csv\n  sigvault review stats --since 2026-12-01"
    ),
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")


def _decision_id(value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise UsageError(f"ITEM {value!r} is not a decision id; give the decision_id that verify --json or the report shows")
    return int(text)


@review_app.command("record")
@_handled
def review_record(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="The decision's id in the log (decision_id).", show_default=False)],
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="What the reviewer found: genuine or forged.", show_default=False)
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (else the global --reason).", show_default=False)
    ] = None,
    amend: Annotated[
        bool, typer.Option("--amend", help="The decision was already reviewed: record this outcome as superseding it.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Record a reviewer's outcome on a logged decision, beside the model's, in the decision log.

    ITEM is the decision_id of `verify --json`, of the service, or of an audit's report. A decision is
    reviewed once; a second outcome is refused unless --amend, and is then recorded as a new log entry
    that supersedes the first (both stay in the log). The reviewer is --operator (or SIGVAULT_OPERATOR, or
    the OS user).

    \b
    Example:
      sigvault --operator j.meier review 1042 --outcome forged --reason "pen lifts unlike the card"
      sigvault review 1042 --outcome genuine --amend --reason "customer confirmed by phone"
    """
    from sigvault.review import record_review

    if outcome is None:
        raise UsageError("give the reviewer's outcome: --outcome genuine or --outcome forged")
    decision_id = _decision_id(item)
    with _vault(ctx) as vault:
        review = record_review(vault, decision_id, outcome, reason=reason, amend=amend)
    if as_json:
        _echo_json(review.to_dict())
        return
    said = {
        "agree": "the reviewer agrees with the model",
        "disagree": f"the reviewer disagrees: the model {'accepted a forgery' if review.decision == 'accept' else 'rejected a genuine signature'}",
        "referred": "the model had referred it to a reviewer",
    }[review.agreement]
    model_alone = f", the model alone {review.model_decision}" if review.model_decision != review.decision else ""
    _rows(
        [
            ("review-id", f"{review.review_id} (in the decision log)"),
            (
                "decision-id",
                f"{review.decision_id}: {review.decision} for {review.person}{model_alone} (score {review.score:.4f}, "
                f"threshold {review.threshold:.4f}, P(genuine) {review.probability:.3f})",
            ),
            ("outcome", f"{review.outcome}: {said}"),
            ("reviewer", review.operator or "-"),
            ("reason", review.reason or "-"),
            *([("audit", f"{review.audit}, row {review.row + 1 if review.row is not None else '?'}, item {review.item_id}")] if review.audit else []),
            *([("supersedes", f"review {review.supersedes} ({review.superseded_outcome}), which stays in the log")] if review.supersedes else []),
        ]
    )


@review_app.command("import")
@_handled
def review_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Outcomes CSV exported from report.html.", show_default=False)],
    amend: Annotated[
        bool, typer.Option("--amend", help="Decisions already reviewed get the file's outcome as superseding theirs.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Record every outcome of a CSV a reviewer exported from an audit's report.html, all or nothing.

    Columns decision_id, outcome (genuine or forged), and optionally reason and reviewer (else --reason
    and --operator). Every row is checked first; one bad row is reported with its line and value, and
    nothing is recorded. A decision already reviewed is refused unless --amend.

    \b
    Example:
      sigvault --operator back-office review import ~/Downloads/outcomes-cheques-2026-12-05.csv
    """
    from sigvault.review import import_reviews

    with _vault(ctx) as vault:
        result = import_reviews(vault, file, amend=amend)
    if as_json:
        _echo_json(result.to_dict())
        return
    reviews = result.reviews
    ids = f"log entries {reviews[0].review_id} to {reviews[-1].review_id}" if len(reviews) > 1 else f"log entry {reviews[0].review_id}"
    superseding = f", {result.superseded} of them superseding earlier reviews" if result.superseded else ""
    typer.echo(f"recorded {len(reviews)} outcome(s) from {file}{superseding} ({ids})")
    verdicts = [r for r in reviews if r.agreement != "referred"]
    disagree = sum(1 for r in verdicts if r.agreement == "disagree")
    referred = len(reviews) - len(verdicts)
    typer.echo(
        f"reviewers disagree with the model on {disagree} of {len(verdicts)} accepted or rejected item(s); "
        f"{referred} referred item(s) judged"
    )


@review_app.command("stats")
@_handled
def review_stats_command(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", metavar="DATE", help="Only decisions made on or after DATE (YYYY-MM-DD, UTC).")
    ] = None,
    audit: Annotated[
        str | None, typer.Option("--audit", metavar="ID|DIR", help="Only this audit's decisions: its id, or its --out folder.")
    ] = None,
    update_summary: Annotated[
        bool, typer.Option("--update-summary", help="Also write the figures into the audit folder's summary.json (--audit DIR).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """How often the model and the reviewers disagree, per decision and per probability band.

    Each reviewed decision counts once, by its latest review. An accepted item found forged, or a
    rejected one found genuine, is a disagreement; referred items are split into genuine and forged.
    By probability, the model leans genuine at P(genuine) >= 0.5; each band's mean probability stands
    beside the share the reviewers found genuine.

    \b
    Example:
      sigvault review stats --since 2026-12-01
      sigvault review stats --audit audit-2026-12-05/ --update-summary
    """
    from sigvault.review import audit_id_of, parse_since, review_stats, write_summary_figures

    moment = parse_since(since) if since is not None else None
    audit_id = audit_id_of(audit) if audit is not None else None
    if update_summary and (audit is None or not Path(audit).is_dir()):
        raise UsageError("--update-summary needs --audit DIR, the audit's --out folder holding summary.json")
    with _vault(ctx) as vault:
        stats = review_stats(vault, since=moment, audit=audit_id)
    written = None
    if update_summary:
        assert audit is not None
        written = write_summary_figures(Path(audit), stats.to_dict() if stats.reviews else None)
    if as_json:
        _echo_json(stats.to_dict() | ({"summary": str(written)} if written else {}))
        return
    for line in _stats_lines(stats.to_dict()):
        typer.echo(line)
    if written is not None:
        typer.echo(f"wrote these figures into {written} (reviews)")


def _pct_of(n: int | None, rate: float | None) -> str:
    return "-" if n is None or rate is None else f"{n} ({rate * 100:.1f} %)"


def _stats_lines(s: dict[str, Any]) -> list[str]:
    """``review stats`` as text: the decision bands, then the probability bands."""
    scope = " of audit " + str(s["audit"]) if s["audit"] else ""
    scope += f" decided since {s['since']}" if s["since"] else ""
    if not s["reviewed"]:
        return [f"no reviewed decisions{scope}; record outcomes with `sigvault review ITEM --outcome ...`"]
    lines = [f"{s['reviewed']} reviewed decision(s){scope} ({s['reviews']} review(s), {s['superseded']} superseded)", ""]
    lines.append(f"{'decision':<14}{'reviewed':>9}{'genuine':>9}{'forged':>8}  disagree")
    for b in [*s["by_decision"], s["decided"]]:
        lines.append(f"{b['band']:<14}{b['reviewed']:>9}{b['genuine']:>9}{b['forged']:>8}  {_pct_of(b['disagree'], b['disagree_rate'])}")
    lines += ["", f"{'P(genuine)':<14}{'reviewed':>9}{'genuine':>9}{'forged':>8}{'mean P':>8}{'genuine share':>15}  disagree"]
    for b in s["by_probability"]:
        mean = "-" if b["mean_probability"] is None else f"{b['mean_probability']:.3f}"
        share = "-" if b["genuine_rate"] is None else f"{b['genuine_rate']:.3f}"
        lines.append(
            f"{b['band']:<14}{b['reviewed']:>9}{b['genuine']:>9}{b['forged']:>8}{mean:>8}{share:>15}  "
            f"{_pct_of(b['disagree'], b['disagree_rate'])}"
        )
    return lines


# -------------------------------------------------------------------------------------- other modules
# Commands whose work lives in modules owned by other engineers; each calls one library function.


@app.command()
@_handled
def audit(
    ctx: typer.Context,
    manifest: Annotated[
        Path, typer.Argument(help="CSV or JSON Lines: item_id, person, image[, amount].", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (results, summary, report).", show_default=False)
    ],
    workers: Annotated[
        int, typer.Option(min=1, help="Processes that read and preprocess images ahead of embedding (1: none).")
    ] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per embedding batch and transaction.")] = 32,
    policy: Annotated[Path | None, typer.Option(help="Amount-aware policy (TOML).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted audit in --out.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing but errors (and --json); the result files are the same.")
    ] = False,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="Run on a Dask cluster: a scheduler's address (tcp://host:8786) or local:N (N local worker "
            "processes). Needs a PostgreSQL vault and `pip install 'sigvault[cluster]'`.",
            show_default=False,
        ),
    ] = None,
    partition_size: Annotated[
        int, typer.Option(min=1, help="With --cluster: rows per Dask task, a multiple of --batch-size.")
    ] = 256,
    locate: Annotated[
        bool, typer.Option("--locate", help="Images may be whole cheques or forms: find the signature on rows without a region or layout.")
    ] = False,
    layouts: LayoutsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify every item of a manifest as `verify` does; write results, a summary and a review report.

    Exit 1 when some rows could not be decided (their decision is "error"); they are listed in the
    results. An interrupted audit is finished with --resume. A progress bar shows on a terminal. With
    --cluster the rows are decided by Dask workers sharing a PostgreSQL vault: same files, same decisions.
    Whole cheques and forms: a row's optional `region` (X,Y,W,H) or `layout` column, or --locate, says where the
    signature is; the zone compared is in the results and the report draws it on the document.

    \b
    Example:
      sigvault audit cheques-2025-11-25.csv --out audit-2025-11-25/ --workers 2
      sigvault audit cheques-2025-11-25.csv --out audit-2025-11-25/ --quiet   # e.g. from cron
      sigvault audit cheques-2025-11-25.csv --out audit-2025-11-25/ --cluster tcp://scheduler:8786
    """
    from sigvault.audit import AuditProgress, run_audit
    from sigvault.documents import DocumentOptions

    documents = DocumentOptions(layouts=layouts, locate=locate)

    def show(p: AuditProgress) -> None:
        assert update is not None
        if p.partitions is None:
            update(p.done, p.total)
        else:
            stage = f"partitions {p.partitions_done}/{p.partitions}, {p.workers} workers, {p.rows_per_s:.0f} rows/s"
            update(p.done, p.total, stage)

    try:
        with _progress("auditing", quiet=quiet) as update:
            if cluster is not None:
                from sigvault.audit.cluster import run_cluster_audit

                if workers != 1:
                    raise UsageError("--workers is for one machine; with --cluster the Dask workers do the work")
                summary = run_cluster_audit(
                    _settings(ctx),
                    manifest,
                    out,
                    cluster=cluster,
                    batch_size=batch_size,
                    partition_size=partition_size,
                    policy=policy,
                    resume=resume,
                    progress=None if update is None else show,
                    documents=documents,
                )
            else:
                with _vault(ctx) as vault:
                    summary = run_audit(
                        vault,
                        manifest,
                        out,
                        workers=workers,
                        batch_size=batch_size,
                        policy=policy,
                        resume=resume,
                        progress=None if update is None else show,
                        documents=documents,
                    )
    except KeyboardInterrupt:
        hint = f"interrupted; finish the audit with: sigvault audit {manifest} --out {out} --resume"
        _fail(hint, 130, kind="interrupted", as_json=as_json)
    if as_json:
        _echo_json(summary.to_dict())
    elif not quiet:
        counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
        this_run = summary.rows - summary.resumed_rows
        before = f" ({summary.resumed_rows} done before the resume)" if summary.resumed_rows else ""
        typer.echo(f"audited {this_run} items in {summary.elapsed_s:.1f} s{before}; all {summary.rows} items: {counts}")
        typer.echo(f"results and report in {summary.out_dir}")
    if summary.exit_code:
        _fail(f'{summary.failed_rows} item(s) could not be decided; see decision "error" in the results', 1)


@app.command()
@_handled
def evaluate(
    ctx: typer.Context,
    dataset: Annotated[
        Path, typer.Argument(help="Folder laid out as <writer>/{genuine,forged}/*.", show_default=False)
    ],
    references: Annotated[int, typer.Option(help="Genuine signatures enrolled per writer.")] = 5,
    splits: Annotated[int, typer.Option(help="Number of seeded splits.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the splits.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write report.json and plots here.", show_default=False)
    ] = None,
    questioned: Annotated[
        Path | None,
        typer.Option(
            "--questioned",
            help="Score the questioned items from this folder: the same scans captured another way (another "
            "scanner), same writer folders and file names. References still come from DATASET.",
            show_default=False,
        ),
    ] = None,
    locate: Annotated[
        bool,
        typer.Option(
            "--locate", help="With --questioned: its images are whole documents; find the signature on each, as verify --locate."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Measure the system on a folder of scans: error rates, thresholds, capture-bias probes.

    \b
    Example:
      sigvault evaluate my-scans/ --references 5 --splits 5 --seed 0 --out report/
      sigvault evaluate archive-scans/ --questioned cheque-scans/   # references and questioned from two scanners
      sigvault evaluate archive-scans/ --questioned cheque-images/ --locate   # questioned signed on whole cheques
    """
    from sigvault.embedder import load_embedder
    from sigvault.evaluation import render_text, run_evaluation

    settings = _settings(ctx)
    with _progress("evaluating") as update:
        report = run_evaluation(
            dataset,
            embedder=load_embedder(settings.model),
            references=references,
            splits=splits,
            seed=seed,
            out_dir=out,
            limits=settings.image_limits(),
            questioned_dir=questioned,
            locate_questioned=locate,
            progress=None if update is None else (lambda stage, done, total: update(done, total, stage)),
        )
    if as_json:
        _echo_json(report.to_json())
    else:
        for line in render_text(report):
            typer.echo(line)


@app.command()
@_handled
def demo(
    ctx: typer.Context,
    people: Annotated[int, typer.Option(help="How many invented people (2 to 8).")] = 4,
    references: Annotated[int, typer.Option(help="Genuine signatures enrolled per person.")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """The product end to end on synthetic signatures, in a disposable vault (./demo-home by default).

    Enrolls invented people, then verifies a genuine signature, a forgery and another person's signature
    for each, and prints the decisions. Never touches your own vault.

    \b
    Example:
      sigvault demo
      sigvault --home /tmp/sigvault-demo demo --json
    """
    from sigvault.demo import default_home, render_lines, run_demo

    flags: _Flags = ctx.obj
    result = run_demo(
        flags.home or default_home(),
        people=people,
        references=references,
        model=_settings(ctx).model,
        progress=None if as_json else (lambda message: typer.echo(message, err=True)),
    )
    if as_json:
        _echo_json(result.to_dict())
    else:
        for line in render_lines(result):
            typer.echo(line)


def main() -> None:
    """Console-script entry point."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not valid UTF-8 must not crash printing
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    app(prog_name="sigvault")


if __name__ == "__main__":  # pragma: no cover
    main()
