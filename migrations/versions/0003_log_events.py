"""The decision log also records events: state changes and reviews, with who asked (operator) and why (reason)

Events (sigvault.db.decision_log.EVENT_KINDS) have no image, score, threshold method, probability or model,
so those columns become nullable; ``operator`` and ``reason`` are new and nullable (entries written before
this revision have neither, and keep their hashes: the hash covers the two only when they are set).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (column, type) made nullable; the types are those of 0001
_NULLABLE = (
    ("image_sha256", sa.String(64)),
    ("score", sa.Float()),
    ("threshold", sa.Float()),
    ("threshold_method", sa.String(200)),
    ("decision", sa.String(16)),
    ("probability", sa.Float()),
    ("model_id", sa.String(100)),
)


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a column, so Alembic copies the table; PostgreSQL alters in place
    with op.batch_alter_table("decisions") as batch:
        for name, type_ in _NULLABLE:
            batch.alter_column(name, existing_type=type_, nullable=True)
        batch.add_column(sa.Column("operator", sa.String(200), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(1000), nullable=True))


def downgrade() -> None:
    # only possible while the log holds no event (their null columns would violate NOT NULL again)
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("reason")
        batch.drop_column("operator")
        for name, type_ in _NULLABLE:
            batch.alter_column(name, existing_type=type_, nullable=False)
