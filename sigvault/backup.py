"""``sigvault backup DIR`` / ``sigvault restore DIR``: a whole vault in one consistent, portable snapshot.

SQL holds the whole vault: persons, references with their exact image bytes and vectors (and the id of the
model that made them), thresholds and overrides, and the hash-chained decision log. The FAISS index is a
cache of SQL, so it is not copied: restore rebuilds it. A backup directory holds two files:

- ``vault.db``: a SQLite database at the schema revision of this sigvault, whatever the source backend.
  From SQLite it is made with SQLite's online backup API in a single step (one read snapshot: writers
  carry on, WAL mode); from PostgreSQL every table is copied inside one ``REPEATABLE READ READ ONLY``
  transaction (one snapshot of all tables). Either way the copy is a single point in time.
- ``manifest.json``: written last (so a backup cut short has none and is refused): format version, source,
  schema revision, row count of every table, the reference-id high-water mark (ids are never reused, also
  across a restore), the model ids that made the stored vectors, the decision log's head, and the size and
  SHA-256 of ``vault.db``.

Encrypted (``sigvault backup --encrypt``, :mod:`sigvault.encryption`): the snapshot is made in a private
temporary directory (``TMPDIR``, mode 0700), described, encrypted into ``vault.db.enc`` and deleted; no
unencrypted copy is ever written into the backup directory. The manifest stays readable (row counts, model
ids, log head: no person id, image or vector) and says how the file was encrypted; its checksum is the
encrypted file's. Restore decrypts into a private temporary file, checks it against the manifest, loads it as
any backup and deletes it; a wrong passphrase or key is refused before the target is touched.

Restore checks the manifest and the checksum, refuses a target database that holds anything unless
``force`` (then the old content is replaced in the same transaction: the target holds the old vault or
the new one, never a mix), copies every table in one write transaction, checks the row counts, the log
head and the whole hash chain before committing, sets the id sequences, deletes the target home's index
files and rebuilds one per model from SQL.

Typical use::

    backup_vault(Settings.resolve(), Path("/backups/2025-11-25"))
    restore_vault(Settings.resolve(database_url=other), Path("/backups/2025-11-25"), force=False)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sigvault import config
from sigvault.durable import atomic_write, private_dir, private_file, replace_file
from sigvault.errors import SigvaultError, StaleSchemaError, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table

    from sigvault.encryption import Secret


FORMAT = "sigvault-backup"
FORMAT_VERSION = 1
DATABASE_FILE = "vault.db"
ENCRYPTED_FILE = "vault.db.enc"  # an encrypted backup's database (sigvault.encryption)
MANIFEST_FILE = "manifest.json"
_BATCH = 200  # rows per INSERT while copying (reference images can be large)
#: Tables whose integer ids come from a sequence; their high-water mark travels with the backup so that
#: a restored vault never hands out an id its source had already used (reference ids are FAISS ids).
SEQUENCED = ("persons", "refs")


@dataclass(frozen=True)
class BackupResult:
    directory: Path
    manifest: dict[str, Any]

    @property
    def tables(self) -> dict[str, int]:
        return dict(self.manifest["tables"])

    @property
    def size(self) -> int:
        return sum(int(meta["bytes"]) for meta in self.manifest["files"].values())

    @property
    def encrypted(self) -> bool:
        return "encryption" in self.manifest

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), **self.manifest}


@dataclass(frozen=True)
class RestoreResult:
    directory: Path
    database: str
    tables: dict[str, int]
    models: dict[str, int]
    log_head: tuple[int, str]
    replaced: bool  # the target held a vault that was replaced (force)
    indexes: tuple[Path, ...]  # index files rebuilt, one per model

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "database": self.database,
            "tables": self.tables,
            "models": self.models,
            "log_head": {"id": self.log_head[0], "hash": self.log_head[1]},
            "replaced": self.replaced,
            "indexes": [str(p) for p in self.indexes],
        }


# ----------------------------------------------------------------------------------------------- backup


def backup_vault(settings: config.Settings, directory: Path, *, secret: Secret | None = None) -> BackupResult:
    """``sigvault backup DIR``: :func:`backup` of the database the settings name."""
    from sigvault.db.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        return backup(engine, directory, secret=secret)
    finally:
        engine.dispose()


def restore_vault(
    settings: config.Settings, directory: Path, *, force: bool = False, secret: Secret | None = None
) -> RestoreResult:
    """``sigvault restore DIR``: :func:`restore` into the database and home the settings name."""
    from sigvault.db.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        return restore(
            directory, engine, settings.home, force=force, secret=secret, operator=settings.operator, reason=settings.reason
        )
    finally:
        engine.dispose()


def backup(engine: Engine, directory: Path, *, secret: Secret | None = None) -> BackupResult:
    """Write a consistent snapshot of the vault behind ``engine`` into ``directory`` (absent or empty);
    encrypted with ``secret`` (:mod:`sigvault.encryption`) when one is given.

    Safe while the vault is in use: the snapshot is one read transaction; nobody is blocked.

    Raises:
        UsageError: ``directory`` holds files already, or the key file lies inside it.
        SigvaultError: the database cannot be read, or the directory cannot be written.
    """
    import tempfile

    from sigvault.db.engine import check_schema, describe

    directory = Path(directory)
    if secret is not None and secret.kind == "key" and Path(secret.source).absolute().is_relative_to(directory.absolute()):
        raise UsageError(f"{secret.source}: the key file must not be kept in the backup directory {directory}")
    _require_empty_dir(directory)
    check_schema(engine, auto_init=False)
    name = DATABASE_FILE if secret is None else ENCRYPTED_FILE
    partial = directory / f".{DATABASE_FILE}.partial"
    partial.unlink(missing_ok=True)
    # an encrypted backup's clear snapshot lives in a private temporary directory, never in the backup's
    clear_dir = Path(tempfile.mkdtemp(prefix="sigvault-backup-")) if secret is not None else None
    snapshot = partial if clear_dir is None else clear_dir / DATABASE_FILE
    try:
        if engine.dialect.name == "sqlite":
            method = "SQLite online backup API, one step (one read snapshot)"
            _sqlite_snapshot(engine, snapshot)
        else:
            method = "every table copied in one REPEATABLE READ READ ONLY transaction (one snapshot)"
            _copy_snapshot(engine, snapshot)
        summary = _describe_backup_file(snapshot)
        encryption: dict[str, Any] = {}
        if secret is not None:
            from sigvault.encryption import CIPHER, encrypted_chunks

            encryption = {
                "encryption": {
                    "cipher": CIPHER,
                    "key": "passphrase (scrypt)" if secret.kind == "passphrase" else "key file",
                    DATABASE_FILE: {"bytes": snapshot.stat().st_size, "sha256": _sha256(snapshot)},
                }
            }
            try:
                atomic_write(directory / name, encrypted_chunks(snapshot, secret))
            except OSError as exc:
                raise SigvaultError(f"{directory}: cannot write the backup ({exc.strerror or exc})") from None
        else:
            replace_file(partial, directory / name)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if clear_dir is not None:
            import shutil

            shutil.rmtree(clear_dir, ignore_errors=True)
    db_file = directory / name
    import sigvault

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sigvault": sigvault.__version__,
        "source": {"dialect": engine.dialect.name, "database": describe(engine)},
        "snapshot": method,
        **summary,
        **encryption,
        "files": {name: {"bytes": db_file.stat().st_size, "sha256": _sha256(db_file)}},
    }
    try:
        atomic_write(directory / MANIFEST_FILE, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    except OSError as exc:
        raise SigvaultError(f"{directory}: cannot write the backup ({exc.strerror or exc})") from None
    return BackupResult(directory, manifest)


def _require_empty_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: is not a directory; give an empty or new directory for the backup")
    if directory.is_dir() and any(p.name != f".{DATABASE_FILE}.partial" for p in directory.iterdir()):
        raise UsageError(f"{directory}: is not empty; give an empty or new directory for the backup")
    try:
        private_dir(directory)
    except OSError as exc:
        raise SigvaultError(f"{directory}: cannot be created ({exc.strerror or exc})") from None


def _sqlite_snapshot(engine: Engine, dest: Path) -> None:
    """SQLite online backup of the whole database in one step, then a self-contained (non-WAL) file."""
    from sigvault.db.engine import SQLITE_BUSY_TIMEOUT_MS, database_error

    source = engine.url.database
    if not source or source == ":memory:" or source.startswith("file:"):
        raise UsageError(f"database {engine.url} is not a SQLite file; nothing to back up")
    try:
        src = sqlite3.connect(Path(source), timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            private_file(dest)  # 0600 before SQLite creates it: the copy holds every reference image
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst, pages=-1)  # -1: every page in a single step, i.e. under one read snapshot
                dst.execute("PRAGMA journal_mode = DELETE")
                ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
                if ok != "ok":
                    raise SigvaultError(f"the backup copy failed SQLite's integrity check ({ok}); try again")
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise database_error(engine, exc) from exc


def _copy_snapshot(engine: Engine, dest: Path) -> None:
    """Copy every table inside one REPEATABLE READ, read-only transaction into a new SQLite file at head."""
    from sqlalchemy.exc import DBAPIError

    from sigvault.db.engine import database_error, make_engine, transaction, upgrade

    target = make_engine(config.sqlite_url(dest))
    try:
        upgrade(target)
        try:
            with (
                engine.connect().execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True) as src,
                src.begin(),
                transaction(target, write=True) as dst,
            ):
                _clear(dst)
                _copy_tables(src, dst)
                marks = {t: _high_water(src, t) for t in SEQUENCED}
                _set_sequences(dst, marks)
        except DBAPIError as exc:
            raise database_error(engine, exc) from exc
    finally:
        target.dispose()
    with sqlite3.connect(dest) as done:  # a self-contained file: no WAL beside it
        done.execute("PRAGMA journal_mode = DELETE")
    done.close()


def _backup_engine(path: Path, *, readonly: bool) -> Engine:
    """A plain engine on a backup file: none of the vault's connection settings (they would switch the
    file to WAL mode and change its bytes), read-only when restoring."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    url = f"sqlite:///file:{path.absolute()}?mode=ro&uri=true" if readonly else config.sqlite_url(path)
    return create_engine(url, poolclass=NullPool)


