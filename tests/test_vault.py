"""The vault facade over SQLite and PostgreSQL, with the fake embedder."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, ImageFactory
from sqlalchemy import text

from sigvault import imaging, scoring
from sigvault.errors import (
    DuplicateReferenceError,
    ImageError,
    InvalidPersonIdError,
    ModelMismatchError,
    NoInkError,
    PersonNotFoundError,
    SuspectReferenceError,
    UsageError,
)
from sigvault.vault import Vault, VerifyItem, normalize_person_id


def vectors(embedder: FakeEmbedder, paths: list[Path]) -> np.ndarray:
    """What the vault should compute, from the public pieces."""
    return embedder.embed(np.stack([imaging.load_canvas(p, embedder.spec) for p in paths]))


def count(vault: Vault, table: str) -> int:
    with vault.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def verifications(vault: Vault) -> int:
    """Decisions in the log (verify and audit entries), events left out."""
    with vault.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM decisions WHERE kind IN ('verify', 'audit')")).scalar_one())


def log_kinds(vault: Vault) -> list[tuple[str, str]]:
    return [(e.kind, e.person_id) for e in vault.log_entries()]


# -------------------------------------------------------------------------------------------- enroll


def test_enroll_stores_references_and_threshold(vault: Vault, images: ImageFactory, embedder: FakeEmbedder) -> None:
    refs = images.refs(1, 4)
    result = vault.enroll("alice", refs)
    expected = scoring.person_threshold(vectors(embedder, refs), embedder.scoring)
    assert (result.person, result.created, result.n_references, result.warnings) == ("alice", True, 4, ())
    assert [r.reference_id for r in result.added] == [1, 2, 3, 4]
    assert [r.sha256 for r in result.added] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in refs]
    assert result.threshold == pytest.approx(expected.value, abs=1e-6)
    assert result.threshold_method == "leave-one-out over 4 references, shrunk toward the global prior (weight 4)"
    detail = vault.person("alice")
    assert [(r.reference_id, r.source, r.model) for r in detail.references] == [
        (1, "p1-ref1.png", "fake-0"),
        (2, "p1-ref2.png", "fake-0"),
        (3, "p1-ref3.png", "fake-0"),
        (4, "p1-ref4.png", "fake-0"),
    ]
    with vault.engine.connect() as conn:
        stored = conn.execute(text("SELECT data FROM ref_images ORDER BY ref_id")).scalars().all()
    assert [bytes(b) for b in stored] == [p.read_bytes() for p in refs]  # the exact bytes, for reembed

    more = vault.enroll("alice", [images.write("late.png", 1, 9)])
    assert (more.created, more.n_references) == (False, 5)


def test_enroll_is_all_or_nothing(vault: Vault, images: ImageFactory, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (300, 100), 255).save(blank)
    with pytest.raises(NoInkError, match=rf"^{blank}: no signature ink found"):
        vault.enroll("alice", [*images.refs(1, 2), blank])
    assert (count(vault, "persons"), count(vault, "refs"), count(vault, "ref_images")) == (0, 0, 0)
    assert not vault.index_path.exists()


def test_duplicate_images_are_refused(vault: Vault, images: ImageFactory, tmp_path: Path) -> None:
    refs = images.refs(1, 2)
    vault.enroll("alice", refs)
    copy = tmp_path / "copy.png"
    copy.write_bytes(refs[0].read_bytes())
    with pytest.raises(DuplicateReferenceError) as err:
        vault.enroll("alice", [images.write("new.png", 1, 5), copy])
    assert str(err.value) == f"{copy}: already enrolled for 'alice' (reference 1); nothing was enrolled"
    assert count(vault, "refs") == 2
    with pytest.raises(DuplicateReferenceError, match=rf"^{copy}: same image as {refs[0]}; give each reference once$"):
        vault.enroll("bob", [refs[0], copy])
    # one scan is one person's reference: the same image is refused for another person, nothing is written
    with pytest.raises(DuplicateReferenceError) as err:
        vault.enroll("bob", [images.write("bob.png", 2, 1), copy])
    assert str(err.value) == (
        f"{copy}: the same image is already enrolled for 'alice' (reference 1); one scan is one person's reference "
        "only; nothing was enrolled"
    )
    assert (count(vault, "refs"), count(vault, "persons")) == (2, 1)
    assert log_kinds(vault) == [("enroll", "alice")]


def test_another_persons_reference_is_refused_unless_forced(vault: Vault, images: ImageFactory) -> None:
    vault.enroll("alice", images.refs(1, 3))
    before = vault.person("alice")
    odd = images.write("odd.png", 2, 1)  # another writer's signature
    with pytest.raises(SuspectReferenceError) as err:
        vault.enroll("alice", [images.write("good.png", 1, 6), odd])
    assert re.fullmatch(
        rf"{re.escape(str(odd))}: unlike 'alice''s other references \(score -?\d\.\d{{3}}, their threshold "
        r"\d\.\d{3}\): another person's signature, an imitation, a blank or a stamp\? Nothing was enrolled; enrol it "
        r"anyway with --force \(and --reason\)",
        str(err.value),
    )
    assert vault.person("alice") == before and count(vault, "refs") == 3
    assert log_kinds(vault) == [("enroll", "alice")]

    vault.reason = "specimen card re-signed in branch"
    result = vault.enroll("alice", [odd], force=True)
    assert (result.n_references, result.forced) == (4, (4,))
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(f"{odd}: unlike 'alice''s other references (score ")
    assert result.warnings[0].endswith("); enrolled because forced")
    event = list(vault.log_entries())[-1]
    assert (event.kind, event.person_id, event.reason) == ("enroll", "alice", "specimen card re-signed in branch")
    assert [(f["reference_id"], f["source"]) for f in event.details["forced"]] == [(4, "odd.png")]
    shown = vault.person("alice").references[-1]
    assert shown.reference_id == 4 and shown.forced is not None
    assert shown.forced.startswith("refused by the enrolment gate (score ")
    assert shown.forced.endswith(f"enrolled with --force by {vault.operator or 'an unnamed operator'} (log entry "
                                 f"{event.id}) (specimen card re-signed in branch)")


def test_person_ids_are_validated_and_nfc_normalised(vault: Vault, images: ImageFactory) -> None:
    vault.enroll("Ame\u0301lie", images.refs(1, 1))  # decomposed e + combining acute
    assert [p.person_id for p in vault.people()] == ["Am\u00e9lie"]
    assert vault.verify("Am\u00e9lie", images.write("q.png", 1, 3)).person == "Am\u00e9lie"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "person id '' is empty; give a name or customer number"),
        ("   ", "person id '   ' is empty; give a name or customer number"),
        (" alice", "person id ' alice' starts or ends with spaces; remove them"),
        ("a/b", "person id 'a/b' contains a path separator '/'; remove it"),
        ("a\\b", "person id 'a\\\\b' contains a path separator '\\\\'; remove it"),
        ("al\x07ice", "person id 'al\\x07ice' contains the control character U+0007; remove it"),
        ("al\nice", "person id 'al\\nice' contains the control character U+000A; remove it"),
        ("x\udcff", "person id 'x\\udcff' contains the control character U+DCFF; remove it"),
        ("a" * 201, f"person id '{'a' * 40}...' is 201 characters long, the limit is 200; use a shorter id"),
    ],
)
def test_malformed_person_ids(raw: str, message: str) -> None:
    with pytest.raises(InvalidPersonIdError) as err:
        normalize_person_id(raw)
    assert str(err.value) == message
    assert err.value.exit_code == 2


def test_valid_person_ids() -> None:
    assert normalize_person_id("a" * 200) == "a" * 200
    assert normalize_person_id("Müller, Hans (ACC-0042)") == "Müller, Hans (ACC-0042)"


# -------------------------------------------------------------------------------------------- verify


def test_verify_scores_against_the_persons_references_only(
    vault: Vault, images: ImageFactory, embedder: FakeEmbedder
) -> None:
    refs = images.refs(1, 3)
    vault.enroll("alice", refs)
    vault.enroll("bob", images.refs(2, 3))
    q = images.write("q.png", 1, 8)
    result = vault.verify("alice", q)

    ref_vecs, q_vec = vectors(embedder, refs), vectors(embedder, [q])[0]
    sims = scoring.similarities(q_vec, ref_vecs)
    score = scoring.fuse(sims, embedder.scoring)
    threshold = scoring.person_threshold(ref_vecs, embedder.scoring).value
    assert result.score == pytest.approx(score, abs=1e-6)
    assert result.threshold == pytest.approx(threshold, abs=1e-6)
    assert result.decision == scoring.decide(score, threshold, embedder.scoring) == "accept"
    assert result.probability == pytest.approx(scoring.probability(score, threshold, embedder.scoring), abs=1e-6)
    assert [r.reference_id for r in result.references] == [1, 2, 3]  # bob's 4, 5, 6 never compared
    assert [r.similarity for r in result.references] == pytest.approx(sims.tolist(), abs=1e-6)
    assert result.best_reference.reference_id == 1 + int(np.argmax(sims))
    assert (result.model, result.decision_id, result.source) == ("fake-0", 3, str(q))  # after the two enrolments

    rejected = vault.verify("bob", q)
    assert (rejected.decision, rejected.decision_id) == ("reject", 4)

    entries = list(vault.log_entries())
    assert [(e.id, e.kind, e.person_id, e.decision) for e in entries] == [
        (1, "enroll", "alice", None),
        (2, "enroll", "bob", None),
        (3, "verify", "alice", "accept"),
        (4, "verify", "bob", "reject"),
    ]
    assert entries[2].score == result.score and entries[2].image_sha256 == result.image_sha256
    assert entries[2].references_used == [r.__dict__ for r in result.references]
    assert vault.log_verify().ok


def test_one_reference_uses_the_prior_threshold(vault: Vault, images: ImageFactory, embedder: FakeEmbedder) -> None:
    vault.enroll("alice", images.refs(1, 1))
    result = vault.verify("alice", images.write("q.png", 1, 4))
    cfg = embedder.scoring
    assert result.threshold == pytest.approx(cfg.prior_mean - cfg.k * cfg.prior_std)
    assert result.threshold_method == "prior (1 reference)"


def test_verify_errors(vault: Vault, images: ImageFactory, tmp_path: Path) -> None:
    vault.enroll("alice", images.refs(1, 2))
    with pytest.raises(PersonNotFoundError, match=r"^person 'zoe' is not enrolled; see `sigvault people list`$"):
        vault.verify("zoe", images.write("q.png", 1, 4))
    with pytest.raises(ImageError, match=rf"^{tmp_path}/nope.png: no such file; check the path$"):
        vault.verify("alice", tmp_path / "nope.png")
    assert verifications(vault) == 0 and log_kinds(vault) == [("enroll", "alice")]


def test_verify_many_reports_each_item(vault: Vault, images: ImageFactory, tmp_path: Path) -> None:
    vault.enroll("alice", images.refs(1, 3))
    vault.enroll("bob", images.refs(2, 3))
    items = [
        VerifyItem("alice", images.write("a.png", 1, 6), details={"item": "row-1"}),
        VerifyItem("bob", tmp_path / "missing.png", details={"item": "row-2"}),
        VerifyItem("zoe", images.write("z.png", 3, 1), details={"item": "row-3"}),
        VerifyItem("bob", images.write("b.png", 2, 6), details={"item": "row-4"}),
        VerifyItem("alice", images.write("x.png", 2, 7), details={"item": "row-5"}),
    ]
    out = vault.verify_many(items, batch_size=2)
    kinds = [type(r).__name__ for r in out]
    assert kinds == ["Verification", "ImageError", "PersonNotFoundError", "Verification", "Verification"]
    assert [r.decision for r in out if not isinstance(r, Exception)] == ["accept", "accept", "reject"]
    entries = list(vault.log_entries())
    assert [(e.kind, e.person_id) for e in entries[:2]] == [("enroll", "alice"), ("enroll", "bob")]
    assert [(e.kind, e.details) for e in entries[2:]] == [
        ("audit", {"item": "row-1"}),
        ("audit", {"item": "row-4"}),
        ("audit", {"item": "row-5"}),
    ]
    assert vault.log_verify().ok


# ----------------------------------------------------------------------------- compare and identify


def test_compare(vault: Vault, images: ImageFactory, embedder: FakeEmbedder) -> None:
    a, b, c = images.write("a.png", 1, 1), images.write("b.png", 1, 2), images.write("c.png", 2, 1)
    same = vault.compare(a, b)
    va, vb = vectors(embedder, [a, b])
    assert same.similarity == pytest.approx(float(va @ vb), abs=1e-6)
    assert same.probability == pytest.approx(scoring.compare_probability(same.similarity, embedder.scoring), abs=1e-6)
    assert (same.label, same.model) == ("same writer", "fake-0")
    assert vault.compare(a, c).label == "different writers"
    assert count(vault, "decisions") == 0


def test_identify_ranks_persons(vault: Vault, images: ImageFactory) -> None:
    for person in (1, 2, 3):
        vault.enroll(f"p{person}", images.refs(person, 2))
    found = vault.identify(images.write("q.png", 2, 9), top=2)
    assert found[0].person == "p2"
    assert len(found) == 2 and found[0].score > found[1].score
    assert found[0].best_reference.reference_id in (3, 4)
    with pytest.raises(UsageError, match=r"^--top must be at least 1, got 0$"):
        vault.identify(images.write("q2.png", 2, 9), top=0)


def test_identify_on_an_empty_vault(vault: Vault, images: ImageFactory) -> None:
    assert vault.identify(images.write("q.png", 2, 9)) == []


# ------------------------------------------------------------------------------------ people, override


def test_threshold_override_survives_enrolment(vault: Vault, images: ImageFactory) -> None:
    vault.enroll("alice", images.refs(1, 3))
    computed = vault.person("alice").threshold
    change = vault.set_threshold("alice", 0.5)
    assert (change.threshold, change.threshold_method, change.is_override) == (0.5, "override", True)
    vault.enroll("alice", [images.write("more.png", 1, 7)])
    detail = vault.person("alice")
    assert (detail.threshold, detail.threshold_method, detail.is_override) == (0.5, "override", True)
    assert vault.verify("alice", images.write("q.png", 1, 8)).threshold_method == "override"
    back = vault.set_threshold("alice", None)
    assert back.is_override is False and back.threshold != computed  # recomputed over 4 references now
    assert back.threshold_method.startswith("leave-one-out over 4 references")
    with pytest.raises(UsageError, match=r"^threshold 1.5 is outside \[-1, 1\]"):
        vault.set_threshold("alice", 1.5)


def test_people_list(vault: Vault, images: ImageFactory) -> None:
    vault.enroll("bob", images.refs(2, 2))
    vault.enroll("alice", images.refs(1, 3))
    assert [(p.person_id, p.n_references, p.is_override) for p in vault.people()] == [
        ("alice", 3, False),
        ("bob", 2, False),
    ]


def test_remove_erases_every_trace(vault: Vault, images: ImageFactory, backend: str, embedder: FakeEmbedder) -> None:
    refs, bobs = images.refs(1, 3), images.refs(2, 2)
    vault.enroll("alice", refs)
    vault.enroll("bob", bobs)
    vault.verify("alice", images.write("q.png", 1, 5))
    # alice's vectors, and 64-byte pieces of her images that bob's images do not share
    pieces = [ref.read_bytes()[i : i + 64] for ref in refs for i in range(64, ref.stat().st_size - 64, 256)]
    pieces = [p for p in pieces if not any(p in b.read_bytes() for b in bobs)]
    assert len(pieces) > 10
    secrets = [v.tobytes() for v in vectors(embedder, refs).astype("<f4")] + pieces
    result = vault.remove("alice")
    assert (result.person, result.n_references) == ("alice", 3)
    assert [p.person_id for p in vault.people()] == ["bob"]
    assert (count(vault, "refs"), count(vault, "ref_images"), count(vault, "thresholds")) == (2, 2, 1)
    assert verifications(vault) == 1 and vault.log_verify().ok  # the log keeps hashes and scores
    assert log_kinds(vault) == [("enroll", "alice"), ("enroll", "bob"), ("verify", "alice"), ("person-remove", "alice")]
    removal = list(vault.log_entries())[-1].details
    assert [r["reference_id"] for r in removal["references"]] == [1, 2, 3]
    with pytest.raises(PersonNotFoundError):
        vault.person("alice")
    assert VectorIndex_ids(vault) == [4, 5]
    vault.close()
    files = [p for p in vault.home.rglob("*") if p.is_file()]
    if backend == "sqlite":
        assert vault.home / "sigvault.db" in files
    for path in files:
        data = path.read_bytes()
        assert not any(s in data for s in secrets), path


def VectorIndex_ids(vault: Vault) -> list[int]:  # noqa: N802
    from sigvault.index import VectorIndex

    return VectorIndex.load(vault.index_path).ids().tolist()


# ----------------------------------------------------------------------------------- model changes


def test_other_models_vectors_are_never_compared(vault: Vault, images: ImageFactory, settings) -> None:  # noqa: ANN001
    vault.enroll("alice", images.refs(1, 3))
    vault.set_threshold("alice", 0.4)
    q = images.write("q.png", 1, 6)
    other = Vault.open(settings, embedder=FakeEmbedder(seed=1))
    try:
        expected = "but the loaded model is fake-1; run `sigvault reembed`"
        with pytest.raises(
            ModelMismatchError, match=rf"^the references of 'alice' were made by model fake-0, {expected}$"
        ):
            other.verify("alice", q)
        with pytest.raises(
            ModelMismatchError, match=rf"^the vault holds 3 references made by model fake-0, {expected}$"
        ):
            other.identify(q)
        with pytest.raises(
            ModelMismatchError, match=rf"^the vault holds 3 references made by model fake-0, {expected}$"
        ):
            other.enroll("bob", images.refs(2, 1))
        old_index = vault.index_path
        result = other.reembed()
        assert (result.model, result.n_references, result.n_persons) == ("fake-1", 3, 1)
        assert (result.previous_models, result.overrides_cleared) == ({"fake-0": 3}, ("alice",))
        assert not old_index.exists() and other.index_path.exists()
        assert other.check_index().consistent
        assert other.verify("alice", q).decision == "accept"
        assert other.person("alice").is_override is False
        with pytest.raises(ModelMismatchError):
            vault.verify("alice", q)
        assert other.reembed().n_references == 0  # nothing left to do
    finally:
        other.close()


# -------------------------------------------------------------------------------------- concurrency


def _worker(settings, person: str, refs: list[Path], questions: list[Path]) -> list[str]:  # noqa: ANN001
    """Runs in a separate process: enroll one person, then verify and identify."""
    problems = []
    with Vault.open(settings, embedder=FakeEmbedder()) as vault:
        try:
            vault.enroll(person, refs)
            for q in questions:
                if vault.verify(person, q).decision != "accept":
                    problems.append(f"{person}: {q.name} not accepted")
            vault.identify(questions[0], top=1)
        except Exception as exc:  # reported to the parent
            problems.append(f"{person}: {type(exc).__name__}: {exc}")
    return problems


def test_concurrent_processes_lose_nothing(vault: Vault, images: ImageFactory, settings) -> None:  # noqa: ANN001
    import multiprocessing

    jobs = [
        (settings, f"p{k}", images.refs(k, 3), [images.write(f"q{k}-{v}.png", k, v) for v in (5, 6, 7)])
        for k in (1, 2, 3)
    ]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        problems = [p for result in pool.starmap(_worker, jobs) for p in result]
    assert problems == []
    assert [(p.person_id, p.n_references) for p in vault.people()] == [("p1", 3), ("p2", 3), ("p3", 3)]
    report = vault.log_verify()
    assert (report.ok, report.entries) == (True, 12)  # 3 enrolments and 9 verifications
    assert verifications(vault) == 9
    assert vault.check_index().consistent


# ---------------------------------------------------------------------------------- wd-svm scoring


def _wd_embedder(images: ImageFactory) -> FakeEmbedder:
    """The fake model with wd-svm scoring and a cohort of 6 other synthetic writers."""
    emb = FakeEmbedder(scoring=scoring.ScoringConfig(method="wd-svm", prior_mean=0.6, prior_std=0.5, k=1.0))
    cohort_imgs = [images.write(f"cohort-{p}-{i}.png", p, i) for p in range(20, 26) for i in range(3)]
    emb.cohort = vectors(emb, cohort_imgs)
    emb.cohort_id = "cohort-a"
    return emb


def test_wd_svm_verify_uses_the_stored_person_svm(settings, images: ImageFactory) -> None:
    from sigvault.vault import upgrade_database

    emb = _wd_embedder(images)
    upgrade_database(settings)
    with Vault.open(settings, embedder=emb) as vault:
        refs = images.refs(1, 4)
        vault.enroll("alice", refs)
        q = images.write("q.png", 1, 8)
        result = vault.verify("alice", q)
    ref_vecs, q_vec = vectors(emb, refs), vectors(emb, [q])[0]
    expected = scoring.person_scorer(ref_vecs, emb.scoring, emb.cohort)
    threshold = scoring.person_threshold(ref_vecs, emb.scoring, emb.cohort)
    assert result.score == pytest.approx(expected.score(q_vec), abs=1e-9)
    assert result.threshold == pytest.approx(threshold.value, abs=1e-9)
    assert threshold.method.startswith("leave-one-out over 4 references (wd-svm scores)")
    assert result.decision == scoring.decide(result.score, result.threshold, emb.scoring)
    # the similarities shown to the reviewer stay cosine similarities
    assert [r["similarity"] for r in result.to_dict()["references"]] == pytest.approx(
        scoring.similarities(q_vec, ref_vecs).tolist(), abs=1e-6
    )


def test_changing_the_scoring_method_refits_each_person_on_first_use(settings, images: ImageFactory) -> None:
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    refs = images.refs(1, 4)
    cosine = FakeEmbedder()
    with Vault.open(settings, embedder=cosine) as vault:
        vault.enroll("alice", refs)
        vault.enroll("bob", images.refs(2, 3))
        vault.set_threshold("bob", 0.25)
        bob_set_at = vault.person("bob").threshold_set_at
    emb = _wd_embedder(images)
    q = images.write("q.png", 1, 8)
    with Vault.open(settings, embedder=emb) as vault:
        assert next(c.person for c in vault.identify(q, top=2)) == "alice"  # read-only: refits in memory
        result = vault.verify("alice", q)
        bob = vault.verify("bob", q)
        detail = vault.person("bob")
    ref_vecs = vectors(emb, refs)
    assert result.threshold == pytest.approx(scoring.person_threshold(ref_vecs, emb.scoring, emb.cohort).value, abs=1e-9)
    assert result.score == pytest.approx(
        scoring.person_scorer(ref_vecs, emb.scoring, emb.cohort).score(vectors(emb, [q])[0]), abs=1e-9
    )
    # the override is the user's decision: it stays, with the time it was set; only the scorer is refitted
    assert (bob.threshold, detail.is_override, detail.threshold_set_at) == (0.25, True, bob_set_at)
    with Vault.open(settings, embedder=emb) as vault, vault.engine.connect() as conn:
        rows = conn.execute(text("SELECT details FROM thresholds ORDER BY person_pk")).scalars().all()

    stored = [json.loads(r) if isinstance(r, str) else r for r in rows]
    assert [(d["scorer"]["method"], d["scorer"]["cohort"]) for d in stored] == [("wd-svm", "cohort-a")] * 2


# ------------------------------------------------------------------------------ reference views (wd-svm)


def _views_embedder(images: ImageFactory) -> FakeEmbedder:
    """The wd-svm fake model whose scoring enrols each reference also turned by -4 and +4 degrees."""
    emb = _wd_embedder(images)
    emb.scoring = scoring.ScoringConfig(
        method="wd-svm", prior_mean=0.6, prior_std=0.5, k=1.0, view_angles=(-4.0, 4.0)
    )
    return emb


def view_vectors(embedder: FakeEmbedder, paths: list[Path]) -> np.ndarray:
    """(n, len(views), dim): the views the vault should compute, from the public pieces."""
    out = []
    for p in paths:
        grey = imaging.read_image(p)
        canvases, _ = imaging.preprocess_views(grey, embedder.spec, embedder.scoring.views)
        out.append(embedder.embed(canvases[1:]))
    return np.stack(out)


def test_enrolment_fits_the_svm_with_each_references_views(settings, images: ImageFactory) -> None:
    from sigvault.vault import upgrade_database

    emb = _views_embedder(images)
    upgrade_database(settings)
    refs = images.refs(1, 4)
    late = images.write("late.png", 1, 9)
    q = images.write("q.png", 1, 8)
    with Vault.open(settings, embedder=emb) as vault:
        first = vault.enroll("alice", refs)
        result = vault.verify("alice", q)
        more = vault.enroll("alice", [late])  # the stored references' views are recomputed from their images
        again = vault.verify("alice", q)
    ref_vecs, views = vectors(emb, refs), view_vectors(emb, refs)
    q_vec = vectors(emb, [q])[0]
    expected = scoring.person_threshold(ref_vecs, emb.scoring, emb.cohort, views=views)
    assert first.threshold == pytest.approx(expected.value, abs=1e-9)
    assert result.threshold == pytest.approx(expected.value, abs=1e-9)
    assert result.score == pytest.approx(
        scoring.person_scorer(ref_vecs, emb.scoring, emb.cohort, views=views).score(q_vec), abs=1e-9
    )
    assert first.threshold_method == (
        "leave-one-out over 4 references (wd-svm scores), each reference also turned by -4, 4 degrees, "
        "shrunk toward the global prior (weight 4)"
    )
    # the views change the fit: without them the score differs
    assert result.score != pytest.approx(scoring.person_scorer(ref_vecs, emb.scoring.__class__(
        **{**emb.scoring.to_dict(), "view_angles": ()}), emb.cohort).score(q_vec), abs=1e-6)
    all_vecs = np.vstack([ref_vecs, vectors(emb, [late])])
    all_views = np.concatenate([views, view_vectors(emb, [late])])
    assert more.threshold == pytest.approx(
        scoring.person_threshold(all_vecs, emb.scoring, emb.cohort, views=all_views).value, abs=1e-9
    )
    assert again.score == pytest.approx(
        scoring.person_scorer(all_vecs, emb.scoring, emb.cohort, views=all_views).score(q_vec), abs=1e-9
    )


def test_a_model_that_adds_views_refits_each_person_on_first_use(settings, images: ImageFactory) -> None:
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    refs = images.refs(1, 4)
    q = images.write("q.png", 1, 8)
    with Vault.open(settings, embedder=_wd_embedder(images)) as vault:
        vault.enroll("alice", refs)
        before = vault.verify("alice", q)
    emb = _views_embedder(images)
    with Vault.open(settings, embedder=emb) as vault:
        (candidate,) = vault.identify(q, top=1)  # read-only: refitted in memory, with views from the stored images
        after = vault.verify("alice", q)  # a write: refitted and stored
    with Vault.open(settings, embedder=emb) as vault, vault.engine.connect() as conn:
        stored = conn.execute(text("SELECT details FROM thresholds")).scalar_one()

    stored = json.loads(stored) if isinstance(stored, str) else stored
    ref_vecs, views = vectors(emb, refs), view_vectors(emb, refs)
    expected = scoring.person_threshold(ref_vecs, emb.scoring, emb.cohort, views=views).value
    assert candidate.threshold == pytest.approx(expected, abs=1e-9)
    assert after.threshold == pytest.approx(expected, abs=1e-9)
    assert after.threshold != pytest.approx(before.threshold, abs=1e-6)
    assert (stored["scorer"]["method"], stored["scorer"]["views"]) == ("wd-svm", [-4.0, 4.0])


def test_a_model_that_adds_or_drops_a_blurred_view_refits_each_person(settings, images: ImageFactory) -> None:
    """The shipped scoring enrols each reference turned by -4 and 4 degrees and blurred by 1 px (at most 1.5
    canvas px): persons fitted by a model without the blurred view, or with another bound, are refitted with
    it (from their stored images), and back."""
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    refs = images.refs(1, 4)
    q = images.write("q.png", 1, 8)
    turned = _views_embedder(images)
    with Vault.open(settings, embedder=turned) as vault:
        vault.enroll("alice", refs)
        before = vault.verify("alice", q)
    blurred, capped = _views_embedder(images), _views_embedder(images)
    blurred.scoring = replace(turned.scoring, view_blurs=(1.0,))
    capped.scoring = replace(blurred.scoring, view_blur_cap=1.5)  # another bound: another rule, refitted too
    stored = []
    for emb in (blurred, capped, turned):
        with Vault.open(settings, embedder=emb) as vault:
            result = vault.reembed()  # same network: only the stale scorers are refitted
            after = vault.verify("alice", q)
        with Vault.open(settings, embedder=emb) as vault, vault.engine.connect() as conn:
            details = conn.execute(text("SELECT details FROM thresholds")).scalar_one()
        stored.append(json.loads(details) if isinstance(details, str) else details)
        assert (result.n_references, result.n_refitted) == (0, 1)
        ref_vecs, views = vectors(emb, refs), view_vectors(emb, refs)
        assert views.shape == (4, len(emb.scoring.views), emb.dim)
        assert after.threshold == pytest.approx(
            scoring.person_threshold(ref_vecs, emb.scoring, emb.cohort, views=views).value, abs=1e-9
        )
        assert after.score == pytest.approx(
            scoring.person_scorer(ref_vecs, emb.scoring, emb.cohort, views=views).score(vectors(emb, [q])[0]), abs=1e-9
        )
        if emb is not turned:
            assert after.threshold != pytest.approx(before.threshold, abs=1e-6)
            assert after.threshold_method == (
                "leave-one-out over 4 references (wd-svm scores), each reference also turned by -4, 4 degrees and "
                f"blurred (1 px{', at most 1.5 canvas px' if emb is capped else ''}), shrunk toward the global prior "
                "(weight 4)"
            )
        else:
            assert (after.threshold, after.score) == (pytest.approx(before.threshold, abs=1e-12), before.score)
    assert [s["scorer"]["views"] for s in stored] == [[-4.0, 4.0]] * 3
    assert [s["scorer"].get("view_blurs") for s in stored] == [[1.0], [1.0], None]
    assert [s["scorer"].get("view_blur_cap") for s in stored] == [0.0, 1.5, None]


def test_thin_faint_references_enrol_with_views_that_would_lose_their_ink(settings, images: ImageFactory) -> None:
    """1-px strokes 25 grey levels darker than the paper: ink as scanned, not once turned or blurred
    (tests/test_imaging.py). Each such view is the reference's own canvas, and enrolment goes through."""
    from PIL import Image, ImageDraw

    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    emb = _views_embedder(images)
    emb.scoring = replace(emb.scoring, view_blurs=(1.0,))
    paths = []
    for i in range(3):
        im = Image.new("L", (900, 300), 230)
        ImageDraw.Draw(im).line([(100, 150 + 5 * i), (400, 120), (800, 160 - 7 * i)], fill=205, width=1)
        paths.append(images.directory / f"faint{i}.png")
        im.save(paths[-1])
    with Vault.open(settings, embedder=emb) as vault:
        result = vault.enroll("faint", paths)
    ref_vecs = vectors(emb, paths)
    views = np.repeat(ref_vecs[:, np.newaxis], 3, axis=1)  # every view fell back to the scan's own canvas
    assert result.threshold == pytest.approx(
        scoring.person_threshold(ref_vecs, emb.scoring, emb.cohort, views=views).value, abs=1e-9
    )


