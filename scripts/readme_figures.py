"""The figures of README.md and docs/figures.md, generated from the model card's measurements.

    python scripts/readme_figures.py            # rewrite the generated blocks from sigvault/weights/model_card.json
    python scripts/readme_figures.py --check    # exit 1, naming the files, when a block differs from the card

Each block sits between two marker comments (``<!-- generated:NAME ... -->`` and ``<!-- generated:NAME end -->``)
and is rewritten whole; the text around it is left alone. ``tests/test_docs.py`` runs the check, so a model
card re-measured (``python -m training.card``) without running this script fails the tests.

What is rendered, from the card's ``evaluation`` (one ``sigvault evaluate --json`` report per set of writers):

- ``expect`` (README): the deployed rule and the EERs of every set, means over the splits;
- ``accuracy`` (docs/figures.md): the same with standard deviations, FAR on random forgeries and the
  shortcut test;
- ``captures`` (both files), when the card has ``captures``: ``card["captures"][set][capture][side]`` is the
  report of that set under that capture (``sigvault.captures``), on both sides or on the questioned side
  only; every row says how many images were refused and how many writers could not be evaluated, since a
  figure that skipped a quarter of the items describes the rest only.
- ``hygiene`` (README), when the card has ``calibration.reference_hygiene`` (written by
  ``python scripts/reference_gate.py ../shared/datasets --write-card``): what the enrolment gate refuses on the
  calibration writers.

When the reports name another model than the one beside the card (the weights or the preprocessing changed
after the measurement), both blocks say so first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "sigvault" / "weights" / "model_card.json"

Report = Mapping[str, Any]

DATASETS = {
    "cedar-1-30": "CEDAR",
    "sigcomp2011-dutch": "SigComp 2011 Dutch",
    "sigcomp2009-preview": "SigComp 2009 preview",
}
# Captures and sides in the order tables list them (sigvault.captures; "clean" is the scan as it is).
CAPTURES = ("clean", "tinted", "line", "specks", "blurjpeg", "skew", "lowres", "cheque")
SIDES = {"both": "both sides", "questioned": "questioned only"}


def set_label(name: str) -> str:
    """'validation' -> 'validation writers'; 'validation-cedar-1-30' -> 'validation, CEDAR';
    'heldout-sigcomp2009-preview' -> 'held-out SigComp 2009 preview'."""
    kind, _, dataset = name.partition("-")
    pretty = DATASETS.get(dataset, dataset)
    if kind == "validation":
        return f"validation, {pretty}" if dataset else "validation writers"
    if kind == "heldout":
        return f"held-out {pretty}" if dataset else "held-out writers"
    return name


def pct(report: Report, key: str, *, std: bool = False) -> str:
    """A rate of the report in percent with one decimal (and its std over splits); 'n/a' when absent."""
    value = report.get(key)
    if value is None:
        return "n/a"
    text = f"{100 * value:.1f}"
    if std and report.get(f"{key}_std") is not None:
        text += f" ± {100 * report[f'{key}_std']:.1f}"
    return text


def _writers(report: Report) -> int:
    counts = report.get("counts", {})
    return int(counts.get("writers_evaluated", counts.get("writers", 0)))


def _model(card: Mapping[str, Any]) -> str:
    models = {r.get("model") for r in card["evaluation"].values()}
    if len(models) != 1:
        raise SystemExit(f"the card's evaluation reports name {len(models)} models: {sorted(map(str, models))}")
    return str(models.pop())


def _protocol(card: Mapping[str, Any]) -> str:
    """'5 references per person, 4 for held-out ...; 5 seeded splits, seed 0' from the reports."""
    reports = card["evaluation"]
    refs = Counter(int(r["references"]) for r in reports.values()).most_common(1)[0][0]
    parts = [f"{refs} references per person"]
    parts += [f"{r['references']} for {set_label(name)}" for name, r in reports.items() if int(r["references"]) != refs]
    splits = " or ".join(str(n) for n in sorted({int(r["splits"]) for r in reports.values()}))
    seeds = " or ".join(str(n) for n in sorted({int(r["seed"]) for r in reports.values()}))
    return f"{', '.join(parts)}; {splits} seeded splits, seed {seeds}"


def stale_notice(card: Mapping[str, Any], shipped: str | None) -> str:
    """A line saying the figures describe another model than the one shipped beside the card, else ''."""
    measured = _model(card)
    if shipped is None or shipped == measured:
        return ""
    return (f"**These figures were measured with `{measured}`; the model shipped is `{shipped}`** (its weights or "
            "preprocessing changed since): they describe the earlier model until `python -m training.card` "
            "measures this one.")


def shipped_model_id(card_path: Path) -> str | None:
    """The id of the model beside ``card_path`` (``model.onnx``), as ``sigvault verify`` reports it; None when absent."""
    graph = card_path.with_name("model.onnx")
    if not graph.is_file():
        return None
    from sigvault.embedder import model_id_for

    return model_id_for(graph.read_bytes(), json.loads(card_path.read_text(encoding="utf-8")))


def render_expect(card: Mapping[str, Any]) -> str:
    """README: what the deployed rule does on each set of writers the networks never trained on."""
    sets = card["evaluation"]
    head = " | ".join(f"{set_label(name)} ({_writers(r)})" for name, r in sets.items())
    rows = [
        ("genuine signatures rejected (FRR)", "frr"),
        ("skilled forgeries accepted (FAR)", "far_skilled"),
        ("other people's signatures accepted", "far_random"),
        ("items referred to a reviewer", "refer_rate"),
        ("skilled-forgery EER (one global threshold)", "eer_skilled"),
        ("random-forgery EER", "eer_random"),
    ]
    lines = [
        f"Model `{_model(card)}`, measured with `sigvault evaluate` ({_protocol(card)}); mean over the splits, %, "
        "writers in brackets:",
        "",
        f"| | {head} |",
        "|---|" + "---|" * len(sets),
    ]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(pct(r, key) for r in sets.values()) + " |")
    return "\n".join(lines)


def render_accuracy(card: Mapping[str, Any]) -> str:
    """docs/figures.md: every set with standard deviations, random forgeries and the shortcut test."""
    lines = [
        f"Model `{_model(card)}` ({_protocol(card)}), mean ± std over the splits, %:",
        "",
        "| writers (count) | EER skilled | EER random | FRR | FAR skilled | FAR random | refer | "
        "shortcut test: EER skilled, swapped refs | shortcut test: AUC per writer, swapped refs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in card["evaluation"].items():
        auc = r.get("auc_skilled_swapped_writer")
        auc_text = "n/a" if auc is None else f"{auc:.2f} ± {r.get('auc_skilled_swapped_writer_std', 0.0):.2f}"
        lines.append(
            f"| {set_label(name)} ({_writers(r)}) | {pct(r, 'eer_skilled', std=True)} | {pct(r, 'eer_random', std=True)} | "
            f"{pct(r, 'frr', std=True)} | {pct(r, 'far_skilled', std=True)} | {pct(r, 'far_random', std=True)} | "
            f"{pct(r, 'refer_rate', std=True)} | {pct(r, 'eer_skilled_swapped', std=True)} | {auc_text} |"
        )
    return "\n".join(lines)


def capture_row(capture: str, side: str, report: Report) -> str:
    """One row: images refused and writers not evaluated first, then the figures measured on the rest (none when
    too few writers were left to evaluate: ``training.capture_table`` then records the error and the refusals)."""
    if "error" in report:
        return (f"| {capture} | {SIDES.get(side, side)} | {report['refused']} of {report['images']} | all: "
                f"{report['error']} | | | | | |")
    counts = report.get("counts", {})
    refused = f"{counts.get('skipped', 0)} of {counts.get('images', 0)}"
    lost = report.get("writers_not_evaluated") or []
    lost_text = f"{len(lost)} of {counts.get('writers', len(lost))}"
    figures = " | ".join(pct(report, k) for k in ("eer_skilled", "eer_random", "frr", "far_skilled", "refer_rate"))
    return f"| {capture} | {SIDES.get(side, side)} | {refused} | {lost_text} | {figures} |"


def _ordered(keys: Any, order: tuple[str, ...] | Mapping[str, str]) -> list[str]:
    known = [k for k in order if k in keys]
    return known + sorted(k for k in keys if k not in order)


def render_captures(card: Mapping[str, Any]) -> str:
    """The model under each capture, one table per set of writers; empty when the card has no ``captures``."""
    captures = card.get("captures")
    if not captures:
        return ""
    lines = [
        "Under the captures a back office receives (`sigvault.captures`, copies written by `python -m "
        "training.perturb`): each capture on both sides (references and questioned items) or on the questioned "
        "items only; skilled and random EER, then FRR / FAR skilled / refer at the deployed rule, %, measured "
        "on the images that were not refused:",
    ]
    for set_name, by_capture in captures.items():
        lines += [
            "",
            f"**{set_label(set_name)}**",
            "",
            "| capture | side | images refused | writers not evaluated | EER skilled | EER random | FRR | FAR skilled | refer |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for capture in _ordered(by_capture, CAPTURES):
            for side in _ordered(by_capture[capture], SIDES):
                lines.append(capture_row(capture, side, by_capture[capture][side]))
    return "\n".join(lines)


def render_hygiene(card: Mapping[str, Any]) -> str:
    """README: what the enrolment gate refuses on the calibration writers (``scripts/reference_gate.py
    --write-card`` wrote it into the card); empty when the card has no such figures."""
    hygiene = card.get("calibration", {}).get("reference_hygiene")
    if not hygiene:
        return ""
    refused = hygiene["refused_at_gate_margin"]
    enrolled = min(refused, key=int)
    row = refused[enrolled]

    def share(kind: str, one: str, many: str) -> str:
        n_refused, n = row[kind]
        return f"every {one}" if n_refused == n else f"{100 * n_refused / n:.1f} % of {many}"

    others = share("another writer", "other writer's signature", "other writers' signatures")
    blanks = share("blank", "blank signature box", "blank signature boxes")
    stamps = share("stamp", "stamp", "stamps")
    forged = share("skilled forgery", "skilled forgery", "skilled forgeries")
    good = share("good", "genuine signature", "the writers' own signatures")
    return (
        f"On the {hygiene['writers']} calibration writers, with {enrolled} references enrolled (`{hygiene['command']}`), "
        f"the gate refuses {others}, {blanks}, {stamps} and {forged}, and wrongly refuses {good}."
    )


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


# file -> {block name: renderer(card, id of the model shipped beside it)}
BLOCKS: dict[str, dict[str, Callable[[Mapping[str, Any], str | None], str]]] = {
    "README.md": {
        "expect": lambda card, shipped: _join(stale_notice(card, shipped), render_expect(card), render_captures(card)),
        "hygiene": lambda card, shipped: render_hygiene(card),
    },
    "docs/figures.md": {
        "accuracy": lambda card, shipped: _join(stale_notice(card, shipped), render_accuracy(card), render_captures(card)),
    },
}


def markers(name: str) -> tuple[str, str]:
    return (f"<!-- generated:{name} by scripts/readme_figures.py from the model card; do not edit -->",
            f"<!-- generated:{name} end -->")


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the block's markers replaced by ``body``."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"block {name!r}: expected one {start!r} followed by one {end!r}")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{body}\n{end}{after}"


def generate(card: Mapping[str, Any], shipped: str | None, root: Path = ROOT) -> dict[Path, str]:
    """Each file's text with its blocks rendered from ``card`` (and the id of the model shipped with it)."""
    out = {}
    for rel, blocks in BLOCKS.items():
        text = (root / rel).read_text(encoding="utf-8")
        for name, render in blocks.items():
            text = replace_block(text, name, render(card, shipped))
        out[root / rel] = text
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--card", type=Path, default=CARD, help="model card (default: the shipped one)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file differs")
    args = ap.parse_args(argv)
    card = json.loads(args.card.read_text(encoding="utf-8"))
    stale = []
    for path, text in generate(card, shipped_model_id(args.card)).items():
        if path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"{names}: figures differ from the model card; run python scripts/readme_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
