"""`verify` and `enroll` on whole documents: --region, --layout and --locate choose the zone compared, the zone
is printed and kept with the decision, and a bad region leaves the vault as it was."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, ImageFactory
from PIL import Image
from typer.testing import CliRunner

from sigvault.cli import app


@pytest.fixture
def cli(home: Path, db_url: str, backend: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sigvault.embedder.load_embedder", lambda path=None, **kw: FakeEmbedder())
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": db_url}
    runner = CliRunner()

    def invoke(*args: object):
        return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    if backend == "postgres":
        assert invoke("db", "upgrade").exit_code == 0
    return invoke


def _document(signature: Path, path: Path) -> Path:
    """A 1400x700 page with a printed line and a box, the signature pasted at (800, 380)."""
    page = Image.new("L", (1400, 700), 240)
    page.paste(Image.open(signature).convert("L"), (800, 380))
    page.save(path)
    return path


def test_a_region_compares_only_that_zone_and_is_kept_with_the_decision(cli, images: ImageFactory, tmp_path: Path):
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    q = images.write("q.png", 1, 7)
    w, h = Image.open(q).size
    doc = _document(q, tmp_path / "cheque.png")
    alone = json.loads(cli("verify", "alice", q, "--json").stdout)
    zoned = cli("verify", "alice", doc, "--region", f"800,380,{w},{h}", "--json")
    assert zoned.exit_code == 0, zoned.stderr
    got = json.loads(zoned.stdout)
    assert got["score"] == pytest.approx(alone["score"]) and got["decision"] == alone["decision"]
    assert got["region"] == {"x": 800, "y": 380, "w": w, "h": h, "how": "region", "layout": None}
    text = cli("verify", "alice", doc, "--region", f"800,380,{w},{h}").stdout
    assert f"region       x 800, y 380, {w}x{h} px of the image (--region)" in text.splitlines()
    exported = cli("log", "export", "-o", tmp_path / "log.jsonl")
    assert exported.exit_code == 0
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "enroll"
    assert json.dumps(records[2]).count('"how": "region"') == 1  # the zone is in the hash-chained record
    assert cli("log", "verify").exit_code == 0


def test_a_layout_names_the_zone(cli, images: ImageFactory, tmp_path: Path, home: Path):
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    q = images.write("q.png", 1, 7)
    w, h = Image.open(q).size
    doc = _document(q, tmp_path / "cheque.png")
    layouts = tmp_path / "layouts.toml"
    layouts.write_text(f'[[layout]]\nname = "cheque"\nzone = "800,380,{w},{h}"\n')
    got = json.loads(cli("verify", "alice", doc, "--layout", "cheque", "--layouts", layouts, "--json").stdout)
    assert got["region"]["how"] == "layout" and got["region"]["layout"] == "cheque"
    missing = cli("verify", "alice", doc, "--layout", "giro", "--layouts", layouts)
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "error: --layout 'giro': not in the layouts file; choose among cheque"


def test_enroll_from_a_zone_of_each_image(cli, images: ImageFactory, tmp_path: Path):
    refs = images.refs(1, 3)
    w, h = Image.open(refs[0]).size
    docs = [_document(r, tmp_path / f"card{i}.png") for i, r in enumerate(refs)]
    result = cli("enroll", "alice", *docs, "--region", f"800,380,{w},{h}", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(cli("verify", "alice", images.write("q.png", 1, 7), "--json").stdout)["decision"] == "accept"


@pytest.mark.parametrize(("region", "message"), [
    ("1,2,3", "error: --region '1,2,3': give X,Y,W,H in pixels or percentages, e.g. 700,300,470,145 or 58%,54%,40%,27%"),
    ("2000,0,50,50", "error: --region '2000,0,50,50': the box lies outside the 1400x700 image or is under 8 px; check it"),
])
def test_a_bad_region_is_a_usage_error_and_changes_nothing(cli, images: ImageFactory, tmp_path: Path, region, message):
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    doc = _document(images.write("q.png", 1, 7), tmp_path / "cheque.png")
    before = cli("log", "export", "-o", tmp_path / "before.jsonl")
    result = cli("verify", "alice", doc, "--region", region)
    assert (result.exit_code, result.stderr.strip()) == (2, message)
    cli("log", "export", "-o", tmp_path / "after.jsonl")
    assert before.exit_code == 0 and (tmp_path / "before.jsonl").read_text() == (tmp_path / "after.jsonl").read_text()


def test_locate_leaves_a_signature_box_whole(cli, images: ImageFactory):
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    got = json.loads(cli("verify", "alice", images.write("q.png", 1, 7), "--locate", "--json").stdout)
    assert "region" not in got and got["decision"] == "accept"


def test_locate_finds_the_signature_on_a_synthetic_cheque(cli, tmp_path: Path):
    from sigvault import cheques
    from sigvault.synth import SyntheticWriter

    writer = SyntheticWriter(11)
    refs = []
    for i in range(3):
        refs.append(tmp_path / f"r{i}.png")
        writer.genuine(i).save(refs[-1])
    assert cli("enroll", "bob", *refs).exit_code == 0
    others = [np.asarray(SyntheticWriter(k).genuine(0)) for k in (20, 21, 22)]
    doc = cheques.render(np.asarray(writer.genuine(5)), others, "colour", 4)
    path = tmp_path / "cheque.jpg"
    path.write_bytes(doc.data)
    got = json.loads(cli("verify", "bob", path, "--locate", "--json").stdout)
    r = got["region"]
    assert r["how"] == "located"
    assert doc.signature.iou(cheques.Box(r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"])) >= 0.5
    assert Image.open(io.BytesIO(doc.data)).size == (1200, 550)


def test_an_audit_of_whole_documents_compares_each_rows_zone(cli, images: ImageFactory, tmp_path: Path):
    """A manifest's `region` and `layout` columns and `audit --locate`: each row is decided on its zone as
    `verify` decides it, the zone is in results.jsonl, results.csv and the logged decision, a zone outside the
    image is that row's error, and report.html shows the document with the zone boxed beside the zone compared."""
    from sigvault import cheques
    from sigvault.synth import SyntheticWriter

    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    q = images.write("q.png", 1, 7)
    w, h = Image.open(q).size
    _document(q, tmp_path / "cheque.png")
    _document(images.write("o.png", 4, 2), tmp_path / "other.png")  # another writer: rejected, in the report
    layouts = tmp_path / "layouts.toml"
    layouts.write_text(f'[[layout]]\nname = "cheque"\nzone = "800,380,{w},{h}"\n')
    writer = SyntheticWriter(11)
    others = [np.asarray(SyntheticWriter(k).genuine(0)) for k in (20, 21, 22)]
    rendered = cheques.render(np.asarray(writer.genuine(5)), others, "colour", 4)
    (tmp_path / "located.jpg").write_bytes(rendered.data)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "item_id,person,image,region,layout\n"
        f"by-region,alice,cheque.png,\"800,380,{w},{h}\",\n"
        "by-layout,alice,cheque.png,,cheque\n"
        f"other,alice,other.png,\"800,380,{w},{h}\",\n"
        "outside,alice,cheque.png,\"2000,0,50,50\",\n"
        "located,alice,located.jpg,,\n"
        "box,alice,q.png,,\n"
    )
    (tmp_path / "q.png").write_bytes(q.read_bytes())
    out = tmp_path / "audit"
    result = cli("audit", manifest, "--out", out, "--locate", "--layouts", layouts, "--quiet")
    assert result.exit_code == 1, result.stderr  # one error row
    rows = {r["item_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    alone = json.loads(cli("verify", "alice", q, "--json").stdout)
    assert rows["by-region"]["zone"] == {"x": 800, "y": 380, "w": w, "h": h, "how": "region", "layout": None}
    assert rows["by-layout"]["zone"] == {"x": 800, "y": 380, "w": w, "h": h, "how": "layout", "layout": "cheque"}
    for item in ("by-region", "by-layout"):
        assert rows[item]["score"] == pytest.approx(alone["score"]) and rows[item]["decision"] == alone["decision"]
    assert rows["other"]["decision"] == "reject"
    assert rows["outside"]["decision"] == "error"
    assert rows["outside"]["error"] == (
        "--region '2000,0,50,50': the box lies outside the 1400x700 image or is under 8 px; check it"
    )
    located = rows["located"]["zone"]
    assert located["how"] == "located"
    box = cheques.Box(located["x"], located["y"], located["x"] + located["w"], located["y"] + located["h"])
    assert rendered.signature.iou(box) >= 0.5
    assert rows["box"]["zone"] is None and rows["box"]["score"] == pytest.approx(alone["score"])
    header, *lines = (out / "results.csv").read_text().splitlines()
    assert f'"800,380,{w},{h}"' in lines[0] and "zone" in header.split(",")
    logged = [json.loads(line) for line in cli("log", "export").stdout.splitlines()]
    audit_regions = [e["details"].get("region") for e in logged if e["kind"] == "audit"]
    assert audit_regions.count(rows["by-layout"]["zone"]) == 1 and audit_regions.count(None) == 1
    report = (out / "report.html").read_text()
    assert 'alt="document of item other with the zone compared boxed" src="data:image/webp;base64,' in report
    assert f"document, zone 800,380,{w},{h} (region)" in report


def test_a_malformed_region_in_a_manifest_stops_the_audit_before_anything_is_decided(cli, images, tmp_path: Path):
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    manifest = tmp_path / "m.csv"
    manifest.write_text('item_id,person,image,region,layout\na,alice,q.png,"1,2,3",\nb,alice,q.png,"1,2,30,30",x\n')
    result = cli("audit", manifest, "--out", tmp_path / "audit")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: m.csv line 2: region '1,2,3': give X,Y,W,H in pixels or percentages, e.g. 700,300,470,145 or "
        "58%,54%,40%,27%"
    )
    manifest.write_text('item_id,person,image,region,layout\nb,alice,q.png,"1,2,30,30",x\n')
    result = cli("audit", manifest, "--out", tmp_path / "audit")
    assert result.stderr.strip() == "error: m.csv line 2: give a region or a layout, not both (region '1,2,30,30', layout 'x')"
    assert [json.loads(x)["kind"] for x in cli("log", "export").stdout.splitlines()].count("audit") == 0
