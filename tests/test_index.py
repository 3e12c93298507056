"""The FAISS cache: exact search, atomic files that refuse damage, and repair from SQL by the vault."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from sigvault.errors import IndexFileError
from sigvault.index import MAGIC, Fingerprint, VectorIndex


def unit(*rows: list[float]) -> np.ndarray:
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture
def index() -> VectorIndex:
    idx = VectorIndex(2)
    idx.add(np.array([10, 20, 30]), unit([1, 0], [0, 1], [1, 1]))
    return idx


def test_search_returns_cosine_best_first(index: VectorIndex) -> None:
    sims, ids = index.search(unit([1, 0])[0], 2)
    assert ids.tolist() == [10, 30]
    assert sims.tolist() == pytest.approx([1.0, 2**-0.5])
    _, all_ids = index.search(unit([1, 0])[0], 99)  # k larger than the index
    assert all_ids.tolist() == [10, 30, 20]


def test_remove_reconstruct_and_items(index: VectorIndex) -> None:
    assert index.remove(np.array([20, 99])) == 1
    assert index.ids().tolist() == [10, 30]
    assert index.reconstruct(30).tolist() == pytest.approx([2**-0.5, 2**-0.5])
    ids, vectors = index.items()
    assert ids.tolist() == [10, 30] and vectors.shape == (2, 2)
    with pytest.raises(IndexFileError, match=r"^reference 20 is not in the index; run `sigvault index rebuild`$"):
        index.reconstruct(20)


def test_fingerprint_is_count_and_checksum_of_sorted_ids(index: VectorIndex) -> None:
    expected = hashlib.sha256(np.array([10, 20, 30], dtype="<i8").tobytes()).hexdigest()
    assert index.fingerprint() == Fingerprint(3, expected)
    assert Fingerprint.of(np.array([30, 10, 20])) == Fingerprint(3, expected)
    assert Fingerprint.of(np.array([], dtype=np.int64)).count == 0


def test_save_is_atomic_and_round_trips(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "idx" / "m.faiss"
    index.save(path)
    # the base, its (empty) journal and the lock file; no temporary file left
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.faiss", "m.faiss.journal", "m.faiss.lock"]
    data = path.read_bytes()
    assert data[:8] == MAGIC
    loaded = VectorIndex.load(path)
    assert loaded.dim == 2 and loaded.ids().tolist() == [10, 20, 30]
    np.testing.assert_array_equal(loaded.items()[1], index.items()[1])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: b"", "not a sigvault index file"),
        (lambda d: b"garbage" * 10, "not a sigvault index file"),
        (lambda d: d[:-5], "index file is damaged (checksum mismatch)"),
        (lambda d: d[:60] + bytes([d[60] ^ 1]) + d[61:], "index file is damaged (checksum mismatch)"),
    ],
)
def test_damaged_files_are_refused(index: VectorIndex, tmp_path: Path, damage, message: str) -> None:  # noqa: ANN001
    path = tmp_path / "m.faiss"
    index.save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IndexFileError) as err:
        VectorIndex.load(path)
    assert str(err.value) == f"{path}: {message}; run `sigvault index rebuild`"


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        VectorIndex.load(tmp_path / "absent.faiss")


# ------------------------------------------------------------------------- the vault keeps it in line


def test_vault_index_follows_sql(vault, images) -> None:  # noqa: ANN001
    vault.enroll("alice", images.refs(1, 3))
    vault.enroll("bob", images.refs(2, 2))
    report = vault.check_index()
    assert (report.consistent, report.sql.count, report.index) == (True, 5, report.sql)
    assert VectorIndex.load(vault.index_path).ids().tolist() == [1, 2, 3, 4, 5]
    vault.remove("alice")
    assert VectorIndex.load(vault.index_path).ids().tolist() == [4, 5]
    assert vault.check_index().consistent


@pytest.mark.parametrize("how", ["missing", "damaged", "stale"])
def test_vault_repairs_index_on_next_use(vault, images, how: str) -> None:  # noqa: ANN001
    vault.enroll("alice", images.refs(1, 3))
    path = vault.index_path
    if how == "missing":
        path.unlink()
    elif how == "damaged":
        path.write_bytes(path.read_bytes()[:-10])
    else:  # an index missing a reference and holding one SQL never had
        stale = VectorIndex.load(path)
        stale.remove(np.array([2]))
        stale.add(np.array([99]), unit([1] + [0] * 31))
        stale.save(path)
    report = vault.check_index()
    assert report.consistent is False
    expected_problem = {
        "missing": "no index file",
        "damaged": f"{path}: index file is damaged (checksum mismatch); run `sigvault index rebuild`",
        "stale": "1 references missing from the index, 1 in the index but not in SQL",
    }[how]
    assert report.problem == expected_problem
    vault._index_cache = None  # a fresh process
    top = vault.identify(images.write("q.png", 1, 7), top=1)
    assert [c.person for c in top] == ["alice"]
    assert vault.check_index().consistent
    assert VectorIndex.load(path).ids().tolist() == [1, 2, 3]


def test_rebuild_index_from_sql_alone(vault, images) -> None:  # noqa: ANN001
    vault.enroll("alice", images.refs(1, 2))
    vault.index_path.unlink()
    report = vault.rebuild_index()
    assert (report.consistent, report.sql.count) == (True, 2)
    assert vault.check_index().consistent


# ------------------------------------------------------------------------ approximate index (HNSW)


def clustered(persons: int, per_person: int, dim: int, seed: int, noise: float = 0.08) -> np.ndarray:
    """Unit vectors, row i belonging to person i // per_person (a centre plus noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((persons, dim))
    x = np.repeat(centres / np.linalg.norm(centres, axis=1, keepdims=True), per_person, axis=0)
    x = x + noise * rng.standard_normal(x.shape)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> int:
    import sigvault.index as index_mod

    monkeypatch.setattr(index_mod, "HNSW_THRESHOLD", 400)
    return 400


