"""``sigvault reembed``: recompute every reference's embedding from its stored image with the loaded model.

Images are read, measured and embedded first, with the scoring's reference views (each image decoded and
shrunk once, outside any write transaction); then one transaction replaces every vector and refits every
threshold from them, reading no image, and appends a ``reembed`` event to the decision log. Meanwhile every reference's vector and its views' wait in a temporary
file (:class:`ReembedSpool`), so the memory does not grow with the vault. The vault's facade method
:meth:`sigvault.vault.Vault.reembed` calls :func:`reembed`; the thresholds are fitted by the vault's own
``_refresh_threshold``, the code ``enroll`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sigvault import imaging
from sigvault.db import queries
from sigvault.db.engine import transaction
from sigvault.errors import SigvaultError
from sigvault.results import ReembedResult

if TYPE_CHECKING:
    from sigvault.vault import Vault

#: Canvases gathered from the stored images before they are embedded together.
REEMBED_BATCH = 32
#: Called with (references embedded, references in all) while the stored images are embedded.
ReembedProgress = Callable[[int, int], None]


def reembed(vault: Vault, progress: ReembedProgress | None = None) -> ReembedResult:
    """Re-embed every reference with the vault's loaded model, atomically (see :meth:`Vault.reembed`).

    ``progress`` is called with (references embedded, references in all) as the images are embedded.
    """
    embedder = vault.embedder
    with transaction(vault.engine) as conn:
        previous = queries.model_counts(conn)
        up_to_date = set(previous) <= {embedder.model_id}
        total = sum(previous.values())
    if up_to_date:
        return _refit_stale(vault, previous)
    with ReembedSpool(len(embedder.scoring.views), embedder.dim) as spool:
        return _reembed(vault, previous, spool, total, progress)


def _reembed(
    vault: Vault,
    previous: dict[str, int],
    spool: ReembedSpool,
    total: int,
    progress: ReembedProgress | None,
) -> ReembedResult:
    """:func:`reembed` once the vectors are known to be another model's."""
    embedder = vault.embedder
    spec, wanted = embedder.spec, embedder.scoring.views
    with transaction(vault.engine) as conn:
        batch: list[tuple[int, np.ndarray, imaging.InkCapture]] = []  # (reference id, canvas, capture)
        for ref_id, person_id, source_name, data in queries.iter_reference_images(conn):
            name = f"reference {ref_id} of {person_id!r} ({source_name or 'image'})"
            grey = imaging.read_image(data, name=name, limits=vault.limits)
            canvases, capture = imaging.preprocess_views(grey, spec, wanted, name=name)
            batch += [(ref_id, c, capture) for c in canvases]  # its views' canvases follow its own
            if len(batch) >= REEMBED_BATCH:
                _embed_references(vault, batch, spool)
                batch = []
                if progress is not None:
                    progress(len(spool), total)
        _embed_references(vault, batch, spool)
        if progress is not None:
            progress(len(spool), total)
    cleared: list[str] = []
    with transaction(vault.engine, write=True) as conn:
        if queries.all_reference_ids(conn) != spool.ids:
            raise SigvaultError("references changed while re-embedding; run `sigvault reembed` again")
        queries.set_embeddings(conn, embedder.model_id, spool.encoded())
        persons = queries.all_persons(conn)
        for person in persons:
            current = queries.get_threshold(conn, person.pk)
            if current is not None and current.is_override:
                cleared.append(person.person_id)
            refs, blobs = queries.person_references(conn, person.pk)  # id order, vectors just stored
            vectors = queries.decode_vectors(blobs, embedder.dim)
            ids = [r.id for r in refs]
            vault._refresh_threshold(
                conn,
                person,
                vectors,
                views=spool.views(ids) if wanted and ids else None,
                captures=spool.captures(ids),
                keep_override=False,
            )
        vault._event(
            conn,
            "reembed",
            "",
            details={
                "previous_models": previous,
                "n_references": len(spool),
                "n_persons": len(persons),
                "overrides_cleared": sorted(cleared),
            },
        )
    vault._indexes.delete_other_models(embedder.model_id)
    vault.rebuild_index()
    return ReembedResult(embedder.model_id, len(spool), len(persons), previous, tuple(sorted(cleared)))


