"""The FAISS cache: exact search, atomic files that refuse damage, and repair from SQL by the vault."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from sigvault.errors import IndexError_
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
    with pytest.raises(IndexError_, match=r"^reference 20 is not in the index; run `sigvault index rebuild`$"):
        index.reconstruct(20)


def test_fingerprint_is_count_and_checksum_of_sorted_ids(index: VectorIndex) -> None:
    expected = hashlib.sha256(np.array([10, 20, 30], dtype="<i8").tobytes()).hexdigest()
    assert index.fingerprint() == Fingerprint(3, expected)
    assert Fingerprint.of(np.array([30, 10, 20])) == Fingerprint(3, expected)
    assert Fingerprint.of(np.array([], dtype=np.int64)).count == 0


def test_save_is_atomic_and_round_trips(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "idx" / "m.faiss"
    index.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.faiss"]  # no temporary file left
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
    with pytest.raises(IndexError_) as err:
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
