"""``sigvault backup`` / ``sigvault restore``: the whole vault moves, between SQLite and PostgreSQL both ways,
consistently while in use; the restored vault decides exactly as the original; damaged or partial backups and
occupied targets are refused without changing anything.

The CLI runs in-process (typer's CliRunner) with the fake embedder, as in test_cli.py.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FakeEmbedder, ImageFactory, signature_png
from typer.testing import CliRunner, Result

from sigvault.backup import DATABASE_FILE, MANIFEST_FILE, backup_vault, read_manifest, restore_vault
from sigvault.config import Settings, sqlite_url
from sigvault.errors import SigvaultError, UsageError
from sigvault.vault import Vault, upgrade_database

Invoke = Callable[..., Result]
TABLES = ("persons", "refs", "ref_images", "thresholds", "decisions", "log_head", "api_keys")


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sigvault.embedder.load_embedder", lambda path=None, **kw: FakeEmbedder())


def make_cli(home: Path, url: str) -> Invoke:
    runner = CliRunner()
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": url}

    def invoke(*args: object) -> Result:
        return runner.invoke(app_(), [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


def app_():  # noqa: ANN202 - the typer app, imported late so the monkeypatch above is in place
    from sigvault.cli import app

    return app


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _url(backend: str, home: Path, request: pytest.FixtureRequest, fixture: str) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue(fixture))
    return sqlite_url(home / "sigvault.db")


@pytest.fixture
def pg_url_2(pg_url: str) -> Iterator[str]:
    """A second fresh PostgreSQL database (for PostgreSQL -> PostgreSQL)."""
    import uuid

    from conftest import _pg_admin
    from sqlalchemy import text

    name = f"sigvault_test_{uuid.uuid4().hex[:16]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def table_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every vault table, as Python values (comparable across backends)."""
    from sqlalchemy import create_engine, select

    from sigvault.db.models import Base

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                for t in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def populate(cli: Invoke, images: ImageFactory) -> dict[str, dict]:
    """Three persons (one with an override, one removed), a few decisions; returns verify --json of two questions."""
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    assert cli("enroll", "Ame\u0301lie", *images.refs(2, 2)).exit_code == 0
    assert cli("enroll", "bob", *images.refs(3, 2)).exit_code == 0
    assert cli("people", "threshold", "Amélie", "0.55").exit_code == 0
    assert cli("people", "remove", "bob", "--yes").exit_code == 0
    out = {}
    for person, writer in (("alice", 1), ("Amélie", 1)):  # a genuine one and an impostor
        result = cli("verify", person, images.write(f"q-{writer}.png", writer, 9), "--json")
        assert result.exit_code == 0, result.stderr
        out[person] = json.loads(result.stdout)
    return out


