"""The retrieval legs, each an index derived from the chunk store.

A leg keeps itself in step with the store by diffing chunk ids (the store is
the source of truth): ``sync`` adds what is new and removes what is gone, so it
is idempotent and recovers from any interruption. Each leg records the store
generation it reflects, so an up-to-date leg costs nothing to check.

:class:`Leg` declares everything callers use. A sync may be split in two
(:mod:`rag.serving` does, to keep searches waiting as little as possible):
``prepare(store)`` does the slow part (embedding, entity extraction) while
searches go on, writing nothing a search reads; the ``sync`` to the same store
then mostly writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import StoreError
from rag.store import ChunkStore

if TYPE_CHECKING:
    import numpy as np

    from rag.embed import Embedder, EmbeddingCache
    from rag.settings import EmbeddingSettings, SparseSettings, VectorSettings
    from rag.sparse.bmx import BMXIndex
    from rag.sparse.tokenize import Tokenizer
    from rag.vectors import VectorStore

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: int
    removed: int
    took_s: float
    #: seconds per ingest phase this sync spent (``bmx``; ``embed`` and ``vectors``; ``graph``)
    phases: dict[str, float] = field(default_factory=dict)


#: Chunks embedded per batch when :meth:`DenseLeg.prepare` warms the embedding cache.
WARM_BATCH = 256
#: Chunks per dense batch in :meth:`DenseLeg.sync`: each batch is embedded (and committed to the
#: embedding cache), then upserted, so a run killed half way loses at most one batch of model time.
#: Small, because on 2 CPU cores e5-small embeds 3-10 chunks/s.
DENSE_BATCH = 32
#: The dense leg makes its vector upserts durable (and writes its progress file) at least this often.
DENSE_FLUSH_S = 5.0
#: Name of the phase each leg's sync reports (``rag ingest --json`` ``phases``; progress items).
LEG_PHASE = {"sparse": "bmx", "dense": "embed", "graph": "graph"}


class Leg(Protocol):
    """A retrieval leg: an index derived from the chunk store."""

    name: str
    #: The store generation the leg reflects (None: never synced).
    generation: int | None

    def search(self, query: str, k: int) -> dict[str, float]:
        """``{chunk_id: score}`` of the best ``k`` chunks for ``query``."""
        ...

    def prepare(self, store: ChunkStore) -> None:
        """The slow part of the next :meth:`sync` to ``store``, done ahead; writes nothing searched."""
        ...

    def sync(self, store: ChunkStore, progress: ProgressFn | None = None) -> SyncResult:
        """Bring the leg to ``store``'s generation (idempotent, resumable)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Facts for status pages: at least ``chunks``."""
        ...

    def flush(self) -> None:
        """Make every change durable."""
        ...

    def close(self) -> None: ...


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, path)


def _diff(store: ChunkStore, have: set[str]) -> tuple[list[str], list[str]]:
    want = store.chunk_ids()
    return sorted(want - have), sorted(have - want)


