"""Issue 5, model changes: what test_vault.py::test_other_models_vectors_are_never_compared and
test_cli.py::test_reembed_command leave out. ``reembed`` is atomic (a stored image the new model cannot use,
or a failure half-way through the write, changes nothing: rows and index files stay byte-identical), the
old model's vectors and index file go, and an audit under another model decides nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FakeEmbedder, ImageFactory
from test_cli import vault_state

from sigvault import imaging
from sigvault.errors import ImageTooLargeError
from sigvault.vault import Vault


def _vaults(settings, images: ImageFactory) -> tuple[Vault, Vault]:  # noqa: ANN001
    old = Vault.open(settings, embedder=FakeEmbedder(seed=0))
    old.enroll("alice", images.refs(1, 3))
    old.enroll("bob", images.refs(2, 2))
    old.set_threshold("bob", 0.3)
    return old, Vault.open(settings, embedder=FakeEmbedder(seed=1))


def test_reembed_refuses_a_stored_image_the_new_model_cannot_use(
    vault: Vault,
    settings,
    images: ImageFactory,
    home: Path,
    db_url: str,  # noqa: ANN001
) -> None:
    vault.enroll("alice", images.refs(1, 2))
    before = vault_state(home, db_url)
    strict = Vault(vault.engine, home, FakeEmbedder(seed=1), imaging.ImageLimits(max_pixels=1000))
    with pytest.raises(ImageTooLargeError, match=r"^reference 1 of 'alice' \(p1-ref1\.png\): 600x200 pixels"):
        strict.reembed()
    assert vault_state(home, db_url) == before
    assert vault.verify("alice", images.write("q.png", 1, 5)).model == "fake-0"


def test_reembed_is_one_transaction(
    settings,
    images: ImageFactory,
    home: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    old, new = _vaults(settings, images)
    try:
        before = vault_state(home, db_url)
        calls = []
        original = Vault._refresh_threshold

        def fail_on_the_second_person(self, conn, person, vectors, **kw):  # noqa: ANN001, ANN202
            calls.append(person.person_id)
            if len(calls) == 2:
                raise RuntimeError("simulated crash in the middle of reembed")
            return original(self, conn, person, vectors, **kw)

        monkeypatch.setattr(Vault, "_refresh_threshold", fail_on_the_second_person)
        with pytest.raises(RuntimeError, match="simulated crash"):
            new.reembed()
        assert calls == ["alice", "bob"]
        assert vault_state(home, db_url) == before  # alice's new vectors and threshold were rolled back
        monkeypatch.undo()

        result = new.reembed()
        assert (result.n_references, result.previous_models, result.overrides_cleared) == (5, {"fake-0": 5}, ("bob",))
        from sigvault.db import queries
        from sigvault.db.engine import transaction

        with transaction(new.engine) as conn:
            assert queries.model_counts(conn) == {"fake-1": 5}  # every old vector is gone
            thresholds = [queries.get_threshold(conn, p.pk) for p in queries.all_persons(conn)]
        assert {t.model_id for t in thresholds if t} == {"fake-1"}
        assert sorted(p.name for p in (home / "index").glob("*.faiss")) == ["fake-1.faiss"]
        assert new.check_index().consistent
    finally:
        old.close()
        new.close()


def test_audit_under_another_model_decides_nothing(
    settings,
    images: ImageFactory,
    home: Path,
    db_url: str,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from sigvault.audit import run_audit
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    old, new = _vaults(settings, images)
    try:
        manifest = tmp_path / "m.csv"
        q = images.write("q.png", 1, 6)
        manifest.write_text(f"item_id,person,image\nc1,alice,{q}\nc2,bob,{q}\n")
        before = vault_state(home, db_url)
        summary = run_audit(new, manifest, tmp_path / "out")
        assert (summary.counts["error"], summary.error_kinds) == (2, {"model_mismatch": 2})
        records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
        assert records[0]["error"] == (
            "the references of 'alice' were made by model fake-0, but the loaded model is fake-1; run `sigvault reembed`"
        )
        assert vault_state(home, db_url) == before
        assert new.compare(q, q).model == "fake-1"  # compare needs no stored vector: it works
    finally:
        old.close()
        new.close()
