"""Storage: migrations equal the models, stale schemas are refused, the decision log is tamper-evident."""

from __future__ import annotations

import getpass
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from sigvault.config import Settings
from sigvault.db import decision_log, queries
from sigvault.db.engine import (
    HEAD_REVISION,
    alembic_config,
    check_schema,
    make_engine,
    schema_revision,
    transaction,
    upgrade,
)
from sigvault.db.models import GENESIS_HASH, Base
from sigvault.errors import StaleSchemaError, UsageError


@pytest.fixture
def engine(db_url: str):  # noqa: ANN201
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def entry(n: int, person: str = "alice") -> decision_log.NewEntry:
    return decision_log.NewEntry(
        kind="verify",
        person_id=person,
        image_sha256=f"{n:064x}",
        score=0.5 + n / 100,
        threshold=0.7,
        threshold_method="prior (1 reference)",
        decision="reject",
        probability=0.25,
        model_id="fake-0",
        references_used=[{"reference_id": 1, "sha256": "ab" * 32, "similarity": 0.5 + n / 100}],
    )


# -------------------------------------------------------------------------------------------- schema


def test_upgrade_empty_database_to_head_equals_models(engine) -> None:  # noqa: ANN001
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert upgrade(engine) == (None, HEAD_REVISION)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        head = conn.execute(text("SELECT last_id, last_hash FROM log_head")).one()
    assert diff == []
    assert tuple(head) == (0, GENESIS_HASH)
    assert upgrade(engine) == (HEAD_REVISION, HEAD_REVISION)  # idempotent


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_older_revision_is_refused_with_the_upgrade_hint(engine) -> None:  # noqa: ANN001
    upgrade(engine)
    with transaction(engine, write=True) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(StaleSchemaError) as err:
        check_schema(engine, auto_init=True)
    assert "is at schema revision 0000, this sigvault needs 0003; run `sigvault db upgrade`" in str(err.value)
    with engine.connect() as conn:
        assert schema_revision(conn) == "0000"  # never changed behind the user's back


def test_empty_database_is_initialised_only_when_allowed(engine) -> None:  # noqa: ANN001
    with pytest.raises(StaleSchemaError, match=r"has no sigvault schema yet; run `sigvault db upgrade`$"):
        check_schema(engine, auto_init=False)
    check_schema(engine, auto_init=True)
    with engine.connect() as conn:
        assert schema_revision(conn) == HEAD_REVISION


def test_foreign_tables_without_version_are_refused(engine) -> None:  # noqa: ANN001
    with transaction(engine, write=True) as conn:
        conn.execute(text("CREATE TABLE payroll (id INTEGER PRIMARY KEY)"))
    with pytest.raises(StaleSchemaError, match="holds other tables and no sigvault schema"):
        check_schema(engine, auto_init=True)


def test_malformed_url_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^database URL 'nonsense://' is not usable"):
        make_engine("nonsense://")


def test_unreachable_server_is_one_line_error(tmp_path: Path) -> None:
    from sigvault.errors import SigvaultError

    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(SigvaultError) as err:
        check_schema(engine, auto_init=False)
    message = str(err.value)
    assert message.startswith("database postgresql+psycopg://postgres@127.0.0.1:1/none failed: ")
    assert "\n" not in message


def test_sqlite_is_set_up_for_concurrent_processes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/deep/dir/v.db")  # the directory is created
    with engine.connect() as conn:
        pragmas = {
            p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "busy_timeout", "foreign_keys", "secure_delete", "synchronous")
        }
    engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 30000,
        "foreign_keys": 1,
        "secure_delete": 1,
        "synchronous": 2,
    }


