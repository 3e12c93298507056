"""The command line: outputs, exit codes, one-line errors, bad input leaving the vault byte-identical.

Most tests run the typer app in-process with the fake embedder (over SQLite and PostgreSQL); a few run
``python -m sigvault`` in a subprocess, and one uses the real shipped model when it exists.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, ImageFactory
from PIL import Image
from typer.testing import CliRunner, Result

import sigvault
from sigvault import imaging
from sigvault.cli import app
from sigvault.scoring import ScoringConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = Path(sigvault.__file__).parent / "weights" / "model.onnx"

Invoke = Callable[..., Result]


@pytest.fixture
def cli(home: Path, db_url: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run ``sigvault ARGS...`` in-process against the test vault, with the fake embedder."""
    models = {"current": FakeEmbedder()}
    monkeypatch.setattr("sigvault.embedder.load_embedder", lambda path=None, **kw: models["current"])
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": db_url}
    runner = CliRunner()

    def invoke(*args: object) -> Result:
        return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    invoke.models = models  # type: ignore[attr-defined]
    if backend == "postgres":
        assert invoke("db", "upgrade").exit_code == 0
    return invoke


def vault_state(home: Path, db_url: str) -> dict[str, str]:
    """Hashes of every table's rows (any backend), of the SQLite file and of the index files."""
    from sqlalchemy import create_engine, inspect, text

    state: dict[str, str] = {}
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            for table in sorted(inspect(conn).get_table_names()):
                rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY 1")).all()
                state[f"table:{table}"] = hashlib.sha256(repr(rows).encode()).hexdigest()
    finally:
        engine.dispose()
    for path in sorted(home.rglob("*")):
        if path.is_file() and (path.suffix in (".db", ".faiss")):
            state[f"file:{path.relative_to(home)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def png_bomb(path: Path, width: int = 40_000, height: int = 40_000) -> Path:
    """A valid tiny PNG whose header claims a huge size (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------------------------ happy path


def test_enroll_verify_json(cli: Invoke, images: ImageFactory) -> None:
    result = cli("enroll", "alice", *images.refs(1, 3))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "enrolled new person 'alice': 3 reference(s) added, 3 in total"
    assert lines[1].startswith("threshold 0.") and lines[1].endswith(
        " (leave-one-out over 3 references, shrunk toward the global prior (weight 4))"
    )
    assert result.stderr == ""

    result = cli("verify", "alice", images.write("q.png", 1, 7), "--json")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert {"person", "decision", "score", "probability", "threshold", "model", "references"} <= set(payload)
    assert (payload["person"], payload["decision"], payload["model"], payload["decision_id"]) == (
        "alice",
        "accept",
        "fake-0",
        2,  # entry 1 is the enrolment
    )
    assert [r["reference_id"] for r in payload["references"]] == [1, 2, 3]
    assert payload["best_reference"] in payload["references"]

    forged = cli("verify", "alice", images.write("f.png", 2, 1))
    assert forged.exit_code == 0  # a rejection is a completed verification
    text_rows = dict(line.split(None, 1) for line in forged.stdout.splitlines())
    assert list(text_rows) == [
        "decision",
        "person",
        "score",
        "probability",
        "threshold",
        "best-match",
        "references",
        "model",
        "decision-id",
    ]
    assert (text_rows["decision"], text_rows["person"], text_rows["model"]) == ("reject", "alice", "fake-0")
    assert text_rows["decision-id"] == "3 (in the decision log)"


def test_compare_and_identify(cli: Invoke, images: ImageFactory) -> None:
    a, b = images.write("a.png", 1, 1), images.write("b.png", 1, 2)
    out = cli("compare", a, b, "--json")
    assert out.exit_code == 0
    assert set(json.loads(out.stdout)) == {"a", "b", "similarity", "probability", "label", "model"}
    assert json.loads(out.stdout)["label"] == "same writer"
    assert cli("compare", a, images.write("c.png", 2, 1)).stdout.splitlines()[0] == "label        different writers"

    assert cli("identify", a).stdout == "nobody is enrolled\n"
    cli("enroll", "alice", *images.refs(1, 2))
    cli("enroll", "bob", *images.refs(2, 2))
    out = cli("identify", images.write("q.png", 2, 5), "--top", "1", "--json")
    assert out.exit_code == 0
    candidates = json.loads(out.stdout)["candidates"]
    assert [c["person"] for c in candidates] == ["bob"]


def test_people_commands(cli: Invoke, images: ImageFactory) -> None:
    cli("enroll", "alice", *images.refs(1, 2))
    assert cli("people", "list").stdout.startswith("alice\t2 references\tthreshold 0.")
    assert json.loads(cli("people", "list", "--json").stdout)["people"][0]["references"] == 2

    assert cli("people", "threshold", "alice", "0.75").stdout == "threshold of 'alice' is 0.7500 (override)\n"
    shown = cli("people", "show", "alice").stdout.splitlines()
    assert shown[1].startswith("threshold  0.7500 (override, set ")
    assert shown[2] == "decisions  every one is refer: 2 reference(s), 3 needed before any automatic accept or reject"
    ref = imaging.InkCapture.median(
        [imaging.measure_capture(imaging.read_image(p.read_bytes()), FakeEmbedder().spec) for p in images.refs(1, 2)]
    )
    assert shown[3] == (
        f"capture    ink scaled {ref.scale:.2f}x into the canvas, strokes {ref.stroke:.1f} px wide (references' "
        "medians); a questioned scan far coarser or finer is referred rather than rejected near the threshold"
    )
    assert shown[4] == "references 2 (at least 3 for automatic decisions)"
    assert shown[5].startswith("  1\t") and shown[5].endswith("\tp1-ref1.png\tfake-0")
    detail = json.loads(cli("people", "show", "alice", "--json").stdout)
    assert (detail["automatic"], detail["min_references"]) == (False, 3)
    assert detail["refer_reason"] == "2 reference(s), 3 needed before any automatic accept or reject"
    cli("enroll", "alice", images.write("third.png", 1, 3))
    assert cli("people", "show", "alice").stdout.splitlines()[2] == "decisions  automatic (accept, refer or reject)"
    assert json.loads(cli("people", "show", "alice", "--json").stdout)["refer_reason"] is None
    assert cli("people", "remove-reference", "alice", "3", "--force").exit_code == 0
    auto = cli("people", "threshold", "alice", "--auto")
    assert auto.stdout.startswith("threshold of 'alice' is 0.") and "(leave-one-out over 2 references" in auto.stdout
    both = cli("people", "threshold", "alice", "0.7", "--auto")
    assert (both.exit_code, both.stderr) == (2, "error: give either a threshold value or --auto\n")

    unconfirmed = cli("people", "remove", "alice")  # CliRunner's stdin is not a terminal
    assert (unconfirmed.exit_code, unconfirmed.stderr) == (
        2,
        "error: people remove alice: no terminal to confirm on; pass --yes to erase the person\n",
    )
    # then the erasure line (or, on a busy PostgreSQL server, a warning of what it waits for): test_forgetting.py
    assert cli("people", "remove", "alice", "--yes").stdout.splitlines()[0] == "removed 'alice' and 2 reference(s)"
    assert cli("db", "compact").stdout == "database compacted\n"
    assert cli("people", "list").stdout == "nobody is enrolled\n"
    gone = cli("people", "show", "alice")
    assert (gone.exit_code, gone.stderr) == (1, "error: person 'alice' is not enrolled; see `sigvault people list`\n")


def test_each_decision_records_who_asked_and_why(
    cli: Invoke, images: ImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("enroll", "alice", *images.refs(1, 2))
    cli("--operator", "clerk-2", "--reason", "cheque 10442", "verify", "alice", images.write("q1.png", 1, 5))
    monkeypatch.setenv("SIGVAULT_OPERATOR", "ops-7")  # CliRunner's env is merged over os.environ
    cli("verify", "alice", images.write("q2.png", 1, 6))
    monkeypatch.delenv("SIGVAULT_OPERATOR")
    cli("verify", "alice", images.write("q3.png", 1, 7))
    lines = cli("log", "export").stdout.splitlines()
    verifications = [json.loads(line) for line in lines if json.loads(line)["kind"] == "verify"]
    assert [(e["operator"], e["reason"]) for e in verifications] == [
        ("clerk-2", "cheque 10442"),
        ("ops-7", None),
        (getpass.getuser(), None),
    ]
    assert cli("log", "verify").exit_code == 0
    blank = cli("--operator", " ", "verify", "alice", images.write("q4.png", 1, 8))
    assert (blank.exit_code, blank.stderr) == (2, "error: the operator is empty: give a name or leave the option out\n")
    assert len(cli("log", "export").stdout.splitlines()) == len(lines)


def test_index_and_log_commands(cli: Invoke, images: ImageFactory, home: Path, db_url: str, tmp_path: Path) -> None:
    cli("enroll", "alice", *images.refs(1, 2))
    for variant in (5, 6, 7):
        cli("verify", "alice", images.write(f"q{variant}.png", 1, variant))
    assert cli("index", "check").stdout.splitlines()[-1] == "index consistent with the database"
    index_file = next((home / "index").glob("*.faiss"))
    index_file.unlink()
    broken = cli("index", "check")
    assert broken.exit_code == 1
    assert broken.stderr == "error: index does not match the database: no index file; run `sigvault index rebuild`\n"
    assert cli("index", "rebuild").stdout == f"index rebuilt: 2 vectors ({index_file})\n"
    assert cli("index", "check", "--json").exit_code == 0

    ok = cli("log", "verify")
    assert ok.exit_code == 0 and ok.stdout.startswith("decision log intact: 4 entries, head ")
    exported = tmp_path / "log.jsonl"
    assert cli("log", "export", "-o", exported).exit_code == 0
    entries = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [(e["id"], e["kind"]) for e in entries] == [(1, "enroll"), (2, "verify"), (3, "verify"), (4, "verify")]
    assert entries[1]["prev_hash"] == entries[0]["hash"]
    assert cli("log", "export").stdout == exported.read_text()

    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE decisions SET decision = 'accept', probability = 0.99 WHERE id = 2"))
    engine.dispose()
    tampered = cli("log", "verify")
    assert (tampered.exit_code, tampered.stderr) == (
        1,
        "error: decision log broken at entry 2: entry 2 was altered after it was written (its hash does not match)\n",
    )


def test_reembed_command(cli: Invoke, images: ImageFactory) -> None:
    cli("enroll", "alice", *images.refs(1, 2))
    cli("people", "threshold", "alice", "0.5")
    assert cli("reembed").stdout == "nothing to do: every reference is already embedded by fake-0\n"
    cli.models["current"] = FakeEmbedder(seed=1)  # type: ignore[attr-defined]
    stale = cli("verify", "alice", images.write("q.png", 1, 3))
    assert (stale.exit_code, stale.stderr) == (
        1,
        "error: the references of 'alice' were made by model fake-0, but the loaded model is fake-1; run `sigvault reembed`\n",
    )
    out = cli("reembed")
    assert out.stdout == "re-embedded 2 references of 1 persons with fake-1\n"
    assert out.stderr == "warning: threshold override of 'alice' cleared (set for the previous model)\n"
    assert cli("verify", "alice", images.write("q.png", 1, 3)).exit_code == 0
    # the same network with another scoring (its card changed): the scorers are refitted, nothing re-embedded
    wd = FakeEmbedder(seed=1, scoring=ScoringConfig(method="wd-svm", view_angles=(-4.0, 4.0)))
    wd.cohort = wd.embed(np.stack([imaging.load_canvas(images.write(f"c{i}.png", 7 + i), wd.spec) for i in range(4)]))
    wd.cohort_id = "cohort-b"
    cli.models["current"] = wd  # type: ignore[attr-defined]
    assert cli("reembed").stdout == (
        "every reference is already embedded by fake-1; refitted the scorers of 1 of 1 persons to its scoring\n"
    )
    assert cli("reembed").stdout == "nothing to do: every reference is already embedded by fake-1\n"


def test_stale_schema_is_refused(cli: Invoke, images: ImageFactory, db_url: str) -> None:
    cli("enroll", "alice", *images.refs(1, 1))
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    out = cli("people", "list")
    assert out.exit_code == 1
    assert out.stderr.endswith(
        "is at schema revision 0000, this sigvault needs 0003; run `sigvault db upgrade` "
        "(or install the newer sigvault that wrote it)\n"
    )
    assert out.stderr.count("\n") == 1
    upgrade = cli("db", "upgrade")
    assert upgrade.exit_code == 1
    assert "Can't locate revision identified by '0000'" in upgrade.stderr


def test_empty_postgres_database_needs_db_upgrade(pg_url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": pg_url}
    out = runner.invoke(app, ["people", "list"], env=env)
    assert out.exit_code == 1
    assert out.stderr == f"error: database {pg_url} has no sigvault schema yet; run `sigvault db upgrade`\n"
    assert runner.invoke(app, ["db", "upgrade"], env=env).stdout == "database upgraded from empty to revision 0003\n"
    assert runner.invoke(app, ["db", "upgrade"], env=env).stdout == "database already at revision 0003\n"
    assert runner.invoke(app, ["people", "list"], env=env).stdout == "nobody is enrolled\n"


def test_audit_command(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:
    cli("enroll", "alice", *images.refs(1, 3))
    manifest = tmp_path / "items.csv"
    rows = [("c1", "alice", images.write("c1.png", 1, 6)), ("c2", "alice", tmp_path / "absent.png")]
    manifest.write_text("item_id,person,image\n" + "".join(f"{i},{p},{img}\n" for i, p, img in rows))
    out = cli("audit", manifest, "--out", tmp_path / "audit", "--json")
    assert out.exit_code == 1  # one row could not be decided
    summary = json.loads(out.stdout)
    assert (summary["rows"], summary["failed_rows"]) == (2, 1)
    assert out.stderr == 'error: 1 item(s) could not be decided; see decision "error" in the results\n'
    assert (tmp_path / "audit" / "results.csv").exists()
    assert cli("log", "verify").stdout.startswith("decision log intact: 2 entries")  # the enrolment, one audit row


def test_audit_quiet_prints_nothing_and_writes_the_same_files(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:
    cli("enroll", "alice", *images.refs(1, 3))
    manifest = tmp_path / "items.csv"
    rows = [("c1", "alice", images.write("c1.png", 1, 6)), ("c2", "alice", images.write("c2.png", 2, 6))]
    manifest.write_text("item_id,person,image\n" + "".join(f"{i},{p},{img}\n" for i, p, img in rows))
    loud = cli("audit", manifest, "--out", tmp_path / "loud")
    quiet = cli("audit", manifest, "--out", tmp_path / "quiet", "--quiet")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    # without --quiet: the summary lines, and no progress display (stderr is not a terminal here)
    assert loud.exit_code == 0 and loud.stderr == ""
    lines = loud.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("audited 2 items in ")
    assert lines[1] == f"results and report in {tmp_path / 'loud'}"
    from test_audit import same_files

    same_files(tmp_path / "quiet", tmp_path / "loud")  # the report's decision ids aside
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("loud", "quiet")]
    assert summaries[0]["counts"] == summaries[1]["counts"] and summaries[1]["rows"] == 2


def test_audit_quiet_still_reports_failed_rows_and_json(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:
    cli("enroll", "alice", *images.refs(1, 3))
    manifest = tmp_path / "items.csv"
    manifest.write_text(f"item_id,person,image\nc1,alice,{images.write('c1.png', 1, 6)}\nc2,alice,{tmp_path / 'absent.png'}\n")
    failed = cli("audit", manifest, "--out", tmp_path / "a", "-q")
    assert (failed.exit_code, failed.stdout) == (1, "")
    assert failed.stderr == 'error: 1 item(s) could not be decided; see decision "error" in the results\n'
    as_json = cli("audit", manifest, "--out", tmp_path / "b", "--quiet", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["failed_rows"] == 1


def test_progress_display_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from sigvault.cli import _progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for tty, quiet, shown in ((False, False, False), (True, True, False), (True, False, True)):
        stream = Terminal() if tty else io.StringIO()
        monkeypatch.setattr("sys.stderr", stream)
        with _progress("auditing", quiet=quiet) as bar:
            assert (bar is not None) == shown
            if bar is not None:
                bar(1, 2)
        assert ("auditing" in stream.getvalue()) == shown, (tty, quiet)


def test_demo_command(cli: Invoke, tmp_path: Path) -> None:
    out = cli("--home", tmp_path / "demo", "demo", "--people", "2", "--references", "2", "--json")
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["people"], result["model"]) == (["alice", "bruno"], "fake-0")
    assert len(result["rows"]) == 6


def test_evaluate_command(cli: Invoke, tmp_path: Path) -> None:
    from conftest import signature_png

    dataset = tmp_path / "scans"
    for writer in range(3):
        for kind, n in (("genuine", 3), ("forged", 1)):
            folder = dataset / f"w{writer}" / kind
            folder.mkdir(parents=True)
            for i in range(n):
                person, variant = (writer, i + 1) if kind == "genuine" else ((writer + 1) % 3, 20 + i)
                (folder / f"{i}.png").write_bytes(signature_png(person, variant))
    out = cli("evaluate", dataset, "--references", "2", "--splits", "1", "--json")
    assert out.exit_code == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["model"], report["references"], report["splits"]) == ("fake-0", 2, 1)
    text = cli("evaluate", dataset, "--references", "2", "--splits", "1")
    assert text.stdout.startswith(f"sigvault evaluate  {dataset}")
    assert report["questioned"] is None
    paired = cli("evaluate", dataset, "--references", "2", "--splits", "1", "--questioned", dataset, "--json")
    assert paired.exit_code == 0, paired.stderr
    assert json.loads(paired.stdout)["questioned"] == str(dataset)
    assert json.loads(paired.stdout)["per_split"] == report["per_split"]
    missing = cli("evaluate", dataset, "--questioned", tmp_path / "nowhere")
    assert missing.exit_code == 2
    assert missing.stderr.strip() == (
        f"error: {tmp_path / 'nowhere'}: no such folder; give a folder laid out as <writer>/genuine/* and "
        "<writer>/forged/*"
    )


# ------------------------------------------------------------------------------------------- bad input


def _bad_images(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, exact one-line message or '<prefix>...<suffix>')."""
    tmp.mkdir(exist_ok=True)
    text_png = tmp / "notes.png"
    text_png.write_text("<html>not an image</html>")
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    full = io.BytesIO()
    Image.new("L", (400, 200), 255).save(full, format="PNG")
    truncated = tmp / "truncated.png"
    truncated.write_bytes(full.getvalue()[:60])
    blank = tmp / "blank.png"
    blank.write_bytes(full.getvalue())
    folder = tmp / "folder.png"
    folder.mkdir(exist_ok=True)
    bomb = png_bomb(tmp / "bomb.png")
    big = png_bomb(tmp / "big.png", 10_000, 5_000)
    return {
        "missing": (tmp / "absent.png", f"{tmp}/absent.png: no such file; check the path"),
        "directory": (folder, f"{folder}: is a directory, not an image file; give the path of a scan"),
        "text": (text_png, f"{text_png}: not a readable image; supply a PNG, JPEG, TIFF, BMP or GIF scan"),
        "zero-byte": (empty, f"{empty}: file is empty (0 bytes); supply the scanned image"),
        "truncated": (truncated, f"{truncated}: damaged or truncated image (...); rescan or re-export it"),
        "no-ink": (blank, f"{blank}: no signature ink found (the image is blank); scan the signed area"),
        "bomb": (
            bomb,
            f"{bomb}: image dimensions are above the limit of 40000000 pixels; scan at a lower resolution or "
            "raise SIGVAULT_MAX_IMAGE_PIXELS",
        ),
        "too-many-pixels": (
            big,
            f"{big}: 10000x5000 pixels is above the limit of 40000000; scan at a lower resolution or raise "
            "SIGVAULT_MAX_IMAGE_PIXELS",
        ),
    }


def _assert_one_line_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    line = result.stderr.rstrip("\n")
    if "(...)" in message:
        prefix, suffix = message.split("(...)")
        assert line.startswith(f"error: {prefix}(") and line.endswith(f"){suffix}"), line
    else:
        assert line == f"error: {message}"


BAD_IMAGES = ["missing", "directory", "text", "zero-byte", "truncated", "no-ink", "bomb", "too-many-pixels"]


@pytest.mark.parametrize("case", BAD_IMAGES)
@pytest.mark.parametrize("command", ["enroll", "verify", "compare", "identify"])
def test_bad_images_leave_the_vault_unchanged(
    cli: Invoke, images: ImageFactory, home: Path, db_url: str, tmp_path: Path, case: str, command: str
) -> None:
    assert cli("enroll", "alice", *images.refs(1, 2)).exit_code == 0
    bad, message = _bad_images(tmp_path / "bad")[case]
    before = vault_state(home, db_url)
    args = {
        "enroll": ("enroll", "alice", images.write("good.png", 1, 5), bad),
        "verify": ("verify", "alice", bad),
        "compare": ("compare", images.write("good.png", 1, 5), bad),
        "identify": ("identify", bad),
    }[command]
    _assert_one_line_error(cli(*args), 1, message)
    assert vault_state(home, db_url) == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("verify", "zoe", "{q}"), 1, "person 'zoe' is not enrolled; see `sigvault people list`"),
        (("people", "remove", "zoe"), 1, "person 'zoe' is not enrolled; see `sigvault people list`"),
        (("enroll", "", "{q}"), 2, "person id '' is empty; give a name or customer number"),
        (("verify", " ", "{q}"), 2, "person id ' ' is empty; give a name or customer number"),
        (("enroll", "../alice", "{q}"), 2, "person id '../alice' contains a path separator '/'; remove it"),
        (("enroll", "al\tice", "{q}"), 2, "person id 'al\\tice' contains the control character U+0009; remove it"),
        (
            ("enroll", "a" * 10_000, "{q}"),
            2,
            f"person id '{'a' * 40}...' is 10000 characters long, the limit is 200; use a shorter id",
        ),
        (("enroll", "alice", "{q}", "{q}"), 1, "{q}: same image as {q}; give each reference once"),
        (("enroll", "alice", "{ref}"), 1, "{ref}: already enrolled for 'alice' (reference 1); nothing was enrolled"),
        (
            ("people", "threshold", "alice", "7"),
            2,
            "threshold 7.0 is outside [-1, 1], the range of a cosine similarity score",
        ),
    ],
)
def test_bad_usage_leaves_the_vault_unchanged(
    cli: Invoke, images: ImageFactory, home: Path, db_url: str, args: tuple[str, ...], code: int, message: str
) -> None:
    refs = images.refs(1, 2)
    assert cli("enroll", "alice", *refs).exit_code == 0
    q = images.write("q.png", 1, 6)
    subst = {"q": q, "ref": refs[0]}
    before = vault_state(home, db_url)
    _assert_one_line_error(cli(*(a.format(**subst) for a in args)), code, message.format(**subst))
    assert vault_state(home, db_url) == before


