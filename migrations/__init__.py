"""Alembic migrations of the sigvault schema, shipped inside the wheel as ``sigvault._migrations``."""
