"""Storage: SQLAlchemy models, engines and queries. No business rules here (those are the vault's).

- :mod:`sigvault.db.models`: the schema (changed only through the Alembic revisions in ``migrations/``);
- :mod:`sigvault.db.engine`: engines, transactions, the schema revision check and ``upgrade``;
- :mod:`sigvault.db.queries`: queries over persons, references and thresholds;
- :mod:`sigvault.db.decision_log`: the hash-chained decision log.
"""
