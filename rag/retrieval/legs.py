"""The retrieval legs, each an index derived from the chunk store.

A leg keeps itself in step with the store by diffing chunk ids (the store is
the source of truth): ``sync`` adds what is new and removes what is gone, so it
is idempotent and recovers from any interruption. Each leg records the store
generation it reflects, so an up-to-date leg costs nothing to check.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rag.errors import StoreError
from rag.store import ChunkStore

if TYPE_CHECKING:
    from rag.embed import Embedder, EmbeddingCache
    from rag.sparse.bmx import BMXIndex
    from rag.sparse.tokenize import Tokenizer
    from rag.vectors import VectorStore

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: int
    removed: int
    took_s: float


class Leg(Protocol):
    name: str

    def search(self, query: str, k: int) -> dict[str, float]: ...

    def sync(self, store: ChunkStore, progress: ProgressFn | None = None) -> SyncResult: ...

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
        flush = getattr(self.vectors, "flush", None)
        if flush is not None:
            flush()
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_state(self._state_path, {"generation": generation, "model": self.embedder.name})
        self.generation = generation
        return SyncResult(len(add), len(remove), time.perf_counter() - t0)

    def close(self) -> None:
        self.vectors.close()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80]


def sparse_leg(data_dir: Path, *, cjk: str | None, alpha: float | None, beta: float | None) -> SparseLeg:
    from rag.sparse.tokenize import Tokenizer

    tokenizer = Tokenizer(cjk=cjk) if cjk else Tokenizer()  # type: ignore[arg-type]
    return SparseLeg(data_dir / "sparse", tokenizer, alpha=alpha, beta=beta)


def dense_leg(
    data_dir: Path,
    *,
    model: str,
    device: str,
    batch_size: int,
    backend: str,
    url: str | None,
    api_key: str | None,
    collection: str,
    embedder: Embedder | None = None,
    shard_number: int | None = None,
    replication_factor: int | None = None,
    numpy_queries: bool = False,
) -> DenseLeg:
    from rag.embed import EmbeddingCache, make_embedder
    from rag.vectors import open_vector_store

    emb = embedder or make_embedder(
        model,
        device=device,
        batch_size=batch_size,
        cache_dir=data_dir / "models",
        numpy_queries=numpy_queries,
    )
    directory = data_dir / "dense"
    directory.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(directory / "embedding-cache.sqlite3")
    name = f"{collection}-{_safe(emb.name)}"
    vectors = open_vector_store(
        backend,  # type: ignore[arg-type]
        path=directory / f"qdrant-{backend}-{name}" if backend != "server" else None,
        url=url,
        collection=name,
        dim=emb.dim,
        api_key=api_key,
        shard_number=shard_number,
        replication_factor=replication_factor,
    )
    return DenseLeg(directory, emb, cache, vectors)
