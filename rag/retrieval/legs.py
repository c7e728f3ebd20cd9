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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import StoreError
from rag.store import ChunkStore

if TYPE_CHECKING:
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


#: Chunks embedded per batch when :meth:`DenseLeg.prepare` warms the embedding cache.
WARM_BATCH = 256


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
                progress(done, len(add), "BMX index")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index.save(self.dir / "bmx")
        _write_state(self._state_path, {"params": self._params, "generation": generation})
        self.generation = generation
        return SyncResult(len(add), len(remove), time.perf_counter() - t0)

    def prepare(self, store: ChunkStore) -> None:
        """Nothing to do ahead: a publish syncs a second copy of this leg off to the side."""

    def stats(self) -> dict[str, Any]:
        return {"chunks": len(self.index)}

    def flush(self) -> None:
        """Nothing pending: :meth:`sync` saves the index before it returns."""

    def close(self) -> None:
        pass


class DenseLeg:
    """Embeddings of chunk text in a vector store; an embedding cache avoids re-embedding unchanged text."""

    name = "dense"

    def __init__(
        self,
        directory: Path,
        embedder: Embedder,
        cache: EmbeddingCache,
        vectors: VectorStore,
        *,
        batch: int = 256,
    ) -> None:
        self.dir = directory
        self.embedder = embedder
        self.cache = cache
        self.vectors = vectors
        self.batch = batch
        self._state_path = directory / f"state-{_safe(embedder.name)}.json"
        self.generation: int | None = _read_state(self._state_path).get("generation")

    def prepare(self, store: ChunkStore) -> None:
        """Embed (into the embedding cache) the chunks of ``store`` the vector store lacks, so
        the sync that follows finds every vector in the cache and only upserts."""
        missing = sorted(store.chunk_ids() - self.vectors.ids())
        for i in range(0, len(missing), WARM_BATCH):
            chunks = store.get_chunks(missing[i : i + WARM_BATCH])
            self.cache.embed_passages(self.embedder, [c.index_text() for c in chunks])

    def stats(self) -> dict[str, Any]:
        return {"chunks": self.vectors.count(), "model": self.embedder.name}

    def flush(self) -> None:
        flush = getattr(self.vectors, "flush", None)
        if flush is not None:
            flush()

    def search(self, query: str, k: int) -> dict[str, float]:
        if not query.strip():
            return {}
        qv = self.embedder.embed_queries([query])[0]
        return dict(self.vectors.search(qv, k))

    def sync(self, store: ChunkStore, progress: ProgressFn | None = None) -> SyncResult:
        t0 = time.perf_counter()
        generation = store.generation()
        if generation == self.generation:
            return SyncResult(0, 0, 0.0)
        add, remove = _diff(store, self.vectors.ids())
        if remove:
            self.vectors.delete(remove)
        done = 0
        for i in range(0, len(add), self.batch):
            chunks = store.get_chunks(add[i : i + self.batch])
            vecs = self.cache.embed_passages(self.embedder, [c.index_text() for c in chunks])
            self.vectors.upsert([c.chunk_id for c in chunks], vecs)
            done += len(chunks)
            if progress:
                progress(done, len(add), f"embedding ({self.embedder.name})")
        self.flush()
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_state(self._state_path, {"generation": generation, "model": self.embedder.name})
        self.generation = generation
        return SyncResult(len(add), len(remove), time.perf_counter() - t0)

    def close(self) -> None:
        self.vectors.close()


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
) -> DenseLeg:
    """The dense leg as the ``embedding`` and ``vectors`` sections describe it, under
    ``<data_dir>/dense``; ``embedder`` replaces the configured model (tests, benchmarks).

    The vector store is opened before anything else of the leg, so a store another process
    holds is refused (:class:`~rag.errors.StoreLockedError`) before any file is touched."""
    from rag.embed import EmbeddingCache, make_embedder
    from rag.vectors import open_vector_store

    emb = embedder or make_embedder(
        embedding.model,
        device=embedding.device,
        batch_size=embedding.batch_size,
        cache_dir=data_dir / "models",
        numpy_queries=embedding.query_runtime == "numpy",
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
