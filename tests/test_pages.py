"""Multi-page TIFFs: ``--page N`` on ``verify``, ``enroll``, ``compare`` and ``identify``, and an audit
manifest's ``page`` column, choose the page; without a page, or with one the file does not have, the command
is refused with one line naming the file and its page count, exit 1, and the vault is unchanged.

The CLI runs in-process on SQLite with the fake embedder; each chosen page must give exactly what the same
signature saved as its own file gives.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeEmbedder, ImageFactory, signature_png
from PIL import Image
from typer.testing import CliRunner, Result

from sigvault import imaging
from sigvault.config import sqlite_url

Invoke = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    from sigvault.cli import app

    monkeypatch.setattr("sigvault.embedder.load_embedder", lambda path=None, **kw: FakeEmbedder())
    home = tmp_path / "home"
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": sqlite_url(home / "sigvault.db")}
    runner = CliRunner()

    def invoke(*args: object) -> Result:
        return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


def tiff(path: Path, pages: list[bytes]) -> Path:
    frames = [Image.open(io.BytesIO(p)).convert("L") for p in pages]
    frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:])
    return path


def log(cli: Invoke) -> list[dict]:
    out = cli("log", "export")
    assert out.exit_code == 0
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture
def enrolled(cli: Invoke, images: ImageFactory) -> Invoke:
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    assert cli("enroll", "bob", *images.refs(2, 3)).exit_code == 0
    return cli


def test_verify_page_gives_what_the_page_alone_gives(enrolled: Invoke, images: ImageFactory, tmp_path: Path) -> None:
    cli = enrolled
    alone = images.write("alice-q.png", 1, 9)
    scan = tiff(tmp_path / "mandate.tif", [signature_png(2, 9), alone.read_bytes()])  # alice signs on page 2
    expected = json.loads(cli("verify", "alice", alone, "--json").stdout)
    got = json.loads(cli("verify", "alice", scan, "--page", 2, "--json").stdout)
    assert (got["decision"], got["score"], got["probability"]) == (
        expected["decision"], pytest.approx(expected["score"]), pytest.approx(expected["probability"])
    )
    text = cli("verify", "alice", scan, "--page", 2)
    assert text.exit_code == 0 and text.stdout.startswith("decision")
    entry = log(cli)[-1]
    assert entry["details"]["page"] == 2
    # a zone of the chosen page: the same as that zone of the page saved alone
    zoned = json.loads(cli("verify", "alice", scan, "--page", 2, "--region", "0,0,100%,100%", "--json").stdout)
    assert zoned["score"] == pytest.approx(got["score"]) and zoned["region"]["w"] == 600
    # page 1 is bob's signature: a lower score against alice
    other = json.loads(cli("verify", "alice", scan, "--page", 1, "--json").stdout)
    assert other["score"] < got["score"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "{f}: a TIFF of 2 pages; say which page holds the signature (--page 1 to 2, or a page column in an audit manifest)"),
        (("--page", 3), "{f}: no page 3; the image has 2 pages, choose one from 1 to 2"),
    ],
)
def test_verify_without_a_valid_page_is_refused(
    enrolled: Invoke, tmp_path: Path, args: tuple, message: str
) -> None:
    cli = enrolled
    scan = tiff(tmp_path / "mandate.tif", [signature_png(1, 8), signature_png(1, 9)])
    before = log(cli)
    out = cli("verify", "alice", scan, *args)
    assert (out.exit_code, out.stdout, out.stderr) == (1, "", f"error: {message.format(f=scan)}\n")
    out = cli("verify", "alice", scan, *args, "--json")
    assert out.exit_code == 1
    assert json.loads(out.stdout) == {
        "error": True, "kind": "unreadable_image", "message": message.format(f=scan), "exit_code": 1
    }
    assert log(cli) == before  # nothing recorded


def test_a_page_of_a_one_page_image(enrolled: Invoke, images: ImageFactory) -> None:
    alone = images.write("q.png", 1, 9)
    assert enrolled("verify", "alice", alone, "--page", 1).exit_code == 0
    out = enrolled("verify", "alice", alone, "--page", 2)
    assert (out.exit_code, out.stderr) == (1, f"error: {alone}: no page 2; the image has 1 page only, choose page 1\n")
    out = enrolled("verify", "alice", alone, "--page", 0)
    assert out.exit_code == 2 and "--page" in out.output


def test_enroll_page_stores_that_page_alone(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:
    refs = images.refs(1, 3)
    cards = [tiff(tmp_path / f"card-{i}.tif", [signature_png(9, i), r.read_bytes()]) for i, r in enumerate(refs)]
    out = cli("enroll", "carol", *cards)
    assert out.exit_code == 1 and "a TIFF of 2 pages" in out.stderr and str(cards[0]) in out.stderr
    assert cli("people", "list").stdout == "nobody is enrolled\n"
    out = cli("enroll", "carol", *cards, "--page", 3)
    assert (out.exit_code, out.stderr) == (1, f"error: {cards[0]}: no page 3; the image has 2 pages, choose one from 1 to 2\n")
    assert cli("people", "list").stdout == "nobody is enrolled\n"

    assert cli("enroll", "carol", *cards, "--page", 2).exit_code == 0
    shown = json.loads(cli("people", "show", "carol", "--json").stdout)
    stored = sorted(r["sha256"] for r in shown["references"])
    pages = sorted(hashlib.sha256(imaging.page_png(c, 2)).hexdigest() for c in cards)
    assert stored == pages  # the page's own image, not the whole file with the other page
    assert not {hashlib.sha256(c.read_bytes()).hexdigest() for c in cards} & set(stored)
    assert [r["source"] for r in shown["references"]] == [f"{c.name} (page 2)" for c in cards]
    # the enrolled pages decide as the same signatures enrolled from their own files
    alone = images.write("q.png", 1, 9)
    copies = []  # the same pixels in other bytes: an image enrolled for carol is refused for anyone else
    for r in refs:
        copies.append(r.with_name(f"dave-{r.name}"))
        with Image.open(r) as im:
            im.save(copies[-1], compress_level=1)
    assert cli("enroll", "dave", *copies).exit_code == 0
    carol = json.loads(cli("verify", "carol", alone, "--json").stdout)
    dave = json.loads(cli("verify", "dave", alone, "--json").stdout)
    assert carol["score"] == pytest.approx(dave["score"])


def test_compare_and_identify_pages(enrolled: Invoke, images: ImageFactory, tmp_path: Path) -> None:
    cli = enrolled
    a, b = images.write("a.png", 1, 8), images.write("b.png", 1, 9)
    scan = tiff(tmp_path / "two.tif", [signature_png(2, 7), b.read_bytes()])
    expected = json.loads(cli("compare", a, b, "--json").stdout)
    got = json.loads(cli("compare", a, scan, "--page-b", 2, "--json").stdout)
    assert got["similarity"] == pytest.approx(expected["similarity"])
    assert got["b"] == f"{scan} (page 2)"
    out = cli("compare", scan, a)
    assert out.exit_code == 1 and out.stderr.startswith(f"error: {scan}: a TIFF of 2 pages")
    out = cli("compare", a, scan, "--page-b", 5)
    assert out.stderr == f"error: {scan}: no page 5; the image has 2 pages, choose one from 1 to 2\n"

    first = json.loads(cli("identify", scan, "--page", 2, "--json").stdout)["candidates"][0]
    assert first["person"] == "alice"
    assert json.loads(cli("identify", scan, "--page", 1, "--json").stdout)["candidates"][0]["person"] == "bob"
    out = cli("identify", scan)
    assert out.exit_code == 1 and "a TIFF of 2 pages" in out.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_audit_page_column(enrolled: Invoke, images: ImageFactory, tmp_path: Path, workers: int) -> None:
    cli = enrolled
    alone = images.write("q.png", 1, 9)
    scan = tiff(tmp_path / "mandate.tif", [signature_png(2, 9), alone.read_bytes()])
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows(
            [
                ["item_id", "person", "image", "page"],
                ["A", "alice", str(alone), ""],
                ["B", "alice", str(scan), "2"],
                ["C", "alice", str(scan), ""],
                ["D", "alice", str(scan), "7"],
            ]
        )
    out = cli("audit", manifest, "--out", tmp_path / "out", "--workers", workers, "--quiet")
    assert out.exit_code == 1  # rows C and D cannot be decided
    rows = {r["item_id"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert rows["B"]["decision"] == rows["A"]["decision"] and rows["B"]["score"] == pytest.approx(rows["A"]["score"])
    assert rows["B"]["page"] == "2"  # the input column, kept
    assert [(rows[k]["decision"], rows[k]["error_kind"]) for k in "CD"] == [("error", "unreadable_image")] * 2
    assert rows["C"]["error"].startswith(f"{scan}: a TIFF of 2 pages; say which page holds the signature")
    assert rows["D"]["error"] == f"{scan}: no page 7; the image has 2 pages, choose one from 1 to 2"
    logged = [e for e in log(cli) if e["kind"] == "audit"]
    assert [e["details"].get("page") for e in logged] == [None, 2]
    # the report's thumbnail of a row reads the page the row chose (the whole file is refused)
    from sigvault import report

    assert report.thumbnail_uri(scan) is None
    assert report.thumbnail_uri(scan, page=2) == report.thumbnail_uri(imaging.page_png(scan, 2))


@pytest.mark.parametrize("value", ["0", "two", "1.5", "-1"])
def test_audit_bad_page_value_is_refused_before_any_work(enrolled: Invoke, images: ImageFactory, tmp_path: Path, value: str) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"item_id,person,image,page\nA,alice,{images.write('q.png', 1, 9)},{value}\n")
    out = enrolled("audit", manifest, "--out", tmp_path / "out")
    assert out.exit_code == 2
    assert out.stderr == f"error: manifest.csv line 2: page {value!r} is not a page number; write 1 for the first page\n"
    assert not (tmp_path / "out").exists()
