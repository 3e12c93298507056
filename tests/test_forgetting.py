"""Issue 5, forgetting, on PostgreSQL: after ``people remove`` no row holds the removed embeddings or image
bytes, and (when the server's data directory is readable, as for a local server run by root) neither do
the database's files on disk. test_vault.py::test_remove_erases_every_trace covers SQLite (the database
file and the index files); this file adds the server side.

What remains by design or outside sigvault's reach is listed in docs/reliability.md: the server's
write-ahead log and its archives, backups taken before the removal, the decision log's hashes and scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, ImageFactory

from sigvault import imaging
from sigvault.config import Settings
from sigvault.vault import Vault, upgrade_database

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

        assert vault.remove("alice").n_references == 3

        rows = _table_bytes(engine)
        assert _found(vectors, rows) == 0 and _found(pieces, rows) == 0
        assert b"alice" in rows  # the decision log keeps the person id, hashes and scores (by design)
        assert vault.log_verify().ok
        assert vault.check_index().consistent
        files = _database_files(engine)
        if files is None:
            pytest.skip("the server's data directory is not readable here; the rows were checked")
        _checkpoint(engine)
        on_disk = b"".join(p.read_bytes() for p in files if p.exists())
        assert _found(vectors, on_disk) == 0
        assert _found(pieces, on_disk) == 0
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert _found(vectors, data) == 0, path