class SparseLeg:
    """BMX over the tokenized chunk text (heading path + body), persisted under ``<dir>``."""

    name = "sparse"

    def __init__(
        self, directory: Path, tokenizer: Tokenizer, *, alpha: float | None, beta: float | None
    ) -> None:
        from rag.sparse.bmx import BMXIndex

        self.dir = directory
        self.tokenizer = tokenizer
        self._state_path = directory / "state.json"
        self._params = {"tokenizer": tokenizer.fingerprint(), "alpha": alpha, "beta": beta}
        state = _read_state(self._state_path)
        index_dir = directory / "bmx"
        self.index: BMXIndex
        if state.get("params") == self._params and index_dir.exists():
            try:
                self.index = BMXIndex.load(index_dir)
            except StoreError:
                self.index, state = BMXIndex(alpha=alpha, beta=beta), {}
        else:  # first use, or tokenizer/parameters changed: rebuild from the store
            self.index, state = BMXIndex(alpha=alpha, beta=beta), {}
        self.generation: int | None = state.get("generation")

    def search(self, query: str, k: int) -> dict[str, float]:
        tokens = self.tokenizer(query)
        if not tokens or not len(self.index):
            return {}
        return dict(self.index.search(tokens, k))

    def search_and_scorer(
        self, query: str, k: int
    ) -> tuple[dict[str, float], Callable[[list[str]], dict[str, float]]]:
        """:meth:`search`, and :meth:`score_ids` for the same query from the same scoring pass."""
        tokens = self.tokenizer(query)
        hits, scorer = self.index.search_and_scorer(tokens, k)
        return dict(hits), scorer

    def score_ids(self, query: str, ids: list[str]) -> dict[str, float]:
        """The BMX score of each indexed chunk of ``ids`` for ``query`` (0 where it holds no
        query token), whether or not :meth:`search` would rank it."""
        return self.index.score_ids(self.tokenizer(query), ids)

    def sync(self, store: ChunkStore, progress: ProgressFn | None = None) -> SyncResult:
        t0 = time.perf_counter()
        generation = store.generation()
        if generation == self.generation:
            return SyncResult(0, 0, 0.0)
        add, remove = _diff(store, set(self.index.ids()))
        if remove:
            self.index.delete(remove)
        done = 0
        for i in range(0, len(add), 2000):
            chunks = store.get_chunks(add[i : i + 2000])
            self.index.upsert([c.chunk_id for c in chunks], [self.tokenizer(c.index_text()) for c in chunks])
            done += len(chunks)
            if progress:
                progress(done, len(add), "bmx")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index.save(self.dir / "bmx")
        _write_state(self._state_path, {"params": self._params, "generation": generation})
        self.generation = generation
        took = time.perf_counter() - t0
        return SyncResult(len(add), len(remove), took, {"bmx": took})

    def prepare(self, store: ChunkStore) -> None:
        """Nothing to do ahead: a publish syncs a second copy of this leg off to the side."""

    def stats(self) -> dict[str, Any]:
        return {"chunks": len(self.index)}

    def flush(self) -> None:
        """Nothing pending: :meth:`sync` saves the index before it returns."""

    def close(self) -> None:
        pass