def test_switches_to_hnsw_above_the_threshold_with_exact_top1(small_threshold: int) -> None:
    dim, persons, per = 32, 120, 5
    xb = clustered(persons, per, dim, seed=0)
    ids = np.arange(1, persons * per + 1)
    idx = VectorIndex(dim)
    idx.add(ids, xb)
    assert idx.kind == "flat"  # until compacted, everything new is searched exactly
    idx.compact()
    assert (idx.kind, idx.ntotal) == ("hnsw", 600)
    queries = clustered(persons, 1, dim, seed=0, noise=0.08)  # same centres, fresh noise
    recall5 = 0
    for p, q in enumerate(queries):
        exact = np.argsort(-(xb @ q), kind="stable")[:5] + 1
        sims, found = idx.search(q, 5)
        assert found[0] == exact[0]  # the exact top-1
        assert (found[0] - 1) // per == p  # ... which is one of the person's own references
        assert sims[0] == pytest.approx(float(xb[exact[0] - 1] @ q), abs=1e-5)
        recall5 += len(set(found.tolist()) & set(exact.tolist()))
    assert recall5 / (5 * persons) >= 0.98


def test_hnsw_tombstones_are_erased_filtered_and_persisted(small_threshold: int, tmp_path: Path) -> None:
    dim = 16
    xb = clustered(100, 5, dim, seed=1)
    idx = VectorIndex(dim)
    idx.add(np.arange(1, 501), xb)
    idx.compact()
    assert idx.kind == "hnsw"
    assert idx.remove(np.array([1, 2, 3, 4, 5, 999])) == 5  # person 0, entirely
    assert idx.ntotal == 495 and 1 not in idx.ids()
    with pytest.raises(IndexFileError, match="reference 3 is not in the index"):
        idx.reconstruct(3)
    _, found = idx.search(xb[0], 20)
    assert not set(found.tolist()) & {1, 2, 3, 4, 5}
    path = tmp_path / "m.faiss"
    idx.save(path)
    assert xb[0].astype("<f4").tobytes() not in path.read_bytes()  # the removed vector's bytes are gone
    loaded = VectorIndex.load(path)
    assert (loaded.kind, loaded.ntotal, loaded.pending) == ("hnsw", 495, 5)  # graph kept, node tombstoned
    _, found = loaded.search(xb[0], 20)
    assert not set(found.tolist()) & {1, 2, 3, 4, 5}
    # more than 10 % tombstones: the graph is rebuilt without them
    loaded.remove(np.arange(6, 61))
    loaded.compact()
    assert (loaded.kind, loaded.ntotal, loaded.pending) == ("hnsw", 440, 0)
    # far below the threshold: back to an exact flat index
    loaded.remove(np.arange(61, 400))
    loaded.compact()
    assert (loaded.kind, loaded.ids().tolist()) == ("flat", list(range(400, 501)))