def test_settings_resolution_order(tmp_path: Path) -> None:
    env = {"SIGVAULT_HOME": str(tmp_path / "env-home"), "SIGVAULT_MAX_IMAGE_PIXELS": "1_000"}
    s = Settings.resolve(env=env)
    assert s == Settings(
        home=tmp_path / "env-home",
        database_url=f"sqlite:///{tmp_path}/env-home/sigvault.db",
        model=None,
        max_image_pixels=1000,
        max_image_bytes=None,
        operator=getpass.getuser(),  # nobody named: the OS user
        reason=None,
    )
    flagged = Settings.resolve(
        home=tmp_path / "flag",
        database_url="postgresql+psycopg://x/y",
        model="m.onnx",
        reason=" ticket\n 4711 ",
        env=env,
    )
    assert (flagged.home, flagged.database_url, flagged.model, flagged.reason) == (
        tmp_path / "flag",
        "postgresql+psycopg://x/y",
        Path("m.onnx"),
        "ticket 4711",
    )
    assert Settings.resolve(env={**env, "SIGVAULT_OPERATOR": "ops-7"}).operator == "ops-7"
    assert Settings.resolve(operator="clerk-2", env={**env, "SIGVAULT_OPERATOR": "ops-7"}).operator == "clerk-2"
    with pytest.raises(UsageError, match=r"^the reason is 1001 characters long; the limit is 1000$"):
        Settings.resolve(reason="x" * 1001, env=env)
    from sigvault.imaging import ImageLimits

    assert s.image_limits() == ImageLimits(max_pixels=1000, max_bytes=ImageLimits().max_bytes)
    with pytest.raises(UsageError, match=r"^SIGVAULT_MAX_IMAGE_BYTES='lots' is not a positive whole number"):
        Settings.resolve(env={**env, "SIGVAULT_MAX_IMAGE_BYTES": "lots"})


# ------------------------------------------------------------------------------------------- vectors


def test_vectors_are_float32_little_endian() -> None:
    blob = queries.encode_vector(np.array([1.0, -2.5]))
    assert blob == b"\x00\x00\x80?\x00\x00\x20\xc0"
    back = queries.decode_vectors([blob, blob], dim=2)
    assert back.dtype == np.float32 and back.tolist() == [[1.0, -2.5], [1.0, -2.5]]
    with pytest.raises(ValueError, match="stored vectors have 2 dimensions, expected 3"):
        queries.decode_vectors([blob], dim=3)


def test_reference_ids_are_never_reused(engine) -> None:  # noqa: ANN001
    upgrade(engine)
    blob = queries.encode_vector(np.ones(2))
    with transaction(engine, write=True) as conn:
        person = queries.create_person(conn, "alice")
        first = queries.insert_reference(
            conn, person_pk=person.pk, sha256="a" * 64, source_name=None, model_id="m", embedding=blob, image=b"x"
        )
    with transaction(engine, write=True) as conn:
        queries.delete_person(conn, person.pk)
        person = queries.create_person(conn, "bob")
        second = queries.insert_reference(
            conn, person_pk=person.pk, sha256="a" * 64, source_name=None, model_id="m", embedding=blob, image=b"x"
        )
    assert (first, second) == (1, 2)


# -------------------------------------------------------------------------------------- decision log


def test_log_chain_links_entries(engine) -> None:  # noqa: ANN001
    upgrade(engine)
    with transaction(engine, write=True) as conn:
        stored = decision_log.append(conn, [entry(1), entry(2)])
    with transaction(engine, write=True) as conn:
        stored += decision_log.append(conn, [entry(3)])
    assert [e.id for e in stored] == [1, 2, 3]
    assert stored[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in stored[1:]] == [e.hash for e in stored[:-1]]
    assert stored[1].hash == decision_log.entry_hash(stored[1].content())
    with engine.connect() as conn:
        report = decision_log.verify_chain(conn)
        read_back = list(decision_log.iter_entries(conn))
    assert read_back == stored  # exact round trip of floats, JSON and timestamps
    assert report == decision_log.ChainReport(True, 3, 3, stored[-1].hash)