def test_image_limits_are_configurable(cli: Invoke, images: ImageFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGVAULT_MAX_IMAGE_BYTES", "1000")
    big = images.write("big.png", 1, 1)
    out = cli("compare", big, big)
    size = big.stat().st_size
    _assert_one_line_error(
        out,
        1,
        f"{big}: file is {size} bytes, above the limit of 1000; scan at a lower resolution or raise SIGVAULT_MAX_IMAGE_BYTES",
    )


# ------------------------------------------------------------------------------------- help, startup

COMMANDS = [
    [],
    ["enroll"],
    ["verify"],
    ["compare"],
    ["identify"],
    ["reembed"],
    ["people", "list"],
    ["people", "show"],
    ["people", "remove"],
    ["people", "references"],
    ["people", "remove-reference"],
    ["people", "threshold"],
    ["db", "upgrade"],
    ["db", "compact"],
    ["index", "check"],
    ["index", "rebuild"],
    ["log", "verify"],
    ["log", "export"],
    ["audit"],
    ["evaluate"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "sigvault")
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    out = CliRunner().invoke(app, [*command, "--help"])
    assert out.exit_code == 0
    assert (
        "Example:\n    sigvault " in out.stdout
        or "Example:\n    SIGVAULT_" in out.stdout
        or "Example:\n  sigvault " in out.stdout
    )


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigvault", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        timeout=120,
        check=False,
    )


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    probe = (
        "import sys, time; t = time.perf_counter(); import sigvault.cli; "
        "from typer.testing import CliRunner; CliRunner().invoke(sigvault.cli.app, ['--help']); "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'sqlalchemy', 'faiss', 'onnxruntime', 'alembic', 'PIL', 'scipy', 'cv2', 'rich'}); print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert out.stdout.strip() == "[]"
    best = min(_timed_help() for _ in range(3))
    assert best < 0.6, f"sigvault --help took {best:.2f} s (target 0.3 s)"