def test_reembed_to_a_new_model_fits_as_enrolment_does_reading_each_image_once(
    settings, images: ImageFactory, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    from sigvault.db import queries
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    with Vault.open(settings, embedder=_wd_embedder(images)) as vault:  # model fake-0, no views
        vault.enroll("alice", images.refs(1, 4))
        vault.enroll("bob", images.refs(2, 3))
    new = FakeEmbedder(
        seed=1, scoring=scoring.ScoringConfig(method="wd-svm", prior_mean=0.6, prior_std=0.5, k=1.0, view_angles=(-4.0, 4.0))
    )
    new.cohort = vectors(new, [images.write(f"cohort-{p}-{i}.png", p, i) for p in range(20, 26) for i in range(3)])
    new.cohort_id = "cohort-b"
    reads: list[list[int]] = []
    original = queries.reference_images
    monkeypatch.setattr(queries, "reference_images", lambda conn, ids: reads.append(list(ids)) or original(conn, ids))
    with Vault.open(settings, embedder=new) as vault:
        result = vault.reembed()
        alice, bob = vault.person("alice"), vault.person("bob")
    assert (result.model, result.n_references, result.n_persons) == ("fake-1", 7, 2)
    assert reads == []  # views and captures come from the one read pass: the write transaction reads no image
    for detail, refs in ((alice, images.refs(1, 4)), (bob, images.refs(2, 3))):
        expected = scoring.person_threshold(vectors(new, refs), new.scoring, new.cohort, views=view_vectors(new, refs))
        assert detail.threshold == pytest.approx(expected.value, abs=1e-9)
        ref = imaging.InkCapture.median([_capture(p, new) for p in refs])
        assert (detail.capture_scale, detail.capture_stroke) == (
            pytest.approx(ref.scale, abs=1e-12),
            pytest.approx(ref.stroke, abs=1e-12),
        )


def test_reembed_spools_vectors_views_and_captures_to_a_temporary_file_exactly() -> None:
    from sigvault import imaging
    from sigvault.db import queries
    from sigvault.reembed import ReembedSpool as _ReembedSpool

    rng = np.random.default_rng(0)
    rows = {ref_id: rng.standard_normal((3, 5)).astype(np.float32) for ref_id in (3, 7, 12)}
    captures = {3: imaging.InkCapture(0.25, 2.5), 7: imaging.InkCapture(0.5, 1.25), 12: imaging.InkCapture(1.0, 3.0)}
    with _ReembedSpool(2, 5) as spool:
        for ref_id, vectors in rows.items():
            spool.add(ref_id, vectors, captures[ref_id])
        with pytest.raises(ValueError, match="reference 5 added after 12: add them in ascending id order"):
            spool.add(5, rows[3], captures[3])
        assert spool.ids == [3, 7, 12]
        assert list(spool.encoded(chunk=2)) == [(i, queries.encode_vector(rows[i][0])) for i in (3, 7, 12)]
        np.testing.assert_array_equal(spool.views([3, 12]), np.stack([rows[3][1:], rows[12][1:]]))
        np.testing.assert_array_equal(spool.views([7]), rows[7][np.newaxis, 1:])
        assert spool.captures([12, 3]) == [captures[12], captures[3]]
        with pytest.raises(KeyError, match=r"references \[4\] were not all spooled"):
            spool.views([4])
        spooled = spool._file
    assert spooled.closed
    with _ReembedSpool(2, 5) as empty:  # every reference removed meanwhile: nothing to write, no error
        assert (empty.ids, list(empty.encoded()), empty.captures([])) == ([], [], [])


def test_reembed_refits_every_stale_scorer_at_once(settings, images: ImageFactory) -> None:
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    with Vault.open(settings, embedder=_wd_embedder(images)) as vault:
        vault.enroll("alice", images.refs(1, 4))
        vault.enroll("bob", images.refs(2, 3))
        vault.set_threshold("bob", 0.25)
    emb = _views_embedder(images)
    with Vault.open(settings, embedder=emb) as vault:
        result = vault.reembed()
        again = vault.reembed()
        alice, bob = vault.person("alice"), vault.person("bob")
    assert (result.n_references, result.n_persons, result.n_refitted, result.overrides_cleared) == (0, 2, 2, ())
    assert (again.n_references, again.n_refitted) == (0, 0)
    ref_vecs, views = vectors(emb, images.refs(1, 4)), view_vectors(emb, images.refs(1, 4))
    assert alice.threshold == pytest.approx(
        scoring.person_threshold(ref_vecs, emb.scoring, emb.cohort, views=views).value, abs=1e-9
    )
    assert (bob.threshold, bob.is_override) == (0.25, True)  # the user's override keeps its value
    with Vault.open(settings, embedder=emb) as vault, vault.engine.connect() as conn:
        rows = conn.execute(text("SELECT details FROM thresholds ORDER BY person_pk")).scalars().all()

    stored = [json.loads(r) if isinstance(r, str) else r for r in rows]
    assert [d["scorer"]["views"] for d in stored] == [[-4.0, 4.0]] * 2


# --------------------------------------------------------------------------------------- capture guard


def _coarse(path: Path, out: Path, factor: float) -> Path:
    """The scan at ``path`` as a coarser scanner gives it: shrunk by ``factor`` with a box filter."""
    from PIL import Image

    im = Image.open(path)
    im.resize((round(im.width * factor), round(im.height * factor)), Image.Resampling.BOX).save(out)
    return out


def _capture(path: Path, embedder: FakeEmbedder) -> imaging.InkCapture:
    return imaging.measure_capture(imaging.read_image(path.read_bytes()), embedder.spec)


def test_a_coarse_scan_near_the_threshold_is_referred_not_rejected(
    vault: Vault, images: ImageFactory, embedder: FakeEmbedder, tmp_path: Path
) -> None:
    refs = images.refs(1, 3)
    vault.enroll("alice", refs)
    ref = imaging.InkCapture.median([_capture(p, embedder) for p in refs])
    coarse = _coarse(images.write("q.png", 1, 7), tmp_path / "coarse.png", 0.12)
    asked = _capture(coarse, embedder)
    ratio = scoring.capture_ratio(asked, ref, embedder.scoring)
    assert ref.scale < 1 and ratio == asked.scale > 1.5  # references reduced into the canvas, the scan enlarged
    assert ref.stroke / asked.stroke > 4  # ... and its strokes thinner in scan pixels: another capture
    band = embedder.scoring.refer_band
    score = vault.verify("alice", coarse).score

    vault.set_threshold("alice", score + 2 * band)  # the model alone would reject it (2 bands below)
    near = vault.verify("alice", coarse)
    assert (near.decision, near.capture_ratio) == ("refer", pytest.approx(ratio, abs=1e-12))
    (entry,) = [e for e in vault.log_entries() if e.id == near.decision_id]
    assert entry.details["capture"] == {
        "scale": pytest.approx(asked.scale, abs=1e-12),
        "reference_scale": pytest.approx(ref.scale, abs=1e-12),
        "stroke": pytest.approx(asked.stroke, abs=1e-12),
        "reference_stroke": pytest.approx(ref.stroke, abs=1e-12),
        "ratio": pytest.approx(ratio, abs=1e-12),
    }
    assert near.to_dict()["capture_ratio"] == pytest.approx(ratio, abs=1e-12)

    same = images.write("q2.png", 1, 8)  # the references' capture: the model's rejection stands
    s2 = vault.verify("alice", same).score
    vault.set_threshold("alice", s2 + 2 * band)
    fine = vault.verify("alice", same)
    assert (fine.decision, fine.capture_ratio) == ("reject", None)
    assert "capture_ratio" not in fine.to_dict()

    # the same hand written a third of the size with the same pen, on the same scanner: enlarged as much as
    # the coarse scan, but its strokes are as wide as the references'; the model's rejection stands
    small = images.write("small.png", 1, 9, size=(200, 67))
    assert _capture(small, embedder).scale / ref.scale > 1.5
    assert ref.stroke / _capture(small, embedder).stroke == pytest.approx(1, abs=0.1)
    s3 = vault.verify("alice", small).score
    vault.set_threshold("alice", s3 + 2 * band)
    written_small = vault.verify("alice", small)
    assert (written_small.decision, written_small.capture_ratio) == ("reject", None)


def test_enrolment_warns_of_a_reference_captured_unlike_the_others(
    vault: Vault, images: ImageFactory, embedder: FakeEmbedder, tmp_path: Path
) -> None:
    refs = images.refs(1, 3)
    coarse = _coarse(images.write("ref-fax.png", 1, 4), tmp_path / "ref-fax.png", 0.12)
    result = vault.enroll("alice", [*refs, coarse])
    ratio = scoring.capture_ratio(
        _capture(coarse, embedder), imaging.InkCapture.median([_capture(p, embedder) for p in refs]), embedder.scoring
    )
    assert ratio > 1.5
    capture_notes = [w for w in result.warnings if "scanned" in w]
    assert capture_notes == [
        f"{coarse}: scanned coarser (ink enlarged more, strokes thinner) than the other references of 'alice' "
        f"(x{ratio:.2f}); enrol references captured alike, and like the questioned scans will be"
    ]
    assert len(vault.person("alice").references) == 4  # kept, as an outlier is
    more = vault.enroll("alice", [images.write("ref-5.png", 1, 5)])
    assert not [w for w in more.warnings if "scanned" in w]  # like the median of the others


@pytest.mark.parametrize("missing", ["capture_scale", "capture_stroke"])
def test_threshold_rows_without_a_capture_are_refitted_on_first_use(
    vault: Vault, images: ImageFactory, embedder: FakeEmbedder, missing: str
) -> None:

    refs = images.refs(1, 3)
    vault.enroll("alice", refs)
    with vault.engine.begin() as conn:  # a row as written before the capture guard (or its strokes) existed
        raw = conn.execute(text("SELECT details FROM thresholds")).scalar_one()
        details = json.loads(raw) if isinstance(raw, str) else raw
        del details[missing]
        conn.execute(text("UPDATE thresholds SET details = :d"), {"d": json.dumps(details)})
    vault.verify("alice", images.write("q.png", 1, 7))
    with vault.engine.connect() as conn:
        raw = conn.execute(text("SELECT details FROM thresholds")).scalar_one()
    details = json.loads(raw) if isinstance(raw, str) else raw
    ref = imaging.InkCapture.median([_capture(p, embedder) for p in refs])
    assert (details["capture_scale"], details["capture_stroke"]) == (
        pytest.approx(ref.scale, abs=1e-12),
        pytest.approx(ref.stroke, abs=1e-12),
    )


def test_compare_does_not_call_captures_of_different_scales_different_writers(
    settings, images: ImageFactory, tmp_path: Path  # noqa: ANN001
) -> None:
    from sigvault.vault import upgrade_database

    upgrade_database(settings)
    wide = FakeEmbedder(scoring=scoring.ScoringConfig(capture_reject_bands=40.0))  # 40 x 0.03: far enough here
    a, other = images.write("a.png", 1, 1), images.write("c.png", 2, 1)
    coarse = _coarse(other, tmp_path / "coarse.png", 0.12)
    with Vault.open(settings, embedder=wide) as vault:
        assert vault.compare(a, other).label == "different writers"
        result = vault.compare(a, coarse)
        same_scale = vault.compare(a, images.write("b.png", 1, 2))
    ratio = scoring.capture_ratio(_capture(coarse, wide), _capture(a, wide), wide.scoring)
    gap = wide.scoring.compare_threshold - result.similarity
    assert wide.scoring.refer_band < gap <= 40 * wide.scoring.refer_band  # would be "different writers"
    assert (result.label, result.capture_ratio) == ("uncertain", pytest.approx(ratio, abs=1e-12))
    assert "capture_ratio" not in same_scale.to_dict() and "capture_ratio" in result.to_dict()
