"""Files sigvault writes hold personal data (signature images, vectors, decisions): every one is mode 0600 and
every directory sigvault creates 0700, whatever the umask; an existing database others can read is tightened.

The modes are read from disk with ``os.stat`` after real commands (typer's CliRunner in-process, the fake
embedder), under the usual umask 022 and the careless 000.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FakeEmbedder, ImageFactory
from typer.testing import CliRunner, Result

from sigvault.config import sqlite_url

Invoke = Callable[..., Result]


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sigvault.embedder.load_embedder", lambda path=None, **kw: FakeEmbedder())


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield int(request.param)
    finally:
        os.umask(old)


def cli(home: Path) -> Invoke:
    from sigvault.cli import app

    runner = CliRunner()
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": sqlite_url(home / "sigvault.db")}

    def invoke(*args: object) -> Result:
        result = runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    return invoke


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Mode of ``root`` and of everything below it, by path relative to ``root``."""
    return {str(p.relative_to(root)): mode(p) for p in [root, *root.rglob("*")]}


def test_vault_backup_audit_and_export_are_private_whatever_the_umask(
    tmp_path: Path, images: ImageFactory, umask: int
) -> None:
    home = tmp_path / "new" / "home"  # two levels sigvault creates
    run = cli(home)
    refs = images.refs(1, 3)
    assert run("enroll", "alice", *refs).exit_code == 0
    assert run("enroll", "bob", *images.refs(2, 3)).exit_code == 0
    assert run("verify", "alice", images.write("q.png", 1, 7)).exit_code == 0

    # while a connection is open, the WAL and shared-memory files exist: 0600 too
    conn = sqlite3.connect(home / "sigvault.db")
    conn.execute("SELECT count(*) FROM refs").fetchone()
    try:
        side = [home / "sigvault.db-wal", home / "sigvault.db-shm"]
        assert [p for p in side if p.exists()], "SQLite in WAL mode keeps a -wal file while connected"
        assert {p.name: mode(p) for p in side if p.exists()} == {p.name: 0o600 for p in side if p.exists()}
    finally:
        conn.close()

    files = modes_under(home)
    assert "sigvault.db" in files and any(name.endswith(".faiss") for name in files)
    assert mode(tmp_path / "new") == 0o700
    assert files == {name: 0o700 if (home / name).is_dir() else 0o600 for name in files}, files

    backup = tmp_path / "backups" / "b1"
    assert run("backup", backup).exit_code == 0
    assert modes_under(backup) == {".": 0o700, "vault.db": 0o600, "manifest.json": 0o600}
    assert mode(tmp_path / "backups") == 0o700

    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([["item_id", "person", "image"], ["1", "alice", str(refs[0])], ["2", "bob", str(refs[1])]])
    out = tmp_path / "audit-out"
    assert run("audit", manifest, "--out", out, "--quiet").exit_code == 0
    written = modes_under(out)
    assert {"results.csv", "results.jsonl", "summary.json", "report.html"} <= set(written)
    assert written == {name: 0o700 if name == "." else 0o600 for name in written}, written

    export = tmp_path / "exports" / "log.jsonl"
    assert run("log", "export", "-o", export).exit_code == 0
    assert (mode(export), mode(export.parent)) == (0o600, 0o700)


def test_a_world_readable_database_is_tightened(tmp_path: Path, images: ImageFactory) -> None:
    """An older vault's database (and its WAL) created 0644 is made 0600 the next time sigvault opens it."""
    home = tmp_path / "home"
    run = cli(home)
    assert run("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    db = home / "sigvault.db"
    wal = home / "sigvault.db-wal"
    wal.write_bytes(b"")  # as an older sigvault's interrupted process could leave it
    os.chmod(db, 0o644)
    os.chmod(wal, 0o644)
    before = db.read_bytes()
    result = run("people", "list")
    assert result.exit_code == 0 and "alice" in result.output
    assert mode(db) == 0o600
    assert not wal.exists() or mode(wal) == 0o600
    assert db.read_bytes() == before


def test_evaluate_outputs_are_private(tmp_path: Path, umask: int) -> None:
    from sigvault.synth import write_dataset

    data = tmp_path / "scans"
    write_dataset(data, writers=3, genuine=4, forged=2, seed=0)
    out = tmp_path / "report"
    result = cli(tmp_path / "home")("evaluate", data, "--references", 2, "--splits", 1, "--out", out)
    assert result.exit_code == 0, result.output
    written = modes_under(out)
    assert {"report.json", "confusion.csv", "det.png", "histograms.png"} <= set(written)
    assert written == {name: 0o700 if name == "." else 0o600 for name in written}, written


def test_remove_and_purge_on_sqlite_say_the_bytes_are_erased(tmp_path: Path, images: ImageFactory) -> None:
    home = tmp_path / "home"
    run = cli(home)
    refs = images.refs(1, 3)
    run("enroll", "alice", *refs)
    bobs = images.refs(2, 3)
    run("enroll", "bob", *bobs)
    pieces = [r.read_bytes()[i : i + 64] for r in refs for i in range(64, r.stat().st_size - 64, 256)]
    pieces = [p for p in pieces if not any(p in b.read_bytes() for b in bobs)]  # alice's alone
    assert len(pieces) > 10
    assert any(p in (home / "sigvault.db").read_bytes() for p in pieces)
    out = run("people", "remove", "alice", "--yes")
    assert out.stdout == "removed 'alice' and 3 reference(s)\ntheir images and vectors are erased from the database files\n"
    assert not any(p in f.read_bytes() for f in home.rglob("*") if f.is_file() for p in pieces)
    assert run("db", "purge").stdout == "removed images and vectors are erased from the database files\n"
    assert run("db", "purge", "--json").stdout == '{"erased": true, "waiting_for": [], "note": null}\n'
