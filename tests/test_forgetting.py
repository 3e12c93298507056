"""Forgetting on PostgreSQL: after ``people remove`` no row holds the removed embeddings or image
bytes, and (when the server's data directory is readable, as for a local server run by root) neither do
the database's files on disk. test_vault.py::test_remove_erases_every_trace covers SQLite (the database
file and the index files); this file adds the server side.

What remains by design or outside sigvault's reach is listed in docs/reliability.md: the server's
write-ahead log and its archives, backups taken before the removal, the decision log's hashes and scores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, ImageFactory

from sigvault import imaging
from sigvault.config import Settings
from sigvault.vault import Vault, upgrade_database

PG_SERVER = os.environ.get("SIGVAULT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")

pytestmark = pytest.mark.postgres


def _secrets(embedder: FakeEmbedder, refs: list[Path], others: list[Path]) -> tuple[list[bytes], list[bytes]]:
    """(the references' float32 vectors as stored, 64-byte pieces of their images no other image shares)."""
    canvases = np.stack([imaging.load_canvas(p, embedder.spec) for p in refs])
    vectors = [v.tobytes() for v in embedder.embed(canvases).astype("<f4")]
    pieces = [ref.read_bytes()[i : i + 64] for ref in refs for i in range(64, ref.stat().st_size - 64, 256)]
    pieces = [p for p in pieces if not any(p in o.read_bytes() for o in others)]
    return vectors, pieces


def _table_bytes(engine) -> bytes:  # noqa: ANN001
    """Every value of every table in the database, as bytes (binary columns raw, the rest as text)."""
    from sqlalchemy import inspect, text

    out = bytearray()
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    out += bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
    return bytes(out)


def _database_files(engine) -> list[Path] | None:  # noqa: ANN001
    """The files of this database under the server's data directory, or None when they cannot be read."""
    from sqlalchemy import text

    with engine.connect() as conn:
        address = conn.execute(text("SELECT inet_server_addr()")).scalar()
        if address is not None and str(address) not in ("127.0.0.1", "::1"):
            return None
        try:
            data_dir = conn.execute(text("SHOW data_directory")).scalar()
        except Exception:  # not a superuser
            return None
        oid = conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar()
    folder = Path(str(data_dir)) / "base" / str(oid)
    try:
        files = [p for p in folder.iterdir() if p.is_file()]
        for p in files[:1]:
            p.read_bytes()
    except OSError:
        return None
    return files


def _checkpoint(engine) -> None:  # noqa: ANN001
    """Write every dirty buffer to the data files (so the scan sees what the server holds)."""
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))


def _found(secrets: list[bytes], blob: bytes) -> int:
    return sum(1 for s in secrets if s in blob)


def test_remove_leaves_no_embedding_or_image_bytes_in_postgresql(
    pg_url: str, tmp_path: Path, images: ImageFactory
) -> None:
    embedder = FakeEmbedder()
    settings = Settings(home=tmp_path / "home", database_url=pg_url)
    upgrade_database(settings)
    refs, bobs = images.refs(1, 3), images.refs(2, 2)
    vectors, pieces = _secrets(embedder, refs, bobs)
    assert len(pieces) > 10
    with Vault.open(settings, embedder=embedder) as vault:
        vault.enroll("alice", refs)
        vault.enroll("bob", bobs)
        vault.verify("alice", images.write("q.png", 1, 5))
        engine = vault.engine
        files = _database_files(engine)
        # positive control: before the removal the secrets are there, in the rows and on disk
        assert _found(vectors, _table_bytes(engine)) == 3
        assert _found(pieces, _table_bytes(engine)) == len(pieces)
        if files is not None:
            _checkpoint(engine)
            on_disk = b"".join(p.read_bytes() for p in _database_files(engine) or [])
            assert _found(vectors, on_disk) == 3

        result = vault.remove("alice")
        assert result.n_references == 3

        rows = _table_bytes(engine)
        assert _found(vectors, rows) == 0 and _found(pieces, rows) == 0
        assert b"alice" in rows  # the decision log keeps the person id, hashes and scores (by design)
        assert vault.log_verify().ok
        assert vault.check_index().consistent
        erasure = result.erasure
        assert erasure is not None
        if not erasure.erased:  # another session on the server holds an older transaction: reported, not hidden
            assert erasure.waiting_for and all(b.pid or b.name for b in erasure.waiting_for)
            erasure = vault.purge(wait=60)  # what `sigvault db purge --wait 60` does once they end
        files = _database_files(engine)
        if files is None:
            pytest.skip("the server's data directory is not readable here; the rows were checked")
        _checkpoint(engine)
        on_disk = b"".join(p.read_bytes() for p in files if p.exists())
        if erasure.erased:
            assert _found(vectors, on_disk) == 0
            assert _found(pieces, on_disk) == 0
        else:  # other sessions kept older transactions open for a minute: reported, so not claimed erased
            assert erasure.waiting_for
            pytest.skip(f"other sessions on the server outlived the wait: {erasure.message()}")
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert _found(vectors, data) == 0, path