# --------------------------------------------------------------------- journal and crash safety


def test_enroll_appends_to_the_journal_without_rewriting_the_base(index: VectorIndex, tmp_path: Path) -> None:
    from sigvault.index import append_journal, journal_path

    path = tmp_path / "m.faiss"
    assert append_journal(path, np.array([1]), unit([1, 0])) is False  # no base yet: nothing to extend
    index.save(path)
    base = path.read_bytes()
    assert append_journal(path, np.array([40, 50]), unit([1, 2], [2, 1]))
    assert append_journal(path, np.array([60]), unit([-1, 0]))
    assert path.read_bytes() == base  # untouched
    loaded = VectorIndex.load(path)
    assert loaded.ids().tolist() == [10, 20, 30, 40, 50, 60] and loaded.damaged is None
    assert loaded.reconstruct(50).tolist() == pytest.approx(unit([2, 1])[0].tolist())
    _, ids = loaded.search(unit([-1, 0])[0], 1)
    assert ids.tolist() == [60]
    # another process's later append reaches an index already loaded
    assert append_journal(path, np.array([70]), unit([0, -1]))
    assert loaded.refresh(path) and loaded.ids().tolist() == [10, 20, 30, 40, 50, 60, 70]
    # compaction folds the journal into a new base (new epoch) and empties the journal
    loaded.save(path)
    assert path.read_bytes() != base and journal_path(path).stat().st_size == 24
    assert VectorIndex.load(path).ids().tolist() == [10, 20, 30, 40, 50, 60, 70]


def test_torn_and_damaged_journal_records(index: VectorIndex, tmp_path: Path) -> None:
    from sigvault.index import append_journal, journal_path

    path = tmp_path / "m.faiss"
    index.save(path)
    append_journal(path, np.array([40]), unit([1, 2]))
    journal = journal_path(path)
    whole = journal.read_bytes()
    append_journal(path, np.array([50]), unit([2, 1]))
    # a crash in the middle of the second append: a torn record at the end
    journal.write_bytes(journal.read_bytes()[:-7])
    torn = VectorIndex.load(path)
    assert torn.ids().tolist() == [10, 20, 30, 40]
    assert torn.damaged == f"{journal}: torn record at byte {len(whole)}"
    # the next writer cuts the torn record off before appending
    append_journal(path, np.array([60]), unit([-1, 0]))
    healed = VectorIndex.load(path)
    assert (healed.ids().tolist(), healed.damaged) == ([10, 20, 30, 40, 60], None)
    # a flipped bit in a complete record: the replay stops there and says so
    data = bytearray(journal.read_bytes())
    data[len(whole) - 10] ^= 1
    journal.write_bytes(bytes(data))
    damaged = VectorIndex.load(path)
    assert damaged.ids().tolist() == [10, 20, 30]
    assert damaged.damaged == f"{journal}: damaged record at byte 24"


def test_a_journal_of_an_older_base_is_ignored(index: VectorIndex, tmp_path: Path) -> None:
    """A crash between the two renames of a compaction: new base, old journal. Nothing is applied twice."""
    from sigvault.index import append_journal, atomic_write, journal_path

    path = tmp_path / "m.faiss"
    index.save(path)
    append_journal(path, np.array([40]), unit([1, 2]))
    old_journal = journal_path(path).read_bytes()
    loaded = VectorIndex.load(path)
    loaded.save(path)  # compaction: base now holds 40
    atomic_write(journal_path(path), old_journal)  # as if the crash came before the journal's rename
    again = VectorIndex.load(path)
    assert (again.ids().tolist(), again.damaged) == ([10, 20, 30, 40], None)
    assert append_journal(path, np.array([50]), unit([2, 1]))  # the writer starts a journal for the new base
    assert VectorIndex.load(path).ids().tolist() == [10, 20, 30, 40, 50]