def same_decision(before: dict, after: dict) -> None:
    keys = ("person", "decision", "score", "probability", "threshold", "threshold_method", "model", "references")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("source_backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_round_trip_gives_the_same_decisions(
    source_backend: str, target_backend: str, tmp_path: Path, images: ImageFactory, request: pytest.FixtureRequest
) -> None:
    src_home, dst_home = tmp_path / "src", tmp_path / "dst"
    src_url = _url(source_backend, src_home, request, "pg_url")
    dst_url = _url(target_backend, dst_home, request, "pg_url_2" if source_backend == "postgres" else "pg_url")
    src, dst = make_cli(src_home, src_url), make_cli(dst_home, dst_url)
    if source_backend == "postgres":
        assert src("db", "upgrade").exit_code == 0
    before = populate(src, images)
    rows_before = table_rows(src_url)

    out = src("backup", tmp_path / "bk")
    assert out.exit_code == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"backed up 2 persons, 5 references, 7 log entries ({(tmp_path / 'bk' / DATABASE_FILE).stat().st_size} bytes) "
        f"to {tmp_path / 'bk'}",
        "model fake-0: 5 references",
    ]
    manifest = read_manifest(tmp_path / "bk")
    assert sorted(p.name for p in (tmp_path / "bk").iterdir()) == [MANIFEST_FILE, DATABASE_FILE]
    assert manifest["tables"] == {t: len(rows_before[t]) for t in TABLES}
    assert manifest["models"] == {"fake-0": 5}
    assert manifest["sequences"]["refs"] == 7  # bob's references 6 and 7 were removed: their ids stay used
    # 3 enrolments, an override, a removal (events) and 2 verifications
    assert (manifest["log"]["head_id"], manifest["log"]["intact"]) == (7, True)
    assert manifest["source"]["dialect"] == ("postgresql" if source_backend == "postgres" else "sqlite")

    restored = dst("restore", tmp_path / "bk")
    assert restored.exit_code == 0, restored.stderr
    assert restored.stdout.splitlines() == [
        f"restored 2 persons, 5 references, 7 log entries from {tmp_path / 'bk'}",
        "model fake-0: 5 references",
        "index rebuilt (1 file(s)); decision log head 8",
    ]
    rows_after = table_rows(dst_url)
    restore_event = rows_after["decisions"].pop()  # the restore itself, logged after the restored entries
    assert (restore_event[0], restore_event[2]) == (8, "restore")
    assert rows_after.pop("log_head") != rows_before["log_head"]
    assert rows_after == {t: rows for t, rows in rows_before.items() if t != "log_head"}  # every row identical
    assert dst("index", "check").exit_code == 0
    assert src("log", "verify").stdout.startswith("decision log intact: 7 entries")
    assert dst("log", "verify").stdout.startswith("decision log intact: 8 entries")
    for person, writer in (("alice", 1), ("Amélie", 1)):
        after = json.loads(dst("verify", person, images.write(f"q-{writer}.png", writer, 9), "--json").stdout)
        same_decision(before[person], after)
    shown = json.loads(dst("people", "show", "Amélie", "--json").stdout)
    assert (shown["threshold"], shown["is_override"]) == (0.55, True)
    added = json.loads(dst("enroll", "carol", images.write("carol.png", 4, 1), "--json").stdout)
    assert added["added"][0]["reference_id"] == 8  # never an id the source had handed out
    assert dst("index", "check").exit_code == 0
    assert dst("log", "verify").exit_code == 0


def test_backup_file_is_self_contained_sqlite(tmp_path: Path, images: ImageFactory) -> None:
    home = tmp_path / "home"
    cli = make_cli(home, sqlite_url(home / "sigvault.db"))
    populate(cli, images)
    assert cli("backup", tmp_path / "bk").exit_code == 0
    db = tmp_path / "bk" / DATABASE_FILE
    assert not (tmp_path / "bk" / f"{DATABASE_FILE}-wal").exists()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        images_bytes = {sha for (sha,) in conn.execute("SELECT sha256 FROM refs")}
        for (data,) in conn.execute("SELECT data FROM ref_images"):
            assert hashlib.sha256(data).hexdigest() in images_bytes
    conn.close()
    manifest = json.loads((tmp_path / "bk" / MANIFEST_FILE).read_text())
    assert manifest["files"][DATABASE_FILE]["sha256"] == hashlib.sha256(db.read_bytes()).hexdigest()
    as_json = json.loads(cli("backup", tmp_path / "bk2", "--json").stdout)
    assert as_json["tables"]["refs"] == 5 and as_json["directory"] == str(tmp_path / "bk2")


# ------------------------------------------------------------------------------------------ refusals


def _sqlite_vault(tmp_path: Path, name: str, images: ImageFactory) -> tuple[Invoke, Path, str]:
    home = tmp_path / name
    url = sqlite_url(home / "sigvault.db")
    cli = make_cli(home, url)
    assert cli("enroll", f"{name}-person", *images.refs(len(name), 2)).exit_code == 0
    return cli, home, url


def _one_line_error(result: Result, code: int, message: str) -> None:
    assert (result.exit_code, result.stdout) == (code, "")
    assert result.stderr == f"error: {message}\n"