def _refit_stale(vault: Vault, previous: dict[str, int]) -> ReembedResult:
    """Every vector is the loaded model's: refit, in one transaction, each person whose stored scorer was made
    for another scoring method, cohort or views (what ``Vault._person_refs`` would otherwise do on each
    person's first use, one at a time, inside a verify or an audit). Overrides keep their value."""
    with transaction(vault.engine, write=True) as conn:
        persons = queries.all_persons(conn)
        refitted = 0
        for person in persons:
            threshold = queries.get_threshold(conn, person.pk)
            if threshold is None or vault._rule_is_current(threshold):
                continue
            vectors = queries.decode_vectors(queries.person_embeddings(conn, person.pk), vault.embedder.dim)
            vault._refresh_threshold(conn, person, vectors)
            refitted += 1
        if refitted:
            vault._event(conn, "reembed", "", details={"previous_models": previous, "n_refitted": refitted})
    return ReembedResult(vault.model_id, 0, len(persons), previous, (), refitted)


def _embed_references(
    vault: Vault, batch: list[tuple[int, np.ndarray, imaging.InkCapture]], spool: ReembedSpool
) -> None:
    """Embed (reference id, canvas, capture) rows, each reference's own canvas first and then its views'
    (when the scoring has views), and spool each reference's vectors and capture."""
    if not batch:
        return
    vectors = vault._embed([canvas for _, canvas, _ in batch])
    k = 1 + len(vault.embedder.scoring.views)
    for at in range(0, len(batch), k):
        ref_id, _, capture = batch[at]
        spool.add(ref_id, vectors[at : at + k], capture)


class ReembedSpool:
    """What ``reembed`` computes before its write transaction, for every reference: its vector and its views'
    (float32, one ``(1 + views, dim)`` row per reference in an unlinked temporary file, read back through a
    memory map) and its id and capture (24 bytes in memory). Its memory does not grow with the vault's vectors:
    a million references with 896-d vectors and three views are 14.3 GB of disk and 24 MB of RAM here.
    References are added in ascending id order (the order ``queries.iter_reference_images`` reads them)."""

    def __init__(self, views: int, dim: int) -> None:
        import tempfile
        from array import array

        self._shape = (1 + views, dim)
        self._file = tempfile.TemporaryFile(prefix="sigvault-reembed-")  # noqa: SIM115 - closed by __exit__
        self._ids = array("q")
        self._captures = array("d")
        self._map: np.memmap | None = None

    def add(self, ref_id: int, vectors: np.ndarray, capture: imaging.InkCapture) -> None:
        """``vectors``: (1 + views, dim), the reference's own vector first."""
        if self._ids and ref_id <= self._ids[-1]:
            raise ValueError(f"reference {ref_id} added after {self._ids[-1]}: add them in ascending id order")
        self._ids.append(ref_id)
        self._captures.extend((capture.scale, capture.stroke))
        self._file.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())

    @property
    def ids(self) -> list[int]:
        return self._ids.tolist()

    def __len__(self) -> int:
        return len(self._ids)

    def _memmap(self) -> np.ndarray:
        if not self._ids:  # an empty file cannot be mapped
            return np.zeros((0, *self._shape), dtype=np.float32)
        if self._map is None:
            self._file.flush()
            self._map = np.memmap(self._file, dtype=np.float32, mode="r", shape=(len(self._ids), *self._shape))
        return self._map

    def _rows(self, ids: Sequence[int]) -> np.ndarray:
        """The spool's row of each of these reference ids."""
        known = np.frombuffer(self._ids, dtype=np.int64)
        wanted = np.asarray(ids, dtype=np.int64)
        rows = np.searchsorted(known, wanted)
        if np.any(rows >= len(known)) or np.any(known[np.minimum(rows, len(known) - 1)] != wanted):
            raise KeyError(f"references {list(ids)} were not all spooled")
        return rows

    def encoded(self, chunk: int = 10_000) -> Iterator[tuple[int, bytes]]:
        """(id, encoded vector) of every reference in id order, read ``chunk`` rows at a time."""
        ids, rows = self.ids, self._memmap()
        for at in range(0, len(ids), chunk):
            part = np.array(rows[at : at + chunk, 0])
            for i, vector in zip(ids[at : at + chunk], part, strict=True):
                yield i, queries.encode_vector(vector)

    def views(self, ids: Sequence[int]) -> np.ndarray:
        """(len(ids), views, dim): these references' views, as added."""
        return np.array(self._memmap()[self._rows(ids), 1:])

    def captures(self, ids: Sequence[int]) -> list[imaging.InkCapture]:
        c = self._captures
        return [imaging.InkCapture(c[2 * r], c[2 * r + 1]) for r in self._rows(ids).tolist()]

    def __enter__(self) -> ReembedSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._map = None
        self._file.close()

