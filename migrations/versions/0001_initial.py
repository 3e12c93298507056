"""initial schema: persons, references and their images, thresholds, the hash-chained decision log

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)
GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.String(200), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persons")),
        sa.UniqueConstraint("person_id", name=op.f("uq_persons_person_id")),
    )
    op.create_table(
        "refs",
        sa.Column("id", ID64, autoincrement=True, nullable=False),
        sa.Column("person_pk", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source_name", sa.String(1000), nullable=True),
        sa.Column("model_id", sa.String(100), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["person_pk"], ["persons.id"], name=op.f("fk_refs_person_pk_persons"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refs")),
        sa.UniqueConstraint("person_pk", "sha256", name=op.f("uq_refs_person_pk_sha256")),
        sqlite_autoincrement=True,  # ids are FAISS ids: never reuse one
    )
    op.create_index(op.f("ix_refs_model_id"), "refs", ["model_id"])
    op.create_index(op.f("ix_refs_person_pk"), "refs", ["person_pk"])
    op.create_table(
        "ref_images",
        sa.Column("ref_id", ID64, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["ref_id"], ["refs.id"], name=op.f("fk_ref_images_ref_id_refs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ref_id", name=op.f("pk_ref_images")),
    )
    op.create_table(
        "thresholds",
        sa.Column("person_pk", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("n_references", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("model_id", sa.String(100), nullable=False),
        sa.Column("is_override", sa.Boolean(), nullable=False),
        sa.Column("set_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["person_pk"], ["persons.id"], name=op.f("fk_thresholds_person_pk_persons"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("person_pk", name=op.f("pk_thresholds")),
    )
    op.create_table(
        "decisions",
        sa.Column("id", ID64, autoincrement=False, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("person_id", sa.String(200), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("threshold_method", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("model_id", sa.String(100), nullable=False),
        sa.Column("references_used", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("hash", name=op.f("uq_decisions_hash")),
    )
    op.create_index(op.f("ix_decisions_person_id"), "decisions", ["person_id"])
    log_head = op.create_table(
        "log_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", ID64, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_head")),
    )
    op.bulk_insert(log_head, [{"id": 1, "last_id": 0, "last_hash": GENESIS_HASH}])


def downgrade() -> None:
    op.drop_table("log_head")
    op.drop_index(op.f("ix_decisions_person_id"), table_name="decisions")
    op.drop_table("decisions")
    op.drop_table("thresholds")
    op.drop_table("ref_images")
    op.drop_index(op.f("ix_refs_person_pk"), table_name="refs")
    op.drop_index(op.f("ix_refs_model_id"), table_name="refs")
    op.drop_table("refs")
    op.drop_table("persons")