def test_restore_refuses_an_occupied_target_unless_forced(tmp_path: Path, images: ImageFactory) -> None:
    src, _, src_url = _sqlite_vault(tmp_path, "src", images)
    assert src("backup", tmp_path / "bk").exit_code == 0
    dst, dst_home, dst_url = _sqlite_vault(tmp_path, "dst", images)
    before = table_rows(dst_url)
    index_before = next((dst_home / "index").glob("*.faiss")).read_bytes()
    _one_line_error(
        dst("restore", tmp_path / "bk"),
        2,
        f"database {dst_url} already holds a vault (1 decisions, 1 persons, 2 refs, 1 thresholds, 2 ref_images); restore into an "
        "empty database, or pass --force to replace it",
    )
    assert table_rows(dst_url) == before
    assert next((dst_home / "index").glob("*.faiss")).read_bytes() == index_before

    forced = dst("restore", tmp_path / "bk", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert forced.stdout.startswith(
        f"replaced the vault with 1 persons, 2 references, 1 log entries from {tmp_path / 'bk'}"
    )
    restored, source = table_rows(dst_url), table_rows(src_url)
    assert restored["decisions"].pop()[2] == "restore"  # the restore, logged after the restored entries
    assert {t: r for t, r in restored.items() if t != "log_head"} == {t: r for t, r in source.items() if t != "log_head"}
    assert [line.split("\t")[0] for line in dst("people", "list").stdout.splitlines()] == ["src-person"]
    check = dst("index", "check")  # the old vault's index (same ids, other vectors) was not kept
    assert check.exit_code == 0, check.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip", "{bk}/vault.db: damaged (size or SHA-256 differs from manifest.json); use another backup"),
        ("truncate", "{bk}/vault.db: damaged (size or SHA-256 differs from manifest.json); use another backup"),
        ("no-manifest", "{bk}: no manifest.json; not a complete sigvault backup (an interrupted backup has none)"),
        ("no-db", "{bk}/vault.db: missing from the backup"),
        ("bad-manifest", "{bk}/manifest.json: not a sigvault backup manifest"),
        (
            "newer-format",
            "{bk}/manifest.json: backup format version 2 is not supported by this sigvault (it reads "
            "version 1); use the sigvault version that made it",
        ),
        ("no-dir", "{bk}-absent: no such backup directory"),
    ],
)
def test_damaged_backups_are_refused_and_change_nothing(
    tmp_path: Path, images: ImageFactory, damage: str, message: str
) -> None:
    src, _, _ = _sqlite_vault(tmp_path, "src", images)
    bk = tmp_path / "bk"
    assert src("backup", bk).exit_code == 0
    db, manifest = bk / DATABASE_FILE, bk / MANIFEST_FILE
    data = bytearray(db.read_bytes())
    target = bk
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        db.write_bytes(bytes(data))
    elif damage == "truncate":
        db.write_bytes(bytes(data[:4096]))
    elif damage == "no-manifest":
        manifest.unlink()
    elif damage == "no-db":
        db.unlink()
    elif damage == "bad-manifest":
        manifest.write_text('{"format": "zip"}')
    elif damage == "newer-format":
        manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 2'))
    else:
        target = tmp_path / "bk-absent"
    home = tmp_path / "dst"
    url = sqlite_url(home / "sigvault.db")
    dst = make_cli(home, url)
    assert dst("people", "list").exit_code == 0  # an empty, initialised vault
    before = table_rows(url)
    _one_line_error(dst("restore", target), 1, message.format(bk=bk))
    assert table_rows(url) == before


def test_backup_refuses_a_non_empty_directory(tmp_path: Path, images: ImageFactory) -> None:
    src, _, _ = _sqlite_vault(tmp_path, "src", images)
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "other.txt").write_text("keep me")
    _one_line_error(
        src("backup", tmp_path / "bk"),
        2,
        f"{tmp_path / 'bk'}: is not empty; give an empty or new directory for the backup",
    )
    assert [p.name for p in (tmp_path / "bk").iterdir()] == ["other.txt"]
    (tmp_path / "file").write_text("x")
    _one_line_error(
        src("backup", tmp_path / "file"),
        2,
        f"{tmp_path / 'file'}: is not a directory; give an empty or new directory for the backup",
    )