def _describe_backup_file(path: Path) -> dict[str, Any]:
    """What the manifest says about a backup file: read from the file itself."""
    from sigvault.db import decision_log, queries
    from sigvault.db.engine import schema_revision, transaction

    engine = _backup_engine(path, readonly=True)
    try:
        with transaction(engine) as conn:
            chain = decision_log.verify_chain(conn)
            return {
                "schema_revision": schema_revision(conn),
                "tables": _counts(conn),
                "sequences": {t: _high_water(conn, t) for t in SEQUENCED},
                "models": queries.model_counts(conn),
                "log": {
                    "entries": chain.entries,
                    "head_id": chain.head_id,
                    "head_hash": chain.head_hash,
                    "intact": chain.ok,
                    "problem": chain.problem,
                },
            }
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------- restore


def is_encrypted_backup(directory: Path) -> bool:
    """Whether ``directory`` holds an encrypted backup (its database is ``vault.db.enc``); False for anything
    else, which :func:`restore` then reports as it is."""
    return (Path(directory) / ENCRYPTED_FILE).is_file()


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a backup directory, with the database file's size and checksum verified.

    Raises:
        SigvaultError: not a complete sigvault backup, or a file is damaged.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise SigvaultError(f"{directory}: no such backup directory")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SigvaultError(
            f"{directory}: no {MANIFEST_FILE}; not a complete sigvault backup (an interrupted backup has none)"
        ) from None
    except (OSError, ValueError) as exc:
        raise SigvaultError(f"{manifest_path}: unreadable backup manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SigvaultError(f"{manifest_path}: not a sigvault backup manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise SigvaultError(
            f"{manifest_path}: backup format version {manifest.get('version')} is not supported by this sigvault "
            f"(it reads version {FORMAT_VERSION}); use the sigvault version that made it"
        )
    for name, meta in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise SigvaultError(f"{path}: missing from the backup")
        size = path.stat().st_size
        if size != meta.get("bytes") or _sha256(path) != meta.get("sha256"):
            raise SigvaultError(f"{path}: damaged (size or SHA-256 differs from {MANIFEST_FILE}); use another backup")
    listed = ENCRYPTED_FILE if "encryption" in manifest else DATABASE_FILE
    if listed not in manifest.get("files", {}):
        raise SigvaultError(f"{manifest_path}: lists no {listed}")
    return manifest


def restore(
    directory: Path,
    engine: Engine,
    home: Path,
    *,
    force: bool = False,
    secret: Secret | None = None,
    operator: str | None = None,
    reason: str | None = None,
) -> RestoreResult:
    """Load the backup in ``directory`` into the database behind ``engine``; rebuild ``home``'s index files.

    The target may be a database with no tables (its schema is created), or one at this sigvault's schema
    that holds no person, reference or decision; with ``force`` a non-empty vault is replaced. Everything
    happens in one transaction, checked (row counts, log head, hash chain) before it commits; a ``restore``
    event (the backup's directory, manifest head and time, what was replaced; ``operator``, ``reason``) is
    appended to the restored log in it. ``tables`` counts the rows restored, ``log_head`` is the head after
    that event. An encrypted backup needs ``secret`` (its passphrase or key file); it is decrypted into a private
    temporary file first, deleted afterwards (``secret`` is ignored for a backup that is not encrypted).

    Raises:
        SigvaultError: the backup is incomplete or damaged, or does not load as its manifest says.
        DecryptionError: wrong passphrase or key, or a damaged encrypted file (nothing changed).
        UsageError: the target holds a vault and ``force`` is not given; an encrypted backup and no secret.
        StaleSchemaError: the target's schema is at another revision.
    """
    import shutil
    import tempfile

    directory = Path(directory)
    manifest = read_manifest(directory)
    if "encryption" not in manifest:
        return _restore(directory, directory / DATABASE_FILE, manifest, engine, home, force, operator, reason)
    if secret is None:
        raise UsageError(
            f"{directory}: the backup is encrypted; give its passphrase (SIGVAULT_BACKUP_PASSPHRASE, "
            "--passphrase-file, or at the prompt) or its --key-file"
        )
    from sigvault.encryption import decrypt_file

    clear_dir = Path(tempfile.mkdtemp(prefix="sigvault-restore-"))
    try:
        clear = clear_dir / DATABASE_FILE
        decrypt_file(directory / ENCRYPTED_FILE, clear, secret)
        expected = manifest["encryption"].get(DATABASE_FILE, {})
        if clear.stat().st_size != expected.get("bytes") or _sha256(clear) != expected.get("sha256"):
            raise SigvaultError(
                f"{directory / ENCRYPTED_FILE}: decrypts to a database that differs from {MANIFEST_FILE}; use another backup"
            )
        return _restore(directory, clear, manifest, engine, home, force, operator, reason)
    finally:
        shutil.rmtree(clear_dir, ignore_errors=True)


def _restore(
    directory: Path,
    database: Path,
    manifest: dict[str, Any],
    engine: Engine,
    home: Path,
    force: bool,
    operator: str | None,
    reason: str | None,
) -> RestoreResult:
    """:func:`restore` from the (decrypted) database file ``database`` described by ``manifest``."""
    from sqlalchemy import inspect

    from sigvault.db.engine import HEAD_REVISION, describe, schema_revision, transaction, upgrade

    if manifest.get("schema_revision") != HEAD_REVISION:
        raise SigvaultError(
            f"{directory}: the backup is at schema revision {manifest.get('schema_revision')}, this sigvault "
            f"needs {HEAD_REVISION}; restore it with the sigvault version that made it, then upgrade"
        )
    where = describe(engine)
    with transaction(engine) as conn:
        revision = schema_revision(conn)
        has_tables = bool(inspect(conn).get_table_names())
    if revision is None and has_tables:
        raise StaleSchemaError(
            f"database {where} holds other tables and no sigvault schema; restore into an empty database"
        )
    if revision is None:
        upgrade(engine)
    elif revision != HEAD_REVISION:
        raise StaleSchemaError(
            f"database {where} is at schema revision {revision}, this sigvault needs {HEAD_REVISION}; "
            "run `sigvault db upgrade` first"
        )

    source = _backup_engine(database, readonly=True)
    try:
        with transaction(source) as src, transaction(engine, write=True) as dst:
            before = _counts(dst)
            occupied = _occupied(dst, before)
            if occupied and not force:
                raise UsageError(
                    f"database {where} already holds a vault ({occupied}); restore into an empty database, "
                    "or pass --force to replace it"
                )
            marks = {t: max(_high_water(dst, t), int(manifest["sequences"].get(t, 0))) for t in SEQUENCED}
            _drop_index_files(Path(home))  # before commit: a crash must not leave the old vault's caches
            _clear(dst)
            _copy_tables(src, dst)
            _set_sequences(dst, marks)
            _check_restored(dst, manifest, directory)
            from sigvault.db import decision_log, queries

            tables = _counts(dst)
            models = queries.model_counts(dst)
            details = {
                "directory": str(directory),
                "backup_head": {"id": manifest["log"]["head_id"], "hash": manifest["log"]["head_hash"]},
                "created_at": manifest.get("created_at"),
                "replaced": occupied or None,
            }
            decision_log.append(dst, [decision_log.event("restore", "", operator=operator, reason=reason, details=details)])
            head = decision_log.head(dst)
    finally:
        source.dispose()
    indexes = _rebuild_indexes(engine, Path(home), models)
    return RestoreResult(directory, where, tables, models, head, bool(occupied), indexes)


def _occupied(conn: Connection, counts: dict[str, int]) -> str:
    """'' when the vault holds nothing, else what it holds (for the refusal message)."""
    from sigvault.db import decision_log

    held = [f"{n} {t}" for t, n in counts.items() if n and t != "log_head"]
    last_id, _ = decision_log.head(conn)
    if last_id and not counts.get("decisions"):
        held.append(f"a decision log head at entry {last_id}")
    return ", ".join(held)


def _check_restored(conn: Connection, manifest: dict[str, Any], directory: Path) -> None:
    """Before commit: the loaded rows are what the manifest describes, and the hash chain is intact."""
    from sigvault.db import decision_log

    counts = _counts(conn)
    if counts != manifest["tables"]:
        raise SigvaultError(
            f"{directory}: restored row counts {counts} differ from the manifest's {manifest['tables']}; nothing "
            "was restored"
        )
    chain = decision_log.verify_chain(conn)
    log = manifest["log"]
    if (chain.head_id, chain.head_hash) != (log["head_id"], log["head_hash"]):
        raise SigvaultError(
            f"{directory}: restored decision log head differs from the manifest's; nothing was restored"
        )
    if log["intact"] and not chain.ok:
        raise SigvaultError(
            f"{directory}: the restored decision log is broken at entry {chain.first_bad} ({chain.problem}); "
            "nothing was restored"
        )


def _rebuild_indexes(engine: Engine, home: Path, models: dict[str, int]) -> tuple[Path, ...]:
    """Rebuild one index file per model from SQL (any left are deleted first), as ``sigvault index rebuild``
    does (:meth:`IndexSync.rebuild`; no model weights are loaded)."""
    from sigvault.db import queries
    from sigvault.db.engine import transaction
    from sigvault.index_sync import IndexSync

    _drop_index_files(home)
    indexes = IndexSync(engine, home / config.INDEX_DIRNAME)
    rebuilt = []
    for model_id in sorted(models):
        with transaction(engine) as conn:
            first = next(queries.iter_embeddings(conn, model_id), None)
        if first is None:
            continue
        dim = len(first[1]) // queries.VECTOR_DTYPE.itemsize
        rebuilt.append(indexes.rebuild(model_id, dim).path)
    return tuple(rebuilt)


def _drop_index_files(home: Path) -> None:
    """Delete the home's index files (bases and journals): caches of the vault being replaced (the same
    reference ids may come back with other vectors, which an id-based repair would not notice)."""
    from sigvault.index import file_lock, journal_path

    index_dir = home / config.INDEX_DIRNAME
    if index_dir.is_dir():
        for stale in index_dir.glob("*.faiss"):
            with file_lock(stale):
                stale.unlink(missing_ok=True)
                journal_path(stale).unlink(missing_ok=True)
        for journal in index_dir.glob("*.faiss.journal"):  # a journal left without its base
            journal.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------- the copy


def _tables() -> list[Table]:
    """Every vault table, parents before children."""
    from sigvault.db.models import Base

    return list(Base.metadata.sorted_tables)


def _counts(conn: Connection) -> dict[str, int]:
    from sqlalchemy import func, select

    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in _tables()}