def _timed_help() -> float:
    start = time.perf_counter()
    out = _run(["--help"], {})
    assert out.returncode == 0 and out.stdout.startswith("Usage: sigvault")
    return time.perf_counter() - start


def test_subprocess_fresh_home_and_one_line_errors(tmp_path: Path) -> None:
    env = {"SIGVAULT_HOME": str(tmp_path / "home"), "SIGVAULT_DATABASE_URL": ""}
    listed = _run(["people", "list"], env)
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "nobody is enrolled\n", "")
    assert (tmp_path / "home" / "sigvault.db").exists()  # a fresh default home is initialised on first use
    bad = _run(["enroll", "", "x.png"], env)
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        2,
        "",
        "error: person id '' is empty; give a name or customer number\n",
    )


# ---------------------------------------------------------------------------------- the real model


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason=f"the shipped model {SHIPPED_MODEL} does not exist yet")
def test_end_to_end_with_the_shipped_model(tmp_path: Path) -> None:
    from sigvault.synth import SyntheticWriter

    writer = SyntheticWriter(11)
    paths = {}
    for name, im in {
        **{f"ref{i}": writer.genuine(i) for i in range(4)},
        "genuine": writer.genuine(9),
        "forgery": writer.forgery(0),
        "other": SyntheticWriter(1011).genuine(0),
    }.items():
        paths[name] = tmp_path / f"{name}.png"
        im.save(paths[name])
    env = {"SIGVAULT_HOME": str(tmp_path / "home"), "SIGVAULT_DATABASE_URL": ""}
    enrolled = _run(["enroll", "writer-11", *(str(paths[f"ref{i}"]) for i in range(4))], env)
    assert enrolled.returncode == 0, enrolled.stderr
    start = time.perf_counter()
    genuine = _run(["verify", "writer-11", str(paths["genuine"]), "--json"], env)
    cold = time.perf_counter() - start
    forged = _run(["verify", "writer-11", str(paths["forgery"]), "--json"], env)
    other = _run(["verify", "writer-11", str(paths["other"]), "--json"], env)
    assert genuine.returncode == 0 and forged.returncode == 0 and other.returncode == 0, genuine.stderr + forged.stderr
    g, f, o = json.loads(genuine.stdout), json.loads(forged.stdout), json.loads(other.stdout)
    assert g["model"] == f["model"] == o["model"] and len(g["references"]) == 4
    # another writer's signature scores below the genuine one and is rejected; this writer's imitation is
    # one of the 1 in 30 the shipped model scores above the genuine signature (test_embedder measures all 30)
    assert g["score"] > o["score"] and o["decision"] == "reject"
    assert _run(["log", "verify"], env).returncode == 0
    print(
        f"cold verify: {cold:.2f} s; genuine {g['decision']} {g['score']:.3f}, forgery {f['decision']} {f['score']:.3f}"
    )