def test_restore_refuses_a_foreign_database(tmp_path: Path, images: ImageFactory) -> None:
    src, _, _ = _sqlite_vault(tmp_path, "src", images)
    assert src("backup", tmp_path / "bk").exit_code == 0
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.close()
    settings = Settings(home=tmp_path / "f", database_url=sqlite_url(foreign))
    with pytest.raises(
        SigvaultError, match="holds other tables and no sigvault schema; restore into an empty database"
    ):
        restore_vault(settings, tmp_path / "bk")


# ------------------------------------------------------------------------------------- while in use


def _busy(settings: Settings, stop: threading.Event, errors: list[BaseException], counter: list[int]) -> None:
    """Enroll new persons and verify, as fast as possible, until stopped (its own engine and connections)."""
    try:
        with Vault.open(settings, embedder=FakeEmbedder()) as vault:
            k = 0
            while not stop.is_set():
                k += 1
                vault.enroll(f"busy-{k}", [signature_png(100 + k, v) for v in (1, 2, 3)])
                vault.verify(f"busy-{k}", signature_png(100 + k, 7))
                counter[0] = k
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_backup_while_in_use_is_one_consistent_snapshot(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    home = tmp_path / "home"
    url = _url(backend, home, request, "pg_url")
    settings = Settings(home=home, database_url=url)
    upgrade_database(settings)
    stop, errors, counter = threading.Event(), [], [0]
    worker = threading.Thread(target=_busy, args=(settings, stop, errors, counter))
    worker.start()
    results = []
    try:
        for n in range(3):
            while counter[0] < 2 * (n + 1) and worker.is_alive():
                stop.wait(0.05)
            results.append(backup_vault(settings, tmp_path / f"bk{n}"))
    finally:
        stop.set()
        worker.join(timeout=120)
    assert errors == []
    assert [r.tables["persons"] for r in results] == sorted(r.tables["persons"] for r in results)
    for n, result in enumerate(results):
        db = tmp_path / f"bk{n}" / DATABASE_FILE
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            # each enroll (3 references + threshold) and each verify (log entry + head) is wholly in or out
            per_person = conn.execute(
                "SELECT p.person_id, COUNT(r.id), t.n_references FROM persons p LEFT JOIN refs r ON r.person_pk = p.id "
                "LEFT JOIN thresholds t ON t.person_pk = p.id GROUP BY p.id"
            ).fetchall()
            assert per_person and all(n_refs == 3 == n_t for _, n_refs, n_t in per_person), per_person
            images_n = conn.execute("SELECT COUNT(*) FROM ref_images").fetchone()[0]
            assert images_n == 3 * len(per_person)
            decided = {p for (p,) in conn.execute("SELECT person_id FROM decisions")}
            assert decided <= {p for p, _, _ in per_person}
            assert len(decided) >= len(per_person) - 1  # at most the newest person is not verified yet
        conn.close()
        assert result.manifest["log"]["intact"]
        target = Settings(home=tmp_path / f"restored{n}", database_url=sqlite_url(tmp_path / f"restored{n}" / "v.db"))
        restore_vault(target, tmp_path / f"bk{n}")
        with Vault.open(target, embedder=FakeEmbedder()) as vault:
            assert vault.check_index().consistent
            assert vault.log_verify().ok


def test_restore_is_all_or_nothing(tmp_path: Path, images: ImageFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in the middle of loading (here: the final check) leaves the target exactly as it was."""
    src, _, _ = _sqlite_vault(tmp_path, "src", images)
    assert src("backup", tmp_path / "bk").exit_code == 0
    dst, _, dst_url = _sqlite_vault(tmp_path, "dst", images)
    before = table_rows(dst_url)
    import sigvault.backup as backup_module

    def fail(*args: object) -> None:
        raise UsageError("simulated failure after the copy")

    monkeypatch.setattr(backup_module, "_check_restored", fail)
    _one_line_error(dst("restore", tmp_path / "bk", "--force"), 2, "simulated failure after the copy")
    assert table_rows(dst_url) == before
