"""Engines, transactions and the schema revision check, on SQLite and PostgreSQL alike.

SQLite is set up for several processes at once: WAL journal, a 30 s busy timeout, and write transactions
opened with ``BEGIN IMMEDIATE`` (a deferred transaction that reads then writes can fail at once with
"database is locked" whatever the timeout; an immediate one waits its turn). ``secure_delete`` overwrites
deleted content, ``synchronous=FULL`` makes a committed decision survive a power cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sigvault.errors import SigvaultError, StaleSchemaError, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

HEAD_REVISION = "0003"  # the newest revision in migrations/versions (a test keeps them equal)
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "sigvault_write"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's directory is created if needed.

    Raises:
        UsageError: the URL is malformed or names a driver that is not installed.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
                _private_sqlite_file(Path(parsed.database).expanduser())
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        else:
            engine = create_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UsageError(f"database URL {url!r} is not usable ({exc}); fix SIGVAULT_DATABASE_URL") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file (and its directory) mode 0600 (0700) before SQLite opens it, whatever the umask:
    it holds the reference images. SQLite gives its -wal, -shm and -journal files the database file's mode;
    an existing database, or such a file left by an older sigvault, that others can read is tightened to 0600
    (:func:`sigvault.durable.tighten`)."""
    from sigvault.durable import private_file, tighten

    try:
        private_file(path)
    except OSError as exc:
        raise SigvaultError(
            f"{path}: cannot create the database ({exc.strerror or exc}); set SIGVAULT_HOME to a writable directory"
        ) from None
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(path.with_name(path.name + suffix))


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # pysqlite must not BEGIN on its own: _sqlite_on_begin does
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA secure_delete = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def describe(engine: Engine) -> str:
    """The engine's URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def transaction(engine: Engine, *, write: bool = False) -> Iterator[Connection]:
    """One transaction, committed at the end of the block, rolled back on any exception.

    ``write=True`` takes SQLite's write lock up front (``BEGIN IMMEDIATE``); on PostgreSQL it changes
    nothing (rows are locked with ``SELECT ... FOR UPDATE`` where it matters). Connection-level database
    failures (server down, lock timeout, disk full) become :class:`SigvaultError`.
    """
    from sqlalchemy.exc import DBAPIError, OperationalError

    target = engine.execution_options(**{_WRITE: True}) if write else engine
    try:
        with target.begin() as conn:
            yield conn
    except OperationalError as exc:
        raise database_error(engine, exc) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise database_error(engine, exc) from exc
        raise


def database_error(engine: Engine, exc: BaseException) -> SigvaultError:
    """A one-line error for a failure of the database itself."""
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split()) or type(orig).__name__
    return SigvaultError(
        f"database {describe(engine)} failed: {detail[:300]}; check SIGVAULT_DATABASE_URL and the server"
    )


# --------------------------------------------------------------------------------------- schema revision


def schema_revision(conn: Connection) -> str | None:
    """The Alembic revision the database is at, or None when it has never been upgraded."""
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def check_schema(engine: Engine, *, auto_init: bool) -> None:
    """Refuse a database that is not at :data:`HEAD_REVISION`.

    ``auto_init=True`` creates the schema in a database that has no tables at all (a fresh default
    SQLite home: what a user expects from a first ``sigvault enroll``). A database at another revision is
    never changed here.

    Raises:
        StaleSchemaError: the schema is missing or at another revision ("run `sigvault db upgrade`").
        SigvaultError: the database cannot be reached.
    """
    from sqlalchemy import inspect

    with transaction(engine) as conn:
        revision = schema_revision(conn)
        empty = revision is None and not inspect(conn).get_table_names()
    if revision == HEAD_REVISION:
        return
    where = describe(engine)
    if revision is None and empty:
        if auto_init:
            upgrade(engine)
            return
        raise StaleSchemaError(f"database {where} has no sigvault schema yet; run `sigvault db upgrade`")
    if revision is None:
        raise StaleSchemaError(
            f"database {where} holds other tables and no sigvault schema; point SIGVAULT_DATABASE_URL at "
            "a sigvault database or an empty one, then run `sigvault db upgrade`"
        )
    raise StaleSchemaError(
        f"database {where} is at schema revision {revision}, this sigvault needs {HEAD_REVISION}; "
        "run `sigvault db upgrade` (or install the newer sigvault that wrote it)"
    )


def migrations_location() -> Path:
    """The Alembic script directory: package ``sigvault._migrations`` when installed, else the checkout's."""
    from importlib.resources import files

    try:
        return Path(str(files("sigvault._migrations")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config() -> Any:
    """An in-memory Alembic ``Config`` pointing at the shipped migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_location()).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Upgrade the schema to head in one transaction; returns (revision before, revision after)."""
    from alembic import command

    cfg = alembic_config()
    with transaction(engine, write=True) as conn:
        before = schema_revision(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        after = schema_revision(conn)
    return before, after


def reclaim_space(engine: Engine, tables: tuple[str, ...]) -> None:
    """Physically rewrite storage so deleted rows' bytes are gone (after ``people remove``).

    SQLite: ``VACUUM`` (``secure_delete`` has zeroed freed pages already) then truncate the WAL.
    PostgreSQL: ``VACUUM FULL`` of ``tables`` (rewrites them and their TOAST; briefly locks them).

    Raises:
        SigvaultError: the database refused (e.g. still locked by another process after the timeout).
    """
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    try:
        if engine.dialect.name == "sqlite":
            raw = engine.raw_connection()  # VACUUM must run outside a transaction: bypass the BEGIN hook
            try:
                driver = raw.driver_connection
                assert driver is not None
                driver.execute("VACUUM")
                driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
        elif engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM FULL " + ", ".join(tables))
    except (sqlite3.Error, DBAPIError) as exc:
        raise database_error(engine, exc) from exc