def test_a_crash_while_writing_the_base_leaves_the_old_one(index: VectorIndex, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import sigvault.index as index_mod

    path = tmp_path / "m.faiss"
    index.save(path)
    before = path.read_bytes()
    index.add(np.array([40]), unit([1, 2]))

    def crash(fd: int) -> None:
        raise OSError("disk unplugged")

    monkeypatch.setattr(index_mod.os, "fsync", crash)
    with pytest.raises(OSError, match="disk unplugged"):
        index.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.faiss", "m.faiss.journal", "m.faiss.lock"]
    assert VectorIndex.load(path).ids().tolist() == [10, 20, 30]


def test_vault_enroll_only_appends_and_repairs_a_damaged_journal(vault, images) -> None:  # noqa: ANN001
    from sigvault.index import journal_path, read_epoch

    vault.enroll("alice", images.refs(1, 3))
    path = vault.index_path
    base, epoch = path.read_bytes(), read_epoch(path)
    vault.enroll("bob", images.refs(2, 2))
    vault.enroll("carol", images.refs(3, 2))
    assert path.read_bytes() == base and read_epoch(path) == epoch  # no rewrite of the base
    assert VectorIndex.load(path).ids().tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert [c.person for c in vault.identify(images.write("q.png", 3, 9), top=1)] == ["carol"]
    # damage bob's record: check reports it, the next identify (a fresh process) repairs from SQL
    journal = journal_path(path)
    data = bytearray(journal.read_bytes())
    data[40] ^= 1
    journal.write_bytes(bytes(data))
    report = vault.check_index()
    assert (
        report.consistent is False
        and report.problem == "4 references missing from the index, 0 in the index but not in SQL"
    )
    vault._index_cache = None
    assert [c.person for c in vault.identify(images.write("q2.png", 2, 9), top=1)] == ["bob"]
    assert vault.check_index().consistent
    assert read_epoch(path) != epoch  # compacted


# ------------------------------------------------------------------- threads and other processes


def test_search_runs_on_the_calling_thread_and_restores_the_setting(index: VectorIndex, monkeypatch) -> None:  # noqa: ANN001
    import faiss

    seen: list[int] = []
    search = index._search
    monkeypatch.setattr(index, "_search", lambda q, k: (seen.append(faiss.omp_get_max_threads()), search(q, k))[1])
    before = faiss.omp_get_max_threads()
    _, ids = index.search(unit([1, 0])[0], 2)
    assert ids.tolist() == [10, 30] and seen == [1]
    assert faiss.omp_get_max_threads() == before


def _change_vault(settings, enroll: dict[str, list[Path]], remove: list[str]) -> None:  # noqa: ANN001
    """Runs in another process: its own vault, its own index cache."""
    from conftest import FakeEmbedder

    from sigvault.vault import Vault

    with Vault.open(settings, embedder=FakeEmbedder()) as other:
        for person in remove:
            other.remove(person)
        for person, refs in enroll.items():
            other.enroll(person, refs)


def test_identify_sees_what_another_process_adds_and_removes(vault, images, settings) -> None:  # noqa: ANN001
    """The index this process keeps in memory is re-checked against SQL on every identify: references
    another process enrolls are found, removed ones are never returned, even when the number of
    references stays the same (ids are never reused, so the largest id moves)."""
    import multiprocessing

    vault.enroll("alice", images.refs(1, 3))
    vault.enroll("bob", images.refs(2, 2))
    q_bob, q_carol = images.write("qb.png", 2, 9), images.write("qc.png", 3, 9)
    assert vault.identify(q_bob, top=1)[0].person == "bob"  # the index is now cached in this process
    cached = vault._index_cache
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(_change_vault, (settings, {"carol": images.refs(3, 2)}, ["bob"]))  # 5 references before and after
        found = [c.person for c in vault.identify(q_carol, top=5)]
        assert found[0] == "carol" and "bob" not in found
        assert vault._index_cache is not cached and vault._index_cache[1].ids().tolist() == [1, 2, 3, 6, 7]
        pool.apply(_change_vault, (settings, {}, ["carol"]))
        assert [c.person for c in vault.identify(q_carol, top=5)] == ["alice"]
        pool.apply(_change_vault, (settings, {"dave": images.refs(4, 2)}, []))
        assert vault.identify(images.write("qd.png", 4, 9), top=1)[0].person == "dave"
    assert vault.check_index().consistent