def _clear(conn: Connection) -> None:
    """Delete every row, children first (the log head row too: the copy brings its own)."""
    from sqlalchemy import delete

    for table in reversed(_tables()):
        conn.execute(delete(table))


def _rows(conn: Connection, table: Table) -> Iterator[list[dict[str, Any]]]:
    from sqlalchemy import select

    stmt = select(table).order_by(*table.primary_key.columns)
    batch: list[dict[str, Any]] = []
    for row in conn.execution_options(yield_per=_BATCH).execute(stmt):
        batch.append(dict(row._mapping))
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _copy_tables(src: Connection, dst: Connection) -> None:
    from sqlalchemy import insert

    for table in _tables():
        for batch in _rows(src, table):
            dst.execute(insert(table), batch)


def _high_water(conn: Connection, table: str) -> int:
    """The largest id ``table`` has ever handed out (its sequence), at least its largest present id."""
    from sqlalchemy import text

    top = int(conn.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one())
    if conn.dialect.name == "sqlite":
        has_seq = conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")).first()
        if has_seq:
            seq = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}).scalar()
            top = max(top, int(seq or 0))
    elif conn.dialect.name == "postgresql":
        name = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
        if name:
            last, called = conn.execute(text(f"SELECT last_value, is_called FROM {name}")).one()
            top = max(top, int(last) if called else int(last) - 1)
    return top


def _set_sequences(conn: Connection, marks: dict[str, int]) -> None:
    """Make the next id of each table follow its high-water mark."""
    from sqlalchemy import text

    for table, mark in marks.items():
        if conn.dialect.name == "sqlite":
            autoinc = conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")).first()
            if not autoinc:
                continue
            conn.execute(text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
            if mark and _sqlite_autoincrement(conn, table):
                conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"), {"t": table, "s": mark})
        elif conn.dialect.name == "postgresql":
            name = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
            if name:
                conn.execute(text("SELECT setval(:s, :v, :called)"), {"s": name, "v": max(mark, 1), "called": mark > 0})


def _sqlite_autoincrement(conn: Connection, table: str) -> bool:
    from sqlalchemy import text

    sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}).scalar()
    return bool(sql and "AUTOINCREMENT" in sql.upper())


# ---------------------------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()

