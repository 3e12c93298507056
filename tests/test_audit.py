"""``sigvault audit``: manifest validation, policy, error rows, the output files, resume after a crash or a kill.

Most tests use the fake embedder and small Pillow-drawn images, so an audit of a few hundred items takes
a few seconds. The report is opened in a real browser in ``test_audit_report_browser.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FakeEmbedder, ImageFactory
from PIL import Image

from sigvault import audit
from sigvault.audit import (
    CSV_OUTPUT_FIELDS,
    OUTPUT_FIELDS,
    AuditProgress,
    load_policy,
    run_audit,
    validate_manifest,
)
from sigvault.config import Settings, sqlite_url
from sigvault.errors import ManifestError, UsageError
from sigvault.scoring import ScoringConfig

TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def sq_vault(tmp_path: Path, embedder: FakeEmbedder) -> Iterator[object]:
    """A SQLite vault with the fake embedder (tests that need no PostgreSQL run)."""
    from sigvault.vault import Vault, upgrade_database

    settings = Settings(home=tmp_path / "home", database_url=sqlite_url(tmp_path / "home" / "sigvault.db"))
    upgrade_database(settings)
    v = Vault.open(settings, embedder=embedder)
    try:
        yield v
    finally:
        v.close()


SIZE = (400, 140)  # small scans keep the audit fast


@dataclass
class Dataset:
    manifest: Path
    columns: list[str]
    rows: list[dict[str, str]]
    expected_errors: dict[str, int]  # error kind -> rows


def build_dataset(vault, root: Path, *, persons: int = 10, items: int = 290, fmt: str = "csv") -> Dataset:  # noqa: ANN001
    """Enroll ``persons`` persons (4 references each) and write a manifest of ``items`` decidable rows
    (genuine variants and other persons' signatures) plus 6 rows that cannot be decided."""
    images = ImageFactory(root / "images")
    images.directory.mkdir(parents=True, exist_ok=True)
    for p in range(persons):
        vault.enroll(f"p{p}", [images.write(f"p{p}-ref{i}.png", p, i, size=SIZE) for i in range(1, 5)])
    files: dict[tuple[int, int], str] = {}

    def questioned(person: int, variant: int) -> str:
        if (person, variant) not in files:
            images.write(f"q-{person}-{variant}.png", person, variant, size=SIZE)
            files[person, variant] = f"images/q-{person}-{variant}.png"
        return files[person, variant]

    rows: list[dict[str, str]] = []
    for i in range(items):
        p = i % persons
        image = questioned((p + 3) % persons, 20 + i % 3) if i % 7 == 0 else questioned(p, 10 + i % 6)
        rows.append(
            {
                "item_id": f"CHQ-{i:04d}",
                "person": f"p{p}",
                "image": image,
                "amount": f"{(i * 137) % 20000}.50",
                "branch": ['Zürich, "HQ"', "Genève", "line\nbreak"][i % 3],
            }
        )
    (root / "images" / "blank.png").write_bytes(_png(Image.new("L", SIZE, 255)))
    (root / "images" / "garbage.png").write_bytes(b"this is not an image")
    good = rows[1]["image"]
    bad = [
        ("ghost", good, "unknown_person"),
        ("p1", "images/missing.png", "unreadable_image"),
        ("p2", "images/blank.png", "no_ink"),
        ("p3", "", "missing_image"),
        ("p4", "images/garbage.png", "unreadable_image"),
        ("a/b", good, "invalid_person"),
    ]
    for k, (person, image, _) in enumerate(bad):
        rows.insert(17 + 40 * k, {"item_id": f"BAD-{k}", "person": person, "image": image, "amount": "", "branch": ""})
    columns = ["item_id", "person", "image", "amount", "branch"]
    manifest = root / f"manifest.{fmt}"
    if fmt == "csv":
        with open(manifest, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return Dataset(manifest, columns, rows, dict(Counter(kind for _, _, kind in bad)))


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def audit_entries(vault, audit_id: str) -> list:  # noqa: ANN001
    return [e for e in vault.log_entries() if e.kind == "audit" and (e.details or {}).get("audit") == audit_id]


OUTPUT_FILES = ("results.jsonl", "results.csv", "report.html")


def same_files(a: Path, b: Path) -> None:
    """The same result files and report; the report's decision ids (positions in the log) differ between two runs."""

    def content(path: Path) -> bytes:
        data = path.read_bytes()
        return re.sub(rb'decision(-id="| )\d+', rb"decision\1N", data) if path.suffix == ".html" else data

    for name in OUTPUT_FILES:
        assert content(a / name) == content(b / name), f"{name} differs"


# ------------------------------------------------------------------------------ manifest validation

HEADER = "item_id,person,image\n"

CASES = [
    # (file name, content, expected message)
    ("manifest.csv", "", "manifest.csv: empty file; expected a header line naming item_id, person, image"),
    (
        "manifest.csv",
        "item_id,person\nA-1,alice\n",
        "manifest.csv line 1: missing column 'image'; the header must name item_id, person, image (got item_id, person)",
    ),
    (
        "manifest.csv",
        "\n\nitem,person,image\nA-1,alice,a.png\n",
        "manifest.csv line 3: missing column 'item_id'; the header must name item_id, person, image (got item, person, image)",
    ),
    (
        "manifest.csv",
        "item_id,person,image,person\n",
        "manifest.csv line 1: column 'person' appears twice in the header",
    ),
    ("manifest.csv", "item_id,person,,image\n", "manifest.csv line 1: column 3 of the header has no name"),
    (
        "manifest.csv",
        "item_id,person,image,score\n",
        "manifest.csv line 1: column 'score' clashes with an output field of the audit; rename it",
    ),
    (
        "manifest.csv",
        HEADER + "A-1,alice,a.png\nA-2,bob\n",
        "manifest.csv line 3: 2 fields, but the header on line 1 has 3",
    ),
    ("manifest.csv", HEADER + "A-1,alice,a.png\n,bob,b.png\n", "manifest.csv line 3: empty item_id"),
    ("manifest.csv", HEADER + "A-1,alice,a.png\n  ,bob,b.png\n", "manifest.csv line 3: empty item_id"),
    (
        "manifest.csv",
        HEADER + "A-1,alice,a.png\nA-2,bob,b.png\n\nA-3,carol,c.png\nA-2,dave,d.png\n",
        "manifest.csv line 6: duplicate item_id 'A-2' (first on line 3)",
    ),
    (  # a quoted field spanning two lines moves the following line numbers
        "manifest.csv",
        'item_id,person,image,note\nA-1,alice,a.png,"two\nlines"\nA-1,bob,b.png,x\n',
        "manifest.csv line 4: duplicate item_id 'A-1' (first on line 2)",
    ),
    (
        "manifest.csv",
        "item_id,person,image,amount\nA-1,alice,a.png,12.50\nA-2,bob,b.png,ten\n",
        "manifest.csv line 3: amount 'ten' is not a number (write e.g. 1250.00)",
    ),
    (
        "manifest.csv",
        "item_id,person,image,amount\nA-1,alice,a.png,nan\n",
        "manifest.csv line 2: amount 'nan' is not a number (write e.g. 1250.00)",
    ),
    (
        "manifest.csv",
        'item_id,person,image\nA-1,alice,"a.png\n',
        "manifest.csv line 2: malformed CSV (unexpected end of data)",
    ),
    (
        "manifest.jsonl",
        '{"item_id": "A-1", "person": "alice", "image": "a.png"}\n{"item_id": "A-2", "person" "bob"}\n',
        "manifest.jsonl line 2: not valid JSON (Expecting ':' delimiter at column 29)",
    ),
    ("manifest.jsonl", '["A-1", "alice", "a.png"]\n', "manifest.jsonl line 1: expected a JSON object, got list"),
    ("manifest.jsonl", '{"item_id": "A-1", "image": "a.png"}\n', "manifest.jsonl line 1: missing key 'person'"),
    ("manifest.jsonl", '{"item_id": "", "person": "a", "image": "a.png"}\n', "manifest.jsonl line 1: empty item_id"),
    (
        "manifest.jsonl",
        '{"item_id": 1.5, "person": "a", "image": "a.png"}\n',
        "manifest.jsonl line 1: item_id must be a string, got 1.5",
    ),
    (
        "manifest.jsonl",
        '{"item_id": 7, "person": "a", "image": "a.png"}\n\n{"item_id": "7", "person": "b", "image": "b.png"}\n',
        "manifest.jsonl line 3: duplicate item_id '7' (first on line 1)",
    ),
    (
        "manifest.jsonl",
        '{"item_id": "A", "person": "a", "image": "a.png", "decision": "accept"}\n',
        "manifest.jsonl line 1: column 'decision' clashes with an output field of the audit; rename it",
    ),
    (  # no known suffix: sniffed as JSON Lines
        "manifest.txt",
        '{"item_id": "A", "person": "a", "image": "a.png"}\n{"item_id": "A", "person": "a", "image": "a.png"}\n',
        "manifest.txt line 2: duplicate item_id 'A' (first on line 1)",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), CASES)
def test_manifest_errors_name_the_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        validate_manifest(path)
    assert str(info.value) == message
    assert info.value.exit_code == 2


def test_manifest_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_bytes(HEADER.encode() + b"A-1,J\xfcrg,a.png\n")
    with pytest.raises(ManifestError, match=r"^manifest\.csv line 2: not UTF-8 text .*save the manifest as UTF-8$"):
        validate_manifest(path)


def test_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest file"):
        validate_manifest(tmp_path / "nope.csv")


def test_manifest_info_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "\ufeffitem_id,person,image,amount,branch\nA,alice,a.png,1,x\nB,bob,/abs/b.png,,y\n", encoding="utf-8"
    )
    info = validate_manifest(csv_path)
    assert (info.format, info.columns, info.rows) == ("csv", ("item_id", "person", "image", "amount", "branch"), 2)
    assert info.sha256 == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    rows = list(audit.iter_rows(info))
    assert [(r.index, r.line, r.item_id, r.amount) for r in rows] == [(0, 2, "A", 1.0), (1, 3, "B", None)]
    assert rows[1].values == {"item_id": "B", "person": "bob", "image": "/abs/b.png", "amount": "", "branch": "y"}

    jl = tmp_path / "m.jsonl"
    jl.write_text(
        '{"item_id": 1, "person": "a", "image": "a.png"}\n{"item_id": "2", "person": "b", "image": "b.png", "amount": 3, "x": [1]}\n'
    )
    info = validate_manifest(jl)
    assert (info.format, info.columns, info.rows) == ("jsonl", ("item_id", "person", "image", "amount", "x"), 2)
    assert [r.item_id for r in audit.iter_rows(info)] == ["1", "2"]

    header_only = tmp_path / "h.csv"
    header_only.write_text("item_id,person,image,extra\n")
    assert validate_manifest(header_only).columns == ("item_id", "person", "image", "extra")


def test_bad_manifest_stops_before_any_work(sq_vault, tmp_path: Path) -> None:
    data = build_dataset(sq_vault, tmp_path, persons=2, items=10)
    with open(data.manifest, "a", encoding="utf-8") as fh:
        fh.write("CHQ-0003,p0,images/q-0-10.png,1,x\n")
    before = len(list(sq_vault.log_entries()))
    with pytest.raises(
        ManifestError, match=r"^manifest\.csv line 21: duplicate item_id 'CHQ-0003' \(first on line 6\)$"
    ):
        run_audit(sq_vault, data.manifest, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert len(list(sq_vault.log_entries())) == before


# ----------------------------------------------------------------------------------------- policy

POLICY = """
name = "cheques"
missing_amount = "large"

[[band]]
name = "small"
max_amount = 1000

[[band]]
name = "medium"
max_amount = 10000
threshold_margin = 0.02
refer_band = 0.05

[[band]]
name = "large"
threshold_margin = 0.04
min_accept_probability = 0.99
"""


def test_policy_parsing_and_bands(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    policy = load_policy(path)
    assert policy.name == "cheques"
    assert policy.sha256 == hashlib.sha256(POLICY.encode()).hexdigest()
    assert [
        (b.name, b.max_amount, b.threshold_margin, b.refer_band, b.min_accept_probability) for b in policy.bands
    ] == [
        ("small", 1000.0, 0.0, None, None),
        ("medium", 10000.0, 0.02, 0.05, None),
        ("large", None, 0.04, None, 0.99),
    ]
    assert [policy.band_for(a).name for a in (0, 999.99, 1000, 9999, 10000, 1e9, None, -5)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
        "large",
        "small",
    ]
    assert policy.to_dict()["text"] == POLICY


def test_policy_decisions(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    policy = load_policy(path)
    small, medium, large = policy.bands
    cfg = ScoringConfig(refer_band=0.03)
    t = 0.70
    # small: exactly scoring.decide
    assert [policy.decide(small, s, t, 0.5, cfg) for s in (0.74, 0.72, 0.66)] == ["accept", "refer", "reject"]
    # medium: threshold 0.72, refer band 0.05 -> accept from 0.77, reject below 0.67
    assert [policy.decide(medium, s, t, 0.5, cfg) for s in (0.77, 0.76, 0.68, 0.669)] == [
        "accept",
        "refer",
        "refer",
        "reject",
    ]
    # large: threshold 0.74, accept only with probability >= 0.99
    assert policy.decide(large, 0.80, t, 0.995, cfg) == "accept"
    assert policy.decide(large, 0.80, t, 0.98, cfg) == "refer"
    assert policy.decide(large, 0.70, t, 0.98, cfg) == "reject"


BAD_POLICIES = [
    ("name = 'x'\n", "policy.toml: no [[band]] table; a policy needs at least one band"),
    ("[[band]\n", "policy.toml: not a valid TOML policy"),
    ("colour = 1\n[[band]]\n", "policy.toml: unknown key 'colour'; allowed: name, missing_amount, [[band]]"),
    (
        "[[band]]\nmargin = 0.1\n",
        "policy.toml: band 1: unknown key 'margin'; allowed: max_amount, min_accept_probability, name, refer_band, threshold_margin",
    ),
    (
        "[[band]]\nthreshold_margin = -0.1\n",
        "policy.toml: band 1 ('band 1'): threshold_margin must be >= 0 (a policy can only make decisions stricter)",
    ),
    ("[[band]]\nrefer_band = 'wide'\n", "policy.toml: band 1 ('band 1'): refer_band must be a number, got 'wide'"),
    (
        "[[band]]\nmin_accept_probability = 1.5\n",
        "policy.toml: band 1 ('band 1'): min_accept_probability must be between 0 and 1, got 1.5",
    ),
    (
        "[[band]]\nmax_amount = 10\n",
        "policy.toml: the last band ('band 1') must have no max_amount, so that every amount falls in a band",
    ),
    (
        "[[band]]\nname='a'\n[[band]]\nname='b'\n",
        "policy.toml: band 1 ('a') has no max_amount; only the last band may omit it",
    ),
    (
        "[[band]]\nname='a'\nmax_amount=10\n[[band]]\nname='b'\nmax_amount=5\n[[band]]\n",
        "policy.toml: band 2 ('b'): max_amount must be above the previous band's",
    ),
    ("[[band]]\nname='a'\nmax_amount=10\n[[band]]\nname='a'\n", "policy.toml: two bands are named 'a'"),
    ("missing_amount = 'huge'\n[[band]]\nname='a'\n", "policy.toml: missing_amount 'huge' names no band (bands: a)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_POLICIES)
def test_bad_policies(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_policy(path)
    assert str(info.value).startswith(message)
    assert info.value.exit_code == 2


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.toml: cannot read the policy file"):
        load_policy(tmp_path / "nope.toml")


# ------------------------------------------------------------------------------------- end to end


def test_audit_end_to_end(vault, tmp_path: Path) -> None:
    """A few hundred items: every output file checked, decisions equal verify's, one log entry per decision."""
    data = build_dataset(vault, tmp_path)
    seen: list[AuditProgress] = []
    summary = run_audit(vault, data.manifest, tmp_path / "out", workers=2, batch_size=16, progress=seen.append)
    out = tmp_path / "out"
    n = len(data.rows)
    assert n == 296

    # results.jsonl: manifest order, input columns untouched, then the decision fields
    records = read_jsonl(out / "results.jsonl")
    assert [r["item_id"] for r in records] == [r["item_id"] for r in data.rows]
    for record, row in zip(records, data.rows, strict=True):
        assert list(record) == data.columns + list(OUTPUT_FIELDS)
        assert {k: record[k] for k in data.columns} == row
    counts = Counter(r["decision"] for r in records)
    errors = [r for r in records if r["decision"] == "error"]
    assert dict(Counter(r["error_kind"] for r in errors)) == data.expected_errors
    assert {r["item_id"] for r in errors} == {f"BAD-{k}" for k in range(6)}
    assert all(r["error"] and r["score"] is None and r["references"] == [] for r in errors)
    by_id = {r["item_id"]: r for r in records}
    assert by_id["BAD-0"]["error"] == "person 'ghost' is not enrolled; see `sigvault people list`"
    assert by_id["BAD-3"]["error"] == "manifest.csv line 183: no image given"  # row 138, after 44 two-line rows
    assert by_id["BAD-1"]["error"] == f"{tmp_path / 'images' / 'missing.png'}: no such file; check the path"
    decided = [r for r in records if r["decision"] != "error"]
    assert counts["accept"] > 0 and counts["reject"] > 0
    for r in decided:
        assert r["decision"] == r["model_decision"]  # no policy
        assert r["model"] == "fake-0" and r["policy"] is None and r["error"] is None
        assert r["best_reference"] == max(r["references"], key=lambda m: m["similarity"])
        assert len(r["references"]) == 4

    # results.csv: the same rows, flattened
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == data.columns + list(CSV_OUTPUT_FIELDS)
        csv_rows = list(reader)
    assert len(csv_rows) == n
    for c, r in zip(csv_rows, records, strict=True):
        assert {k: c[k] for k in data.columns} == {k: r[k] for k in data.columns}
        assert c["decision"] == r["decision"]
        assert c["score"] == ("" if r["score"] is None else repr(r["score"]))
        assert c["best_reference_id"] == (
            "" if r["best_reference"] is None else str(r["best_reference"]["reference_id"])
        )
        assert c["n_references"] == str(len(r["references"]))
        assert c["error"] == (r["error"] or "")

    # summary.json and the returned summary
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary.to_dict()))
    assert saved["counts"] == {d: counts[d] for d in ("accept", "reject", "refer", "error")}
    assert saved["error_kinds"] == dict(sorted(data.expected_errors.items()))
    assert saved["rows"] == n and saved["decided_this_run"] == n - 6 and saved["resumed_rows"] == 0
    assert saved["refer_rate"] == pytest.approx(counts["refer"] / n)
    assert saved["failed_rows"] == 6 and saved["exit_code"] == 1 and summary.exit_code == 1
    assert saved["model"] == "fake-0" and saved["policy"] is None
    assert (
        saved["items_per_s"] > 0 and saved["manifest_sha256"] == hashlib.sha256(data.manifest.read_bytes()).hexdigest()
    )
    assert saved["report_items"] == counts["reject"] + counts["refer"] + 6 and saved["report_pages"] == 1

    # progress: from 0 to n, monotonic, in the calling thread
    assert seen[0] == AuditProgress(0, n, 0, 0) and seen[-1] == AuditProgress(n, n, 6, 0)
    assert [p.done for p in seen] == sorted(p.done for p in seen)

    # report.html: the review queue in review order (referred, rejects, errors), self-contained
    page = (out / "report.html").read_text(encoding="utf-8")
    order = re.findall(r'<article class="item (\w+)" data-decision="\w+" data-item="([^"]+)"', page)
    assert len(order) == saved["report_items"]
    queue = sorted(
        (r for r in records if r["decision"] != "accept"),
        key=lambda r: (["refer", "reject", "error"].index(r["decision"]), r["probability"] or 0.0),
    )
    assert [item for _, item in order] == [r["item_id"] for r in queue]
    assert [d for d, _ in order] == sorted((d for d, _ in order), key=["refer", "reject", "error"].index)
    assert [d for d, _ in order] == ["refer"] * counts["refer"] + ["reject"] * counts["reject"] + ["error"] * 6
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<script src" not in page and "<link" not in page

    # the decision log: one "audit" entry per decided row, matching the results
    # (with 2 workers, chunks are logged in the order they finish: compare by row)
    entries = sorted(audit_entries(vault, summary.audit_id), key=lambda e: e.details["row"])
    assert len(entries) == len(decided)
    assert [e.details["item_id"] for e in entries] == [r["item_id"] for r in decided]
    for e, r in zip(entries, decided, strict=True):
        assert (e.decision, e.score, e.probability, e.image_sha256) == (
            r["model_decision"],
            r["score"],
            r["probability"],
            r["image_sha256"],
        )

    # the same decision as `verify`, on a sample (verify logs its own entries: checked last)
    for r in decided[::25]:
        v = vault.verify(r["person"], tmp_path / r["image"])
        assert v.decision == r["decision"]
        assert v.score == pytest.approx(r["score"], abs=1e-6)
        assert v.threshold == r["threshold"] and v.best_reference.reference_id == r["best_reference"]["reference_id"]


def test_audit_jsonl_manifest_and_policy(sq_vault, tmp_path: Path) -> None:
    """A JSON Lines manifest with an amount-aware policy: stricter decisions, the policy recorded everywhere."""
    data = build_dataset(sq_vault, tmp_path, persons=4, items=60, fmt="jsonl")
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(
        'name = "strict"\n[[band]]\nname = "small"\nmax_amount = 2000\n'
        '[[band]]\nname = "big"\nthreshold_margin = 0.1\nrefer_band = 0.1\nmin_accept_probability = 0.9999\n'
    )
    summary = run_audit(sq_vault, data.manifest, tmp_path / "out", batch_size=8, policy=policy_path)
    policy = load_policy(policy_path)
    records = read_jsonl(tmp_path / "out" / "results.jsonl")
    cfg = sq_vault.embedder.scoring
    stricter = 0
    for r in records:
        amount = float(r["amount"]) if r["amount"] else None
        band = policy.band_for(amount)
        assert r["policy"]["sha256"] == policy.sha256 and r["policy"]["band"] == band.name
        if r["decision"] == "error":
            continue
        assert r["decision"] == policy.decide(band, r["score"], r["threshold"], r["probability"], cfg)
        assert r["policy"]["effective_threshold"] == r["threshold"] + band.threshold_margin
        stricter += r["decision"] != r["model_decision"]
    assert stricter > 0  # the policy changed some decisions
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["policy"]["sha256"] == policy.sha256 and saved["policy"]["text"] == policy.text
    assert saved["capture_mismatch"] == 0 and all(r["capture_ratio"] is None for r in records)  # one capture
    assert saved["counts"]["refer"] == sum(r["decision"] == "refer" for r in records) > 0
    entries = audit_entries(sq_vault, summary.audit_id)
    assert entries and all(e.details["policy"]["sha256"] == policy.sha256 for e in entries)
    # the decision log records the final decision (policy applied), with the model's own beside it
    by_item = {r["item_id"]: r for r in records}
    for e in entries:
        r = by_item[e.details["item_id"]]
        assert (e.decision, e.details["model_decision"]) == (r["decision"], r["model_decision"])
    assert any(e.decision != e.details["model_decision"] for e in entries)
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as fh:
        assert {row["policy_sha256"] for row in csv.DictReader(fh)} == {policy.sha256}


def test_refuses_to_overwrite_and_checks_resume(sq_vault, tmp_path: Path) -> None:
    data = build_dataset(sq_vault, tmp_path, persons=2, items=8)
    out = tmp_path / "out"
    run_audit(sq_vault, data.manifest, out, batch_size=4)
    with pytest.raises(UsageError, match=r"already holds an audit \(\.audit-state\.json\); pass --resume"):
        run_audit(sq_vault, data.manifest, out)
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(POLICY)
    with pytest.raises(UsageError, match=r"cannot resume the audit in .*: the policy changed since it started"):
        run_audit(sq_vault, data.manifest, out, resume=True, policy=policy_path)
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
    n_log = len(list(sq_vault.log_entries()))
    again = run_audit(sq_vault, data.manifest, out, resume=True)  # a finished audit: nothing left to do
    assert again.decided_this_run == 0 and again.resumed_rows == again.rows
    assert {name: (out / name).read_bytes() for name in OUTPUT_FILES} == before
    assert len(list(sq_vault.log_entries())) == n_log
    with open(data.manifest, "a", encoding="utf-8") as fh:
        fh.write("NEW,p0,images/q-0-10.png,1,x\n")
    with pytest.raises(UsageError, match="the manifest changed since it started"):
        run_audit(sq_vault, data.manifest, out, resume=True)


class _Crash(Exception):
    pass


def test_resume_after_crash_equals_uninterrupted_run(sq_vault, tmp_path: Path) -> None:
    """Crash after a few chunks, tear the last line, resume: the outputs are byte-identical, no row twice."""
    data = build_dataset(sq_vault, tmp_path, persons=6, items=150)
    full = tmp_path / "full"
    run_audit(sq_vault, data.manifest, full, workers=2, batch_size=10)

    crashed = tmp_path / "crashed"

    def crash_after_five_chunks(p: AuditProgress) -> None:
        if p.done >= 50:
            raise _Crash

    with pytest.raises(_Crash):
        run_audit(sq_vault, data.manifest, crashed, workers=2, batch_size=10, progress=crash_after_five_chunks)
    state = json.loads((crashed / ".audit-state.json").read_text())
    # Keep 37 whole lines and half of the 38th: rows 37..49 were logged but are no longer written.
    raw = (crashed / "results.jsonl").read_bytes()
    lines = raw.splitlines(keepends=True)
    assert len(lines) == 50
    (crashed / "results.jsonl").write_bytes(b"".join(lines[:37]) + lines[37][: len(lines[37]) // 2])
    with open(crashed / "results.csv", "r+b") as fh:  # the CSV may lag behind too
        fh.truncate(100)
    logged_before = audit_entries(sq_vault, state["audit_id"])
    assert len(logged_before) >= 48  # 50 rows, 2 of which are errors (and any chunk in flight)

    summary = run_audit(sq_vault, data.manifest, crashed, workers=1, resume=True)
    same_files(full, crashed)
    assert summary.resumed_rows == 37 and summary.recovered_from_log >= 12
    assert summary.audit_id == state["audit_id"]
    entries = audit_entries(sq_vault, state["audit_id"])
    decided = sum(1 for r in read_jsonl(crashed / "results.jsonl") if r["decision"] != "error")
    assert len(entries) == decided
    assert len({e.details["row"] for e in entries}) == len(entries)  # no row decided twice
    saved = json.loads((crashed / "summary.json").read_text())
    assert saved["counts"] == json.loads((full / "summary.json").read_text())["counts"]


RUNNER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import FakeEmbedder
from sigvault.audit import run_audit
from sigvault.config import Settings
from sigvault.vault import Vault

settings = Settings(home=Path({home!r}), database_url={url!r})
with Vault.open(settings, embedder=FakeEmbedder()) as vault:
    run_audit(vault, Path(sys.argv[1]), Path(sys.argv[2]), workers=2, batch_size=8, progress=lambda p: time.sleep(0.05))
"""


def test_resume_after_sigkill(sq_vault, tmp_path: Path) -> None:
    """A real kill: run the audit in a subprocess, SIGKILL it mid-way, resume, compare with a full run."""
    data = build_dataset(sq_vault, tmp_path, persons=6, items=180)
    full = tmp_path / "full"
    run_audit(sq_vault, data.manifest, full, batch_size=8)

    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(tests=str(TESTS), home=str(sq_vault.home), url=str(sq_vault.engine.url)))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(runner), str(data.manifest), str(killed)], env=env, stderr=subprocess.PIPE
    )
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and results.read_bytes().count(b"\n") >= 60:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the audit ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    written = results.read_bytes().count(b"\n")
    assert 60 <= written < len(data.rows)
    # the runner's worker processes notice their parent is gone and exit (else they would keep its lock)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _processes_running(runner):
        time.sleep(0.1)
    assert not _processes_running(runner)

    state = json.loads((killed / ".audit-state.json").read_text())
    summary = run_audit(sq_vault, data.manifest, killed, workers=2, resume=True)
    same_files(full, killed)
    assert summary.resumed_rows == written
    entries = audit_entries(sq_vault, state["audit_id"])
    decided = sum(1 for r in read_jsonl(killed / "results.jsonl") if r["decision"] != "error")
    assert len(entries) == decided == len({e.details["row"] for e in entries})


def _processes_running(script: Path) -> list[int]:
    """Pids whose command line names ``script``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(script).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_report_pages_hold_every_item_and_escape(sq_vault, tmp_path: Path) -> None:
    """A queue longer than a page: every item not accepted is on exactly one page, in review order; the
    pages link to each other; a second run with a bigger page removes the pages it no longer needs."""
    data = build_dataset(sq_vault, tmp_path, persons=3, items=30)
    rows = [dict(r) for r in data.rows]
    rows[0]["item_id"] = '<script>alert("x")</script>'
    with open(data.manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, data.columns)
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    summary = run_audit(sq_vault, data.manifest, out, report_page_size=2)
    records = read_jsonl(out / "results.jsonl")
    needing = [r for r in records if r["decision"] != "accept"]
    n = len(needing)
    assert n == summary.counts["reject"] + summary.counts["refer"] + 6 == summary.report_items and n == 6
    pages = -(-n // 2)
    assert summary.report_pages == pages
    assert sorted(p.name for p in out.glob("report*.html")) == sorted(
        ["report.html", *(f"report-{k}.html" for k in range(2, pages + 1))]
    )
    shown = []
    for k in range(1, pages + 1):
        page = (out / audit.report_page_name(k)).read_text(encoding="utf-8")
        items = re.findall(r'data-item="([^"]+)"', page)
        assert len(items) == (2 if k < pages else n - 2 * (pages - 1))
        shown += items
        assert f"Page {k} of {pages} (2 items a page; filters apply to this page)." in page
        assert (f'<a href="report-{k + 1}.html">next page</a>' in page) == (k < pages)
        previous = "report.html" if k == 2 else f"report-{k - 1}.html"
        assert (f'<a href="{previous}">previous page</a>' in page) == (k > 1)
        if k == 1:
            assert f"Items 1 to 2 of the {n} needing review (referred first, then rejects, then errors), page 1 of {pages}." in page
        assert '<script>alert("x")</script>' not in page
    order = ["refer", "reject", "error"]
    queue = sorted(needing, key=lambda r: (order.index(r["decision"]), r["probability"] or 0.0))
    assert shown == [html.escape(r["item_id"], quote=True) for r in queue]
    results = (out / "results.jsonl").read_text(encoding="utf-8")
    assert json.dumps('<script>alert("x")</script>') in results

    # the finished audit resumed with one page: the other pages are gone
    again = run_audit(sq_vault, data.manifest, out, report_page_size=1000, resume=True)
    assert again.report_pages == 1 and sorted(p.name for p in out.glob("report*.html")) == ["report.html"]
    assert re.findall(r'data-item="([^"]+)"', (out / "report.html").read_text(encoding="utf-8")) == shown


def test_bad_arguments(sq_vault, tmp_path: Path) -> None:
    data = build_dataset(sq_vault, tmp_path, persons=1, items=2)
    with pytest.raises(UsageError, match="--workers must be at least 1, got 0"):
        run_audit(sq_vault, data.manifest, tmp_path / "out", workers=0)
    with pytest.raises(UsageError, match="--batch-size must be at least 1, got 0"):
        run_audit(sq_vault, data.manifest, tmp_path / "out", batch_size=0)


def test_runner_is_in_sync_with_signature() -> None:
    """The CLI calls run_audit with these keyword arguments (the documented contract)."""
    import inspect

    params = inspect.signature(run_audit).parameters
    assert list(params) == [
        "vault",
        "manifest",
        "out_dir",
        "workers",
        "batch_size",
        "policy",
        "resume",
        "progress",
        "report_page_size",
        "documents",
    ]
    assert textwrap.dedent(run_audit.__doc__ or "").count("exit_code") == 1


# ---------------------------------------------------------------- prepared items and decision rules


def test_prepared_items_give_the_same_results_as_verify(sq_vault, tmp_path: Path) -> None:
    """Items prepared elsewhere (pickled, as from a worker process) are decided exactly as verify decides."""
    import pickle

    from sigvault.errors import ImageError, InvalidPersonIdError
    from sigvault.vault import VerifyItem, prepare

    images = ImageFactory(tmp_path / "images")
    images.directory.mkdir()
    sq_vault.enroll("alice", images.refs(1, 3))
    sq_vault.enroll("bob", images.refs(2, 3))
    questioned = [("alice", images.write("qa.png", 1, 7)), ("bob", images.write("qb.png", 1, 8))]
    spec, limits = sq_vault.embedder.spec, sq_vault.limits
    items = [
        VerifyItem(
            person, path, name=str(path), prepared=pickle.loads(pickle.dumps(prepare(path, str(path), spec, limits)))
        )
        for person, path in questioned
    ]
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageError) as err:
        prepare(missing, str(missing), spec, limits)
    failed = pickle.loads(pickle.dumps(err.value))
    items += [VerifyItem("alice", missing, prepared=failed), VerifyItem("a/b", missing, prepared=failed)]
    got = sq_vault.verify_many(items)
    # exactly the results of the same batch read here, and of verify up to the batch's float rounding
    plain = sq_vault.verify_many([VerifyItem(person, path, name=str(path)) for person, path in questioned])
    for (person, path), result, same_batch in zip(questioned, got[:2], plain, strict=True):
        assert result.to_dict() | {"decision_id": 0} == same_batch.to_dict() | {"decision_id": 0}
        alone = sq_vault.verify(person, path, name=str(path))
        assert (result.decision, result.image_sha256, result.best_reference.reference_id) == (
            alone.decision,
            alone.image_sha256,
            alone.best_reference.reference_id,
        )
        assert result.score == pytest.approx(alone.score, abs=1e-6)
    assert isinstance(got[2], ImageError) and str(got[2]) == f"{missing}: no such file; check the path"
    assert isinstance(got[3], InvalidPersonIdError)  # the person is checked first, as verify does
    other_spec = dataclasses.replace(spec, canvas_width=spec.canvas_width * 2)
    wrong = prepare(questioned[0][1], "qa.png", other_spec, limits)
    (refused,) = sq_vault.verify_many([VerifyItem("alice", questioned[0][1], prepared=wrong)])
    assert isinstance(refused, UsageError) and "prepared with another preprocessing" in str(refused)


def test_a_decision_rule_is_logged_as_the_final_decision(sq_vault, tmp_path: Path) -> None:
    from sigvault.vault import VerifyItem

    images = ImageFactory(tmp_path / "images")
    images.directory.mkdir()
    sq_vault.enroll("alice", images.refs(1, 3))
    q = images.write("q.png", 1, 7)
    plain = sq_vault.verify("alice", q)
    assert plain.decision == "accept" and plain.model_decision is None and "model_decision" not in plain.to_dict()
    seen = []

    def always_refer(score: float, threshold: float, probability: float) -> str:
        seen.append((score, threshold, probability))
        return "refer"

    (ruled,) = sq_vault.verify_many([VerifyItem("alice", q, details={"k": 1}, decide=always_refer)])
    assert (ruled.decision, ruled.model_decision) == ("refer", "accept")
    assert seen == [(ruled.score, ruled.threshold, ruled.probability)]
    assert ruled.score == pytest.approx(plain.score)
    (entry,) = list(sq_vault.log_entries(after=ruled.decision_id - 1))
    assert (entry.decision, entry.details) == ("refer", {"k": 1, "model_decision": "accept"})
    assert sq_vault.log_head() == ruled.decision_id
    assert set(sq_vault.reference_images([1, 2, 99])) == {1, 2}


def test_a_coarse_item_is_referred_under_a_policy_too(sq_vault, tmp_path: Path) -> None:
    """The capture guard applies after an amount policy, in the results, the log and the report alike."""
    images = ImageFactory(tmp_path / "images")
    images.directory.mkdir(parents=True)
    sq_vault.enroll("p0", images.refs(0, 3))
    with Image.open(images.write("q.png", 0, 7)) as im:  # a coarse scan: ink enlarged about 8 times more
        im.resize((72, 24), Image.Resampling.BOX).save(tmp_path / "images" / "coarse.png")
    score = sq_vault.verify("p0", tmp_path / "images" / "coarse.png").score
    band = sq_vault.embedder.scoring.refer_band
    sq_vault.set_threshold("p0", score - 2 * band)  # the model alone accepts it...
    manifest = tmp_path / "m.csv"
    manifest.write_text("item_id,person,image,amount\nBIG,p0,images/coarse.png,50000\n")
    policy_path = tmp_path / "policy.toml"  # ...a big amount's margin makes it a rejection 2 bands below
    policy_path.write_text(f'name = "strict"\n[[band]]\nname = "big"\nthreshold_margin = {4 * band}\n')
    run_audit(sq_vault, manifest, tmp_path / "out", policy=policy_path)
    (r,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    policy = load_policy(policy_path)
    cfg = sq_vault.embedder.scoring
    assert policy.decide(policy.bands[0], r["score"], r["threshold"], r["probability"], cfg) == "reject"
    assert (r["decision"], r["model_decision"]) == ("refer", "accept") and r["capture_ratio"] > 1.5
    (entry,) = audit_entries(sq_vault, json.loads((tmp_path / "out" / "summary.json").read_text())["audit_id"])
    assert (entry.decision, entry.details["capture"]["ratio"]) == ("refer", r["capture_ratio"])
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as fh:
        (row,) = csv.DictReader(fh)
    assert float(row["capture_ratio"]) == pytest.approx(r["capture_ratio"], rel=1e-9)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "scanned coarser than the references" in page and "1 item(s) scanned at another resolution" in page
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["capture_mismatch"] == 1