@contextmanager
def _older_transaction(url: str, kind: str) -> Iterator[int]:
    """An open transaction that PostgreSQL must keep deleted rows for: one holding a transaction id in another
    database (``xid``), or a snapshot in the vault's own database (``snapshot``). Yields its backend pid."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    if kind == "xid":
        dsn = dsn.rsplit("/", 1)[0] + "/postgres"
    conn = psycopg.connect(dsn)
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT pg_current_xact_id()" if kind == "xid" else "SELECT count(*) FROM persons")
        yield int(conn.info.backend_pid)
    finally:
        conn.close()  # rolls the transaction back


@pytest.mark.parametrize("kind", ["xid", "snapshot"])
def test_remove_reports_what_waits_and_db_purge_completes_it(
    pg_url: str, tmp_path: Path, images: ImageFactory, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Deterministic whatever else runs on the server: our own older transaction keeps alice's bytes on disk;
    ``people remove`` says so naming it and ``db purge`` refuses (exit 1) while it is open; once it ends,
    ``db purge`` erases them from the files (or, if another session on the server still holds an older
    transaction after a minute, says so instead of claiming it)."""
    from sqlalchemy import create_engine
    from typer.testing import CliRunner

    from sigvault.cli import app

    embedder = FakeEmbedder()
    monkeypatch.setattr("sigvault.embedder.load_embedder", lambda path=None, **kw: embedder)
    env = {"SIGVAULT_HOME": str(tmp_path / "home"), "SIGVAULT_DATABASE_URL": pg_url}
    runner = CliRunner()

    def cli(*args: object) -> object:
        return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    refs, bobs = images.refs(1, 3), images.refs(2, 3)
    vectors, pieces = _secrets(embedder, refs, bobs)
    assert cli("db", "upgrade").exit_code == 0
    assert cli("enroll", "alice", *refs).exit_code == 0
    assert cli("enroll", "bob", *bobs).exit_code == 0
    engine = create_engine(pg_url)
    try:
        files = _database_files(engine)
        with _older_transaction(pg_url, kind) as pid:
            removed = cli("people", "remove", "alice", "--yes")
            assert removed.exit_code == 0
            assert removed.stdout == "removed 'alice' and 3 reference(s)\n"
            warning = removed.stderr
            assert warning.startswith("warning: their images and vectors stay in the database files until ")
            assert f"pid {pid} (" in warning and "then run `sigvault db purge`" in warning and warning.count("\n") == 1
            rows = _table_bytes(engine)
            assert _found(vectors, rows) == 0 and _found(pieces, rows) == 0  # gone from every row at once
            if files is not None:  # and truly still on disk, as reported
                _checkpoint(engine)
                assert _found(pieces, b"".join(p.read_bytes() for p in _database_files(engine) or [])) > 0
            waiting = cli("db", "purge", "--json")
            assert waiting.exit_code == 1
            report = json.loads(waiting.stdout)
            assert report["erased"] is False and pid in [b["pid"] for b in report["waiting_for"]]
            text = cli("db", "purge")
            assert text.exit_code == 1 and f"pid {pid} (" in text.stderr and text.stderr.startswith("error: ")
        done = cli("db", "purge", "--wait", 60)
        if done.exit_code != 0:  # only another session's older transaction can keep it now
            assert f"pid {pid} (" not in done.stderr
            pytest.skip(f"other sessions on the server outlived the wait: {done.stderr.strip()}")
        assert done.stdout == "removed images and vectors are erased from the database files\n"
        assert cli("index", "check").exit_code == 0
        if files is None:
            pytest.skip("the server's data directory is not readable here; the report and the rows were checked")
        _checkpoint(engine)
        on_disk = b"".join(p.read_bytes() for p in _database_files(engine) or [])
        assert _found(vectors, on_disk) == 0
        assert _found(pieces, on_disk) == 0
    finally:
        engine.dispose()