def test_upgrade_from_0002_keeps_the_chain_of_entries_written_before(engine) -> None:  # noqa: ANN001
    """Entries written at revision 0002 (no operator, no reason) keep their hashes after the upgrade, and
    events appended afterwards extend the same chain."""
    from alembic import command

    cfg = alembic_config()
    with transaction(engine, write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        old = decision_log.Entry(
            id=1, at=decision_log.utcnow(), kind="verify", person_id="alice", image_sha256="ab" * 32, score=0.5,
            threshold=0.7, threshold_method="prior", decision="reject", probability=0.25, model_id="fake-0",
            references_used=[], details=None, operator=None, reason=None, prev_hash=GENESIS_HASH, hash="",
        )  # fmt: skip
        stored_hash = decision_log.entry_hash(old.content())
        row = {k: v for k, v in old.__dict__.items() if k not in ("operator", "reason")}
        conn.execute(decision_log.Decision.insert(), {**row, "hash": stored_hash})
        conn.execute(text("UPDATE log_head SET last_id = 1, last_hash = :h"), {"h": stored_hash})
    assert upgrade(engine) == ("0002", HEAD_REVISION)
    with transaction(engine, write=True) as conn:
        event = decision_log.event("person-remove", "alice", operator="ops-7", reason="ticket 4711")
        (stored,) = decision_log.append(conn, [event])
    with engine.connect() as conn:
        report = decision_log.verify_chain(conn)
        first = decision_log.get_entry(conn, 1)
    assert report == decision_log.ChainReport(True, 2, 2, stored.hash)
    assert first is not None and first.hash == stored_hash and first.operator is None
    assert (stored.id, stored.prev_hash, stored.score, stored.operator, stored.reason) == (
        2, stored_hash, None, "ops-7", "ticket 4711",
    )  # fmt: skip


def test_events_and_operators_are_in_the_chain(engine) -> None:  # noqa: ANN001
    upgrade(engine)
    with transaction(engine, write=True) as conn:
        decision_log.append(
            conn,
            [
                decision_log.NewEntry(**{**entry(1).__dict__, "operator": "clerk-2"}),
                decision_log.event("threshold-set", "alice", operator="ops-7", threshold=0.4, details={"was": 0.3}),
            ],
        )
    with engine.connect() as conn:
        kinds = [(e.kind, e.operator, e.threshold, e.score) for e in decision_log.iter_entries(conn)]
        assert decision_log.verify_chain(conn).ok
    assert kinds == [("verify", "clerk-2", 0.7, 0.51), ("threshold-set", "ops-7", 0.4, None)]
    for tamper in (
        "UPDATE decisions SET operator = 'someone-else' WHERE id = 1",
        "UPDATE decisions SET operator = NULL",
    ):
        with transaction(engine, write=True) as conn:
            saved = conn.execute(text("SELECT id, operator FROM decisions ORDER BY id")).all()
            conn.execute(text(tamper))
        with engine.connect() as conn:
            report = decision_log.verify_chain(conn)
        assert (report.ok, report.first_bad) == (False, 1)
        with transaction(engine, write=True) as conn:
            for row_id, operator in saved:
                conn.execute(text("UPDATE decisions SET operator = :o WHERE id = :i"), {"o": operator, "i": row_id})


def test_a_decision_without_numbers_or_an_unknown_kind_is_a_bug(engine) -> None:  # noqa: ANN001
    upgrade(engine)
    with transaction(engine, write=True) as conn:
        with pytest.raises(ValueError, match="unknown log entry kind 'delete'"):
            decision_log.append(conn, [decision_log.event("delete", "alice", operator=None)])
        with pytest.raises(ValueError, match="missing score"):
            decision_log.append(conn, [decision_log.NewEntry(**{**entry(1).__dict__, "score": None})])


@pytest.mark.parametrize(
    ("tamper", "first_bad", "problem"),
    [
        (
            "UPDATE decisions SET score = 0.99 WHERE id = 2",
            2,
            "entry 2 was altered after it was written (its hash does not match)",
        ),
        (
            "UPDATE decisions SET decision = 'accept' WHERE id = 3",
            3,
            "entry 3 was altered after it was written (its hash does not match)",
        ),
        ("DELETE FROM decisions WHERE id = 2", 2, "entry 2 is missing (next entry found is 3): deleted"),
        (
            "DELETE FROM decisions WHERE id = 4",
            4,
            "the log ends at entry 3 but its head records entry 4: entries removed from the end",
        ),
        (
            "UPDATE decisions SET id = 100 WHERE id = 2; UPDATE decisions SET id = 2 WHERE id = 3; "
            "UPDATE decisions SET id = 3 WHERE id = 100",
            2,
            "entry 2 does not follow entry 1: entries deleted, reordered or edited",
        ),
    ],
)
def test_log_verify_names_the_first_bad_entry(engine, tamper: str, first_bad: int, problem: str) -> None:  # noqa: ANN001
    upgrade(engine)
    with transaction(engine, write=True) as conn:
        decision_log.append(conn, [entry(n) for n in range(1, 5)])
    with transaction(engine, write=True) as conn:
        for statement in tamper.split("; "):
            conn.execute(text(statement))
    with engine.connect() as conn:
        report = decision_log.verify_chain(conn)
    assert (report.ok, report.first_bad, report.problem) == (False, first_bad, problem)


def test_concurrent_appenders_keep_one_chain(engine) -> None:  # noqa: ANN001
    upgrade(engine)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for n in range(10):
                with transaction(engine, write=True) as conn:
                    decision_log.append(conn, [entry(100 * k + n, person=f"p{k}")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        report = decision_log.verify_chain(conn)
    assert (report.ok, report.entries) == (True, 40)
