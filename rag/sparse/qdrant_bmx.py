"""BMX over Qdrant sparse vectors: one shared sparse index for several API replicas.

The in-process :class:`~rag.sparse.bmx.BMXIndex` lives in one process's
memory and files. When several API replicas serve one collection, the BMX leg
needs its postings and its collection statistics in a shared store. This
module keeps both in Qdrant and reproduces :class:`BMXIndex` scores exactly.

Why one dot product cannot be BMX
---------------------------------
BMX (arXiv:2408.06643, eq. 1-6; formula in :mod:`rag.sparse.bmx`) weighs a
query token ``q`` in document ``D`` by::

    IDF(q) * tf * (alpha + 1) / (tf + alpha * |D| / avgdl + alpha * E_avg)

where ``E_avg`` is the mean normalised entropy of *the query's* tokens. The
document-side factor therefore changes from query to query, and the bonus
``beta * S(Q, D) * sum E~(q_i)`` multiplies two sums over the query tokens
found in ``D``. Neither fits a sparse dot product ``sum_t w_q(t) * w_D(t)``
with ``w_D`` fixed at write time: such weights give an approximation, never
BMX.

Design: sparse candidates, exact re-scoring in the API
------------------------------------------------------
* **Postings collection** ``<collection>``: one point per document (id = the
  uuid5 of its id, as in the dense store, so the same chunk has the same point
  id in both), no dense vector, two named sparse vectors over integer term ids:

  - ``tf``: the raw term frequencies (the exact data: re-scoring, statistics
    rebuilds);
  - ``impact``: ``tf * (alpha + 1) / (tf + alpha * |D| / avgdl + alpha)``,
    BMX's saturation with ``E_avg = 1`` and the ``alpha``/``avgdl`` current
    when the document was written (:func:`bmx_impacts`); used only to choose
    candidates, so it may go stale (:meth:`QdrantBMX.reweight` refreshes it).

  Payload: ``chunk_id``, ``len`` (``|D|`` in tokens) and ``seq`` (insertion
  order: BMX ranks ties by it, and an upsert moves a document to the end).
* **Statistics collection** ``<collection>-stats`` (no vectors): one point per
  term (id = uuid5 of the term) with ``{term, tid, df, ent}``, and one meta
  point ``{n_docs, total_len, next_tid, next_seq, generation, pending}``. Term
  ids are assigned here by the writer, so there are no hash collisions.
* **Query** (any replica; a replica keeps no index state): one ``retrieve`` of
  the meta point and the query tokens' term points gives ``N``, ``avgdl``,
  ``df`` and the entropies, hence IDF, ``E~``, ``E_avg``, ``alpha`` and
  ``beta`` exactly as in-process; one sparse ``query_points`` on ``impact``
  (or ``tf``) with weights ``IDF * repeats`` returns the top ``candidates``
  documents with their ``tf`` vectors; :func:`bmx_rescore` computes their exact
  BMX scores (float64) and the best ``k`` are returned, ties by ``seq``.

Every returned score is the exact BMX score for the statistics read. The
ranking equals the in-process one whenever the true top ``k`` are among the
candidates; ``bench/bench_qdrant_bmx.py`` measures how often that holds at each
depth (``bench/results/qdrant_bmx.md``).

Writes (one writer at a time, e.g. the ingest job; replicas only read)
----------------------------------------------------------------------
Statistics are updated incrementally (``df`` and the entropy ``E`` are sums
over postings, so a document's own terms are added or subtracted) in three
steps: (A) the meta point is marked ``pending`` and new terms get their ids
(term points with ``df = 0``); (B) the postings are written or deleted; (C)
the term points and the meta point get the new counts and ``pending`` is
cleared. A reader between A and C sees the new postings with the previous
statistics (scores exact for that snapshot; new terms not yet searchable). A
writer that finds ``pending`` set (a crash between A and C) first rebuilds the
statistics from the postings (:meth:`QdrantBMX.rebuild_stats`). Two writers
at once would lose updates (read-modify-write on the term points).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from rag.errors import InputError, StoreError
from rag.sparse.bmx import (
    bmx_default_alpha,
    bmx_default_beta,
    bmx_entropy_terms,
    bmx_idf,
    bmx_normalizer,
    bmx_query_entropies,
    bmx_term_scores,
    upsert_batch,
)
from rag.vectors.base import point_id
from rag.vectors.client import call_qdrant, is_local_client

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = [
    "DEFAULT_CANDIDATES",
    "Candidate",
    "CandidateVector",
    "CollectionStats",
    "QdrantBMX",
    "QueryPlan",
    "TermStats",
    "bmx_impacts",
    "bmx_rescore",
]

CandidateVector = Literal["impact", "tf"]
FloatArray = npt.NDArray[np.float64]

TF_VECTOR = "tf"
IMPACT_VECTOR = "impact"
#: ``E_avg`` assumed by the impact weights (a one-token query's value).
IMPACT_ENTROPY = 1.0
#: Candidates re-scored per query unless the caller asks otherwise (see bench/results/qdrant_bmx.md).
DEFAULT_CANDIDATES = 100
#: Points per write request, ids per read request.
WRITE_BATCH = 256
READ_BATCH = 1024
STATS_SUFFIX = "-stats"

#: Namespace of term point ids (never change it: stored ids depend on it).
TERM_NAMESPACE = uuid.UUID("0b8e6f3c-7a51-5d2e-8c4f-1e9a2d6b3c70")
#: Id of the meta point in the statistics collection.
META_POINT = str(uuid.uuid5(TERM_NAMESPACE, "\x00collection-statistics"))
_POSTING_PAYLOAD = ["chunk_id", "len", "seq"]


def term_point_id(term: str) -> str:
    """The statistics point id of a term."""
    return str(uuid.uuid5(TERM_NAMESPACE, term))


# ----------------------------------------------------------------------------- pure scoring functions


def bmx_impacts(
    tf: npt.ArrayLike, doc_len: npt.ArrayLike, *, avgdl: float, alpha: float, entropy: float = IMPACT_ENTROPY
) -> FloatArray:
    """Document-side candidate weights: BMX's term saturation with a fixed ``E_avg``.

    ``tf * (alpha + 1) / (tf + alpha * |D| / avgdl + alpha * entropy)`` (arXiv:2408.06643, eq. 1 with
    ``IDF = 1`` and ``E_avg = entropy``). The query side supplies ``IDF * repeats``.
    """
    return bmx_term_scores(tf, doc_len, idf=1.0, avgdl=avgdl, alpha=alpha, avg_entropy=entropy)


def bmx_rescore(
    tf: npt.ArrayLike,
    doc_len: npt.ArrayLike,
    mult: npt.ArrayLike,
    *,
    df: npt.ArrayLike,
    ent: npt.ArrayLike,
    n_docs: int,
    avgdl: float,
    alpha: float,
    beta: float,
) -> FloatArray:
    """Exact BMX scores of candidate documents (arXiv:2408.06643, eq. 1-6, as in :mod:`rag.sparse.bmx`).

    ``tf``: shape (candidates, terms), the frequency of each of the query's
    distinct known terms in each candidate (0 = absent); ``doc_len``: each
    candidate's length in tokens; ``mult``: how often each term occurs in the
    query; ``df``/``ent``: each term's document frequency and entropy sum
    ``E(q)`` over the whole collection. The arithmetic follows
    :meth:`BMXIndex._score <rag.sparse.bmx.BMXIndex>` step by step, so the
    scores agree to the last bits.
    """
    f = np.asarray(tf, dtype=np.float64)
    if f.ndim != 2:
        raise InputError(f"tf must be a (candidates, terms) matrix, got shape {f.shape}")
    m = np.asarray(mult, dtype=np.float64)
    n_tokens = float(m.sum())
    if f.shape[1] != m.shape[0] or n_tokens <= 0:
        raise InputError("tf columns, mult, df and ent must describe the same non-empty set of terms")
    ent_norm, _ = bmx_query_entropies(ent)
    avg_entropy = float((ent_norm * m).sum() / n_tokens)
    idf = bmx_idf(n_docs, df)
    lnorm = np.asarray(doc_len, dtype=np.float64) * (alpha / avgdl)
    const = alpha * avg_entropy
    present = f > 0.0
    base = np.zeros(f.shape[0], dtype=np.float64)
    for j in range(f.shape[1]):
        col = f[:, j]
        den = lnorm + col + const
        part = col * (float(idf[j]) * (alpha + 1.0) * float(m[j]))
        base += np.divide(part, den, out=np.zeros_like(part), where=present[:, j])
    cnt = present.astype(np.float64) @ m
    ent_sum = present.astype(np.float64) @ (m * ent_norm)
    return np.asarray(base + (cnt / n_tokens) * beta * ent_sum, dtype=np.float64)


# ----------------------------------------------------------------------------- statistics records


@dataclass(frozen=True)
class CollectionStats:
    """The meta point: collection-wide counts and the writer's counters."""

    n_docs: int = 0
    total_len: int = 0
    next_tid: int = 0
    next_seq: int = 0
    generation: int = 0
    pending: bool = False

    @property
    def avgdl(self) -> float:
        return self.total_len / self.n_docs if self.n_docs else 0.0

    @classmethod
    def from_payload(cls, payload: dict[str, Any] | None) -> CollectionStats:
        if not payload:
            return cls()
        try:
            return cls(
                n_docs=int(payload["n_docs"]),
                total_len=int(payload["total_len"]),
                next_tid=int(payload["next_tid"]),
                next_seq=int(payload["next_seq"]),
                generation=int(payload["generation"]),
                pending=bool(payload["pending"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"BMX statistics point is corrupt: {exc}") from exc


@dataclass
class TermStats:
    """A term point: its id in the sparse vectors, document frequency and entropy sum."""

    term: str
    tid: int
    df: int = 0
    ent: float = 0.0

    @classmethod
    def from_payload(cls, payload: dict[str, Any] | None) -> TermStats:
        if payload is None:
            raise StoreError("BMX term statistics point has no payload")
        try:
            return cls(str(payload["term"]), int(payload["tid"]), int(payload["df"]), float(payload["ent"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"BMX term statistics point is corrupt: {exc}") from exc


@dataclass(frozen=True)
class QueryPlan:
    """What a query needs from the statistics: its known terms and the collection constants."""

    tids: np.ndarray  # term ids, in order of first occurrence in the query
    mult: FloatArray  # repeats of each term in the query
    df: FloatArray
    ent: FloatArray
    n_docs: int
    avgdl: float
    alpha: float
    beta: float


@dataclass(frozen=True)
class Candidate:
    """A candidate document: its id, the frequency of each planned term in it, length and insertion number."""

    chunk_id: str
    tf: FloatArray
    length: int
    seq: int


@dataclass
class _Posting:
    """A stored document: sorted term ids, their frequencies, its length and insertion number."""

    tids: np.ndarray
    tfs: np.ndarray
    length: int
    seq: int = 0
    chunk_id: str = ""


# ----------------------------------------------------------------------------- the index


class QdrantBMX:
    """A BMX index whose postings and statistics live in Qdrant (see the module docstring).

    ``client``: any ``QdrantClient`` (a server, or local mode in tests); the
    index owns it and :meth:`close` closes it. ``alpha``/``beta``/
    ``normalize_scores`` as in :class:`~rag.sparse.bmx.BMXIndex` (every replica
    must use the same values). ``candidates``: documents re-scored per query
    (at least ``k``). ``candidate_vector``: ``"impact"`` or ``"tf"``.
    ``shard_number``/``replication_factor`` are passed when the postings
    collection is created (server only).
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str = "chunks-bmx",
        *,
        alpha: float | None = None,
        beta: float | None = None,
        normalize_scores: bool = False,
        candidates: int = DEFAULT_CANDIDATES,
        candidate_vector: CandidateVector = "impact",
        shard_number: int | None = None,
        replication_factor: int | None = None,
        where: str | None = None,
    ) -> None:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise InputError(f"BMX {name} must be a finite number >= 0, got {value!r}")
        if candidates < 1:
            raise InputError(f"candidates must be >= 1, got {candidates}")
        if candidate_vector not in (IMPACT_VECTOR, TF_VECTOR):
            raise InputError(f"candidate_vector must be 'impact' or 'tf', got {candidate_vector!r}")
        from qdrant_client import models

        self._models = models
        self.client = client
        self.collection = collection
        self.stats_collection = collection + STATS_SUFFIX
        self.alpha = alpha
        self.beta = beta
        self.normalize_scores = bool(normalize_scores)
        self.candidates = candidates
        self.candidate_vector: CandidateVector = candidate_vector
        options = getattr(client, "init_options", {}) or {}
        self.where = where or str(options.get("url") or options.get("path") or options.get("location"))
        self._closed = False
        self._ensure_collections(shard_number, replication_factor)

    # ------------------------------------------------------------------ plumbing

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise StoreError(f"BMX index {self.collection!r} at {self.where} is closed")
        return call_qdrant(self.where, fn, *args, **kwargs)

    def _ensure_collections(self, shard_number: int | None, replication_factor: int | None) -> None:
        models = self._models
        server = not is_local_client(self.client)
        options = {
            key: value
            for key, value in (("shard_number", shard_number), ("replication_factor", replication_factor))
            if value is not None and server
        }
        if self._call(self.client.collection_exists, self.collection):
            info = self._call(self.client.get_collection, self.collection)
            sparse = info.config.params.sparse_vectors or {}
            if TF_VECTOR not in sparse or IMPACT_VECTOR not in sparse:
                raise StoreError(
                    f"collection {self.collection!r} at {self.where} has no '{TF_VECTOR}' and "
                    f"'{IMPACT_VECTOR}' sparse vectors: not a BMX index",
                    hint="choose another collection name",
                )
        else:
            self._call(
                self.client.create_collection,
                self.collection,
                vectors_config={},
                sparse_vectors_config={
                    TF_VECTOR: models.SparseVectorParams(),
                    IMPACT_VECTOR: models.SparseVectorParams(),
                },
                **options,
            )
        if not self._call(self.client.collection_exists, self.stats_collection):
            rf = (
                {"replication_factor": options["replication_factor"]}
                if "replication_factor" in options
                else {}
            )
            self._call(self.client.create_collection, self.stats_collection, vectors_config={}, **rf)
            if server:  # the writer looks terms up by id; local mode warns that indexes do nothing
                self._call(
                    self.client.create_payload_index,
                    self.stats_collection,
                    "tid",
                    models.PayloadSchemaType.INTEGER,
                )

    def _chunks(self, items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
        for start in range(0, len(items), size):
            yield items[start : start + size]

    # ------------------------------------------------------------------ statistics I/O

    def stats(self) -> CollectionStats:
        """The collection statistics as stored now."""
        records = self._call(self.client.retrieve, self.stats_collection, ids=[META_POINT], with_payload=True)
        return CollectionStats.from_payload(records[0].payload if records else None)

    def __len__(self) -> int:
        return self.stats().n_docs

    def term_stats(self, terms: Iterable[str]) -> dict[str, TermStats]:
        """Stored statistics of these terms (terms never seen are absent)."""
        names = list(dict.fromkeys(terms))
        out: dict[str, TermStats] = {}
        for part in self._chunks(names, READ_BATCH):
            ids = [term_point_id(t) for t in part]
            for rec in self._call(self.client.retrieve, self.stats_collection, ids=ids, with_payload=True):
                ts = TermStats.from_payload(rec.payload)
                out[ts.term] = ts
        return out

    def _terms_by_tid(self, tids: Iterable[int]) -> dict[int, TermStats]:
        models = self._models
        wanted = sorted(set(tids))
        out: dict[int, TermStats] = {}
        for part in self._chunks(wanted, READ_BATCH):
            flt = models.Filter(
                must=[models.FieldCondition(key="tid", match=models.MatchAny(any=list(part)))]
            )
            offset: Any = None
            while True:
                records, offset = self._call(
                    self.client.scroll,
                    self.stats_collection,
                    scroll_filter=flt,
                    limit=READ_BATCH,
                    offset=offset,
                    with_payload=True,
                )
                for rec in records:
                    ts = TermStats.from_payload(rec.payload)
                    out[ts.tid] = ts
                if offset is None:
                    break
        missing = [t for t in wanted if t not in out]
        if missing:
            raise StoreError(
                f"BMX index {self.collection!r}: term ids {missing[:5]} have no statistics point",
                hint="the statistics collection was changed by hand; re-index",
            )
        return out

    def _write_terms(self, terms: Iterable[TermStats]) -> None:
        points = [
            self._models.PointStruct(id=term_point_id(ts.term), vector={}, payload=asdict(ts)) for ts in terms
        ]
        for part in self._chunks(points, READ_BATCH):
            self._call(self.client.upsert, self.stats_collection, points=list(part), wait=True)

    def _write_meta(self, stats: CollectionStats) -> None:
        point = self._models.PointStruct(id=META_POINT, vector={}, payload=asdict(stats))
        self._call(self.client.upsert, self.stats_collection, points=[point], wait=True)

    # ------------------------------------------------------------------ postings I/O

    @staticmethod
    def _posting(record: Any) -> _Posting:
        vec = (record.vector or {}).get(TF_VECTOR)
        payload = record.payload or {}
        tids = np.asarray(vec.indices if vec is not None else [], dtype=np.int64)
        tfs = np.asarray(vec.values if vec is not None else [], dtype=np.float64)
        if tids.shape[0] > 1 and np.any(np.diff(tids) < 0):
            order = np.argsort(tids, kind="stable")
            tids, tfs = tids[order], tfs[order]
        return _Posting(
            tids,
            tfs,
            int(payload.get("len", 0)),
            int(payload.get("seq", 0)),
            str(payload.get("chunk_id", "")),
        )

    def _read_postings(self, chunk_ids: Sequence[str]) -> dict[str, _Posting]:
        out: dict[str, _Posting] = {}
        for part in self._chunks(list(chunk_ids), READ_BATCH):
            records = self._call(
                self.client.retrieve,
                self.collection,
                ids=[point_id(c) for c in part],
                with_payload=_POSTING_PAYLOAD,
                with_vectors=[TF_VECTOR],
            )
            for rec in records:
                p = self._posting(rec)
                out[p.chunk_id] = p
        return out

    def _scroll_postings(self) -> Iterable[tuple[Any, _Posting]]:
        offset: Any = None
        while True:
            records, offset = self._call(
                self.client.scroll,
                self.collection,
                limit=READ_BATCH,
                offset=offset,
                with_payload=_POSTING_PAYLOAD,
                with_vectors=[TF_VECTOR],
            )
            for rec in records:
                yield rec.id, self._posting(rec)
            if offset is None:
                return

    def _sparse(self, tids: np.ndarray, values: np.ndarray) -> Any:
        return self._models.SparseVector(indices=tids.tolist(), values=values.tolist())

    # ------------------------------------------------------------------ updates

    def _recover(self, stats: CollectionStats) -> CollectionStats:
        """Rebuild the statistics if an earlier write stopped between its steps."""
        if stats.pending:
            self.rebuild_stats()
            return self.stats()
        return stats

    def upsert(self, ids: Sequence[str], docs: Sequence[Sequence[str]]) -> None:
        """Add documents given as token lists; an existing id is replaced (and moves to the end).

        A repeated id within one call keeps its last token list.
        """
        batch = upsert_batch(ids, docs)
        for doc in batch.values():
            bad = next((t for t in doc if not isinstance(t, str)), None)
            if bad is not None:
                raise InputError(f"tokens must be strings, got {type(bad).__name__}")
        if not batch:
            return
        stats = self._recover(self.stats())
        counted = [(doc_id, Counter(doc), len(doc)) for doc_id, doc in batch.items()]
        by_term = self.term_stats(t for _, c, _ in counted for t in c)
        old = self._read_postings(list(batch))
        old_tids = {int(t) for p in old.values() for t in p.tids.tolist()}
        by_tid = {ts.tid: ts for ts in by_term.values()}
        if not old_tids <= by_tid.keys():
            for tid, ts in self._terms_by_tid(old_tids - by_tid.keys()).items():
                by_tid[tid] = ts
                by_term[ts.term] = ts

        # (A) reserve ids for new terms, mark the write as pending
        next_tid = stats.next_tid
        new_terms: list[TermStats] = []
        for _, c, _ in counted:
            for term in c:
                if term not in by_term:
                    ts = TermStats(term, next_tid)
                    next_tid += 1
                    by_term[term] = by_tid[ts.tid] = ts
                    new_terms.append(ts)
        self._write_terms(new_terms)
        self._write_meta(CollectionStats(**{**asdict(stats), "next_tid": next_tid, "pending": True}))

        # statistics after the batch: replaced documents out (in batch order), new ones in
        n_docs, total_len = stats.n_docs, stats.total_len
        for doc_id in batch:
            p = old.get(doc_id)
            if p is not None:
                self._subtract(p, by_tid)
                n_docs -= 1
                total_len -= p.length
        rows: list[tuple[str, np.ndarray, np.ndarray, int]] = []
        for doc_id, c, length in counted:
            tids = np.fromiter((by_term[t].tid for t in c), dtype=np.int64, count=len(c))
            tfs = np.fromiter(c.values(), dtype=np.float64, count=len(c))
            order = np.argsort(tids, kind="stable")
            rows.append((doc_id, tids[order], tfs[order], length))
        self._add([(r[1], r[2]) for r in rows], by_tid)
        n_docs += len(rows)
        total_len += sum(r[3] for r in rows)
        avgdl = total_len / n_docs if n_docs else 1.0
        alpha = bmx_default_alpha(avgdl) if self.alpha is None else self.alpha

        # (B) postings
        points = []
        seq = stats.next_seq
        for doc_id, tids, tfs, length in rows:
            impacts = bmx_impacts(tfs, np.full(tfs.shape, length), avgdl=avgdl, alpha=alpha)
            points.append(
                self._models.PointStruct(
                    id=point_id(doc_id),
                    vector={TF_VECTOR: self._sparse(tids, tfs), IMPACT_VECTOR: self._sparse(tids, impacts)},
                    payload={"chunk_id": doc_id, "len": length, "seq": seq},
                )
            )
            seq += 1
        for part in self._chunks(points, WRITE_BATCH):
            self._call(self.client.upsert, self.collection, points=list(part), wait=True)

        # (C) statistics
        touched = {int(t) for _, tids, _, _ in rows for t in tids.tolist()} | old_tids
        self._write_terms(by_tid[t] for t in sorted(touched))
        self._write_meta(
            CollectionStats(n_docs, total_len, next_tid, seq, stats.generation + 1, pending=False)
        )

    def delete(self, ids: Iterable[str]) -> int:
        """Remove documents by id; unknown ids are ignored. Returns how many were removed."""
        wanted = [i for i in dict.fromkeys(ids) if isinstance(i, str)]
        if not wanted:
            return 0
        stats = self._recover(self.stats())
        found = self._read_postings(wanted)
        old = [found[i] for i in wanted if i in found]
        if not old:
            return 0
        by_tid = self._terms_by_tid({int(t) for p in old for t in p.tids.tolist()})
        self._write_meta(CollectionStats(**{**asdict(stats), "pending": True}))
        for part in self._chunks([point_id(p.chunk_id) for p in old], WRITE_BATCH):
            selector = self._models.PointIdsList(points=list(part))
            self._call(self.client.delete, self.collection, points_selector=selector, wait=True)
        for p in old:
            self._subtract(p, by_tid)
        self._write_terms(by_tid.values())
        n_docs = stats.n_docs - len(old)
        total_len = 0 if n_docs == 0 else stats.total_len - sum(p.length for p in old)
        self._write_meta(
            CollectionStats(n_docs, total_len, stats.next_tid, stats.next_seq, stats.generation + 1)
        )
        return len(old)

    @staticmethod
    def _subtract(p: _Posting, by_tid: dict[int, TermStats]) -> None:
        """Take one document's postings out of the term statistics (as BMXIndex._delete_slots does)."""
        for tid, e in zip(p.tids.tolist(), bmx_entropy_terms(p.tfs).tolist(), strict=True):
            ts = by_tid[tid]
            ts.df -= 1
            ts.ent = ts.ent - e if ts.df > 0 else 0.0

    @staticmethod
    def _add(rows: list[tuple[np.ndarray, np.ndarray]], by_tid: dict[int, TermStats]) -> None:
        """Add a batch's postings to the term statistics: per term, the batch's entropy shares are summed
        in document order and then added (as BMXIndex.upsert does with one bincount)."""
        if not rows:
            return
        tids = np.concatenate([r[0] for r in rows])
        if tids.shape[0] == 0:
            return
        shares = bmx_entropy_terms(np.concatenate([r[1] for r in rows]))
        uniq, keys = np.unique(tids, return_inverse=True)
        df = np.bincount(keys, minlength=uniq.shape[0])
        ent = np.bincount(keys, weights=shares, minlength=uniq.shape[0])
        for tid, d, e in zip(uniq.tolist(), df.tolist(), ent.tolist(), strict=True):
            ts = by_tid[tid]
            ts.df += d
            ts.ent += e

    def rebuild_stats(self) -> CollectionStats:
        """Recount every statistic from the postings (repairs an interrupted write). Returns the result."""
        terms: dict[int, TermStats] = {}
        meta = CollectionStats()
        offset: Any = None
        while True:
            records, offset = self._call(
                self.client.scroll, self.stats_collection, limit=READ_BATCH, offset=offset, with_payload=True
            )
            for rec in records:
                if str(rec.id) == META_POINT:
                    meta = CollectionStats.from_payload(rec.payload)
                else:
                    ts = TermStats.from_payload(rec.payload)
                    terms[ts.tid] = TermStats(ts.term, ts.tid)
            if offset is None:
                break
        postings = sorted((p for _, p in self._scroll_postings()), key=lambda p: p.seq)
        unknown = {int(t) for p in postings for t in p.tids.tolist()} - terms.keys()
        if unknown:
            raise StoreError(
                f"BMX index {self.collection!r}: postings use term ids without a statistics point "
                f"({sorted(unknown)[:5]})",
                hint="re-index this collection",
            )
        self._add([(p.tids, p.tfs) for p in postings], terms)
        next_tid = max([meta.next_tid, *(t + 1 for t in terms)])
        next_seq = max([meta.next_seq, *(p.seq + 1 for p in postings)])
        self._write_terms(terms.values())
        result = CollectionStats(
            len(postings), sum(p.length for p in postings), next_tid, next_seq, meta.generation + 1
        )
        self._write_meta(result)
        return result

    def reweight(self) -> int:
        """Recompute every document's candidate weights with the current ``avgdl`` and ``alpha``.

        Impacts are written with the statistics of their time; after the
        collection has grown or shrunk a lot this restores candidate quality.
        Returns the number of documents rewritten.
        """
        stats = self.stats()
        if stats.n_docs == 0:
            return 0
        alpha = bmx_default_alpha(stats.avgdl) if self.alpha is None else self.alpha
        batch: list[Any] = []
        done = 0
        for pid, p in self._scroll_postings():
            impacts = bmx_impacts(p.tfs, np.full(p.tfs.shape, p.length), avgdl=stats.avgdl, alpha=alpha)
            batch.append(
                self._models.PointVectors(id=pid, vector={IMPACT_VECTOR: self._sparse(p.tids, impacts)})
            )
            if len(batch) >= WRITE_BATCH:
                self._call(self.client.update_vectors, self.collection, points=batch, wait=True)
                done += len(batch)
                batch = []
        if batch:
            self._call(self.client.update_vectors, self.collection, points=batch, wait=True)
            done += len(batch)
        return done

    # ------------------------------------------------------------------ search

    def search(
        self, query: Sequence[str], k: int, *, candidates: int | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` best documents for a token list, best first, as ``(id, score)``.

        Same contract as :meth:`BMXIndex.search <rag.sparse.bmx.BMXIndex.search>`: unknown
        tokens are ignored, a query with no known token gives ``[]``, documents
        with no query token are never returned, ties rank by insertion order.
        ``candidates`` overrides the re-scoring depth for this call. Two
        requests: :meth:`prepare` (statistics) and :meth:`fetch_candidates`.
        """
        if k < 0:
            raise InputError(f"k must be >= 0, got {k}")
        plan = self.prepare(query)
        if plan is None or k == 0:
            return []
        return self.rank(plan, self.fetch_candidates(plan, max(k, candidates or self.candidates)), k)

    def prepare(self, query: Sequence[str]) -> QueryPlan | None:
        """Read the statistics a query needs (one request); None when no query token is known."""
        if isinstance(query, str | bytes):
            raise InputError("a BMX query must be a list of tokens, not a string")
        counts = Counter(t for t in query if isinstance(t, str))
        if not counts:
            return None
        ids = [META_POINT, *(term_point_id(t) for t in counts)]
        records = self._call(self.client.retrieve, self.stats_collection, ids=ids, with_payload=True)
        stats = CollectionStats()
        found: dict[str, TermStats] = {}
        for rec in records:
            if str(rec.id) == META_POINT:
                stats = CollectionStats.from_payload(rec.payload)
            else:
                ts = TermStats.from_payload(rec.payload)
                found[ts.term] = ts
        known = [(found[t], times) for t, times in counts.items() if t in found and found[t].df > 0]
        if stats.n_docs == 0 or not known:
            return None
        avgdl = stats.avgdl
        return QueryPlan(
            tids=np.array([ts.tid for ts, _ in known], dtype=np.int64),
            mult=np.array([times for _, times in known], dtype=np.float64),
            df=np.array([ts.df for ts, _ in known], dtype=np.float64),
            ent=np.array([ts.ent for ts, _ in known], dtype=np.float64),
            n_docs=stats.n_docs,
            avgdl=avgdl,
            alpha=bmx_default_alpha(avgdl) if self.alpha is None else self.alpha,
            beta=bmx_default_beta(stats.n_docs) if self.beta is None else self.beta,
        )

    def fetch_candidates(self, plan: QueryPlan, limit: int) -> list[Candidate]:
        """The ``limit`` best documents by the sparse dot product on the candidate vector (one request),
        best first, with their term frequencies for the query's terms."""
        if limit < 1:
            raise InputError(f"limit must be >= 1, got {limit}")
        order = np.argsort(plan.tids, kind="stable")
        weights = bmx_idf(plan.n_docs, plan.df) * plan.mult
        response = self._call(
            self.client.query_points,
            self.collection,
            query=self._sparse(plan.tids[order], weights[order]),
            using=self.candidate_vector,
            limit=limit,
            with_payload=_POSTING_PAYLOAD,
            with_vectors=[TF_VECTOR],
        )
        out: list[Candidate] = []
        for point in response.points:
            p = self._posting(point)
            tf = np.zeros(plan.tids.shape[0], dtype=np.float64)
            if p.tids.shape[0]:
                pos = np.minimum(np.searchsorted(p.tids, plan.tids), p.tids.shape[0] - 1)
                hit = p.tids[pos] == plan.tids
                tf[hit] = p.tfs[pos[hit]]
            out.append(Candidate(p.chunk_id, tf, p.length, p.seq))
        return out

    def rank(self, plan: QueryPlan, candidates: Sequence[Candidate], k: int) -> list[tuple[str, float]]:
        """Exact BMX scores of ``candidates`` (:func:`bmx_rescore`); the best ``k``, ties by insertion."""
        if not candidates or k <= 0:
            return []
        scores = bmx_rescore(
            np.stack([c.tf for c in candidates]),
            np.array([c.length for c in candidates], dtype=np.float64),
            plan.mult,
            df=plan.df,
            ent=plan.ent,
            n_docs=plan.n_docs,
            avgdl=plan.avgdl,
            alpha=plan.alpha,
            beta=plan.beta,
        )
        seqs = np.array([c.seq for c in candidates], dtype=np.int64)
        keep = np.flatnonzero(scores > 0.0)
        ranked = keep[np.lexsort((seqs[keep], -scores[keep]))][:k]
        out = scores[ranked]
        if self.normalize_scores:
            out = out / bmx_normalizer(int(plan.mult.sum()), plan.n_docs)
        return [
            (candidates[i].chunk_id, float(v)) for i, v in zip(ranked.tolist(), out.tolist(), strict=True)
        ]

    def search_many(
        self, queries: Sequence[Sequence[str]], k: int, *, candidates: int | None = None
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each query."""
        return [self.search(q, k, candidates=candidates) for q in queries]

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()

    def __enter__(self) -> QdrantBMX:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"QdrantBMX({self.collection!r} at {self.where}, alpha={self.alpha}, beta={self.beta}, "
            f"candidates={self.candidates}, candidate_vector={self.candidate_vector!r})"
        )
