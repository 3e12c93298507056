"""Alembic environment.

sigvault runs migrations programmatically (:func:`sigvault.db.engine.upgrade`), passing an open connection
in ``config.attributes["connection"]``. A developer can also run ``alembic`` from the checkout with the
top-level ``alembic.ini``: the URL then comes from ``-x url=...``, ``SIGVAULT_DATABASE_URL`` or the default
SQLite file in the sigvault home.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from sigvault.db.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    from logging.config import fileConfig

    fileConfig(config.config_file_name)  # the developer's `alembic` command line only
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from sigvault.config import Settings

    return context.get_x_argument(as_dictionary=True).get("url") or Settings.resolve().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from sigvault.db.engine import make_engine

    engine = make_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