class DenseLeg:
    """Embeddings of chunk text in a vector store; an embedding cache avoids re-embedding unchanged text.

    The dense leg may lag behind the others: :meth:`sync` embeds in batches of
    :data:`DENSE_BATCH`, each committed to the embedding cache as soon as it is embedded and
    upserted into the vector store, so a run killed half way resumes where it stopped (the
    cache answers for everything already embedded). Until a sync finishes, the leg covers part
    of the store (:meth:`coverage`); hybrid search leaves the rest to the other legs
    (:func:`fill_uncovered`). ``progress.json`` beside the index tells other processes how
    far it got.
    """

    name = "dense"

    def __init__(
        self,
        directory: Path,
        embedder: Embedder,
        cache: EmbeddingCache,
        vectors: VectorStore,
        *,
        batch: int = DENSE_BATCH,
    ) -> None:
        self.dir = directory
        self.embedder = embedder
        self.cache = cache
        self.vectors = vectors
        self.batch = batch
        self._state_path = directory / f"state-{_safe(embedder.name)}.json"
        self.generation: int | None = _read_state(self._state_path).get("generation")
        self._ids: set[str] | None = None  # ids in the vector store, loaded on first need

    def embedded_ids(self) -> set[str]:
        """Chunk ids that have a vector (kept in step by :meth:`sync`)."""
        if self._ids is None:
            self._ids = set(self.vectors.ids())
        return self._ids

    def coverage(self, store: ChunkStore) -> float:
        """Share of ``store``'s chunks with a vector (1.0 when the leg reflects its generation)."""
        if self.generation == store.generation():
            return 1.0
        total = store.count_chunks()
        if not total:
            return 1.0
        return min(1.0, len(self.embedded_ids() & store.chunk_ids()) / total)

    def prepare(self, store: ChunkStore) -> None:
        """Embed (into the embedding cache) the chunks of ``store`` the vector store lacks, so
        the sync that follows finds every vector in the cache and only upserts."""
        missing = sorted(store.chunk_ids() - self.embedded_ids())
        for i in range(0, len(missing), WARM_BATCH):
            chunks = store.get_chunks(missing[i : i + WARM_BATCH])
            self.cache.embed_passages(self.embedder, [c.index_text() for c in chunks])

    def stats(self) -> dict[str, Any]:
        return {"chunks": len(self.embedded_ids()), "model": self.embedder.name}

    def flush(self) -> None:
        flush = getattr(self.vectors, "flush", None)
        if flush is not None:
            flush()

    def search(self, query: str, k: int) -> dict[str, float]:
        qv = self.embed_query(query)
        return {} if qv is None else self.search_vector(qv, k)

    def embed_query(self, query: str) -> np.ndarray | None:
        """The query's vector (None for a blank query)."""
        import numpy as np

        if not query.strip():
            return None
        return np.asarray(self.embedder.embed_queries([query])[0], dtype=np.float32)

    def search_vector(self, vector: np.ndarray, k: int) -> dict[str, float]:
        """``{chunk_id: cosine}`` of the best ``k`` chunks for a query vector."""
        return dict(self.vectors.search(vector, k))

    def search_vector_with_vectors(
        self, vector: np.ndarray, k: int
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """:meth:`search_vector` and the stored vector of each hit, read by the search itself
        (fusion that re-scores its candidates then fetches only the chunks other legs found)."""
        hits, vectors = self.vectors.search_with_vectors(vector, k)
        return dict(hits), vectors

    def vectors_of(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The stored vector of each chunk of ``ids`` that has one."""
        return self.vectors.vectors(ids)

    def sync(
        self,
        store: ChunkStore,
        progress: ProgressFn | None = None,
        *,
        guard: Callable[[], Any] | None = None,
    ) -> SyncResult:
        """Bring the vectors to ``store``: removals first, then the missing chunks batch by batch.

        ``guard`` (a context manager factory) is entered around each write to the vector store
        (the serving engine passes its write lock, so searches see whole batches)."""
        t0 = time.perf_counter()
        generation = store.generation()
        if generation == self.generation:
            return SyncResult(0, 0, 0.0)
        phases = {"embed": 0.0, "vectors": 0.0}
        have = self.embedded_ids()
        want = store.chunk_ids()
        add, remove = sorted(want - have), sorted(have - want)
        t = time.perf_counter()
        with _guarded(guard):
            if remove:
                self.vectors.delete(remove)
                have.difference_update(remove)
        phases["vectors"] += time.perf_counter() - t
        done = 0
        last_flush = time.monotonic()
        self._write_progress(store, generation, len(want & have), len(want))
        if progress and add:
            progress(0, len(add), "embed")  # may raise to stop the sync (a cancelled job), before any batch
        for chunks, fetch_s in _length_sorted_batches(store, add, self.batch):
            t = time.perf_counter()
            vecs = self.cache.embed_passages(self.embedder, [c.index_text() for c in chunks])
            phases["embed"] += time.perf_counter() - t + fetch_s
            done += len(chunks)
            if progress:
                progress(done, len(add), "embed")
            t = time.perf_counter()
            with _guarded(guard):
                self.vectors.upsert([c.chunk_id for c in chunks], vecs)
                have.update(c.chunk_id for c in chunks)
            if time.monotonic() - last_flush >= DENSE_FLUSH_S:
                self.flush()
                self._write_progress(store, generation, len(want) - len(add) + done, len(want))
                last_flush = time.monotonic()
            phases["vectors"] += time.perf_counter() - t
            if progress:
                progress(done, len(add), "vectors")
        t = time.perf_counter()
        self.flush()
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_state(self._state_path, {"generation": generation, "model": self.embedder.name})
        self._write_progress(store, generation, len(want), len(want))
        self.generation = generation
        phases["vectors"] += time.perf_counter() - t
        return SyncResult(len(add), len(remove), time.perf_counter() - t0, phases)

    def _write_progress(self, store: ChunkStore, generation: int, embedded: int, total: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_state(
            self.dir / PROGRESS_FILE,
            {"model": self.embedder.name, "generation": generation, "embedded": embedded, "chunks": total},
        )

    def close(self) -> None:
        self.vectors.close()


#: Written by the dense leg as it embeds: ``{"model", "generation", "embedded", "chunks"}``.
PROGRESS_FILE = "progress.json"


def read_dense_progress(data_dir: Path) -> dict[str, Any]:
    """What the dense leg last wrote about its progress (``{}`` when it never ran)."""
    return _read_state(data_dir / "dense" / PROGRESS_FILE)


def _length_sorted_batches(store: ChunkStore, ids: list[str], size: int) -> Iterator[tuple[list[Any], float]]:
    """Batches of ``size`` chunks of ``ids``, read :data:`WARM_BATCH` at a time and sorted by
    length within that window, so a small batch pads about as little as one large call would
    (models pad a batch to its longest text); with the seconds spent reading each window."""
    for i in range(0, len(ids), WARM_BATCH):
        t = time.perf_counter()
        window = sorted(store.get_chunks(ids[i : i + WARM_BATCH]), key=lambda c: len(c.index_text()))
        fetch_s = time.perf_counter() - t
        for j in range(0, len(window), size):
            yield window[j : j + size], fetch_s if j == 0 else 0.0


def _guarded(guard: Callable[[], Any] | None) -> Any:
    import contextlib

    return guard() if guard is not None else contextlib.nullcontext()


def fill_uncovered(per_leg: dict[str, dict[str, float]], embedded: set[str]) -> dict[str, dict[str, float]]:
    """Per-leg scores for fusion while the dense leg covers part of the store.

    A chunk without a vector cannot be returned by the dense leg, so fusion would rank it below
    every embedded chunk of equal sparse score, and below where a sparse-only search puts it.
    Instead each sparse candidate that has no vector gets, for fusion only, the dense score found
    at its own rank in the dense list (the i-th best sparse candidate borrows the i-th best dense
    score): the dense leg, lacking an opinion, takes the sparse leg's. With no vector at all the
    dense leg is left out of fusion. Hits still report ``scores.dense`` as the leg returned it.
    """
    dense = per_leg.get("dense")
    sparse = per_leg.get("sparse")
    if dense is None or sparse is None:
        return per_leg
    if not dense:
        return {name: scores for name, scores in per_leg.items() if name != "dense"}
    dense_sorted = sorted(dense.values(), reverse=True)
    filled = dict(dense)
    # Borrowed scores strictly decrease down the sparse list: past the end of the dense list (or
    # where dense scores tie) equal scores would let a rank-based fusion (RRF) order those chunks
    # by id instead of by their sparse rank.
    step = 1e-9 * max(1.0, abs(dense_sorted[0]), abs(dense_sorted[-1]))
    previous = math.inf
    for rank, (cid, _) in enumerate(sorted(sparse.items(), key=lambda kv: (-kv[1], kv[0]))):
        if cid not in embedded and cid not in filled:
            borrowed = min(dense_sorted[min(rank, len(dense_sorted) - 1)], previous - step)
            filled[cid] = borrowed
            previous = borrowed
    return {**per_leg, "dense": filled}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80]


def sparse_leg(data_dir: Path, settings: SparseSettings) -> SparseLeg:
    """The BMX leg as ``settings`` (the ``sparse`` section) describe it, under ``<data_dir>/sparse``."""
    from rag.sparse.tokenize import Tokenizer

    cjk = settings.cjk
    tokenizer = Tokenizer(cjk=cjk) if cjk else Tokenizer()
    return SparseLeg(data_dir / "sparse", tokenizer, alpha=settings.alpha, beta=settings.beta)


def dense_leg(
    data_dir: Path,
    embedding: EmbeddingSettings,
    vectors: VectorSettings,
    *,
    embedder: Embedder | None = None,
    model_dir: Path | None = None,
) -> DenseLeg:
    """The dense leg as the ``embedding`` and ``vectors`` sections describe it, under
    ``<data_dir>/dense``; ``embedder`` replaces the configured model (tests, benchmarks).
    Converted weights live in ``model_dir`` (None: the per-user model cache), never in the data dir.

    The vector store is opened before anything else of the leg, so a store another process
    holds is refused (:class:`~rag.errors.StoreLockedError`) before any file is touched."""
    from rag.embed import EmbeddingCache, make_embedder
    from rag.vectors import open_vector_store

    emb = embedder or make_embedder(
        embedding.model,
        device=embedding.device,
        batch_size=embedding.batch_size,
        cache_dir=model_dir,
        numpy_queries=embedding.query_runtime == "numpy",
        runtime=embedding.runtime,
        url=embedding.url,
        timeout_s=embedding.timeout_s,
    )
    directory = data_dir / "dense"
    directory.mkdir(parents=True, exist_ok=True)
    backend = vectors.backend
    name = f"{vectors.collection}-{_safe(emb.name)}"
    store = open_vector_store(
        backend,
        path=directory / f"qdrant-{backend}-{name}" if backend != "server" else None,
        url=vectors.url,
        collection=name,
        dim=emb.dim,
        api_key=vectors.api_key,
        shard_number=vectors.shard_number,
        replication_factor=vectors.replication_factor,
    )
    try:
        cache = EmbeddingCache(directory / "embedding-cache.sqlite3")
    except BaseException:
        store.close()
        raise
    return DenseLeg(directory, emb, cache, store)
