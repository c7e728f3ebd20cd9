"""Passage embeddings kept on disk so that re-ingesting unchanged text costs no model time.

One SQLite file, one row per (embedder name, SHA-256 of the passage text)
holding the float32 vector as a blob. The embedder's ``name`` names the model
and every setting that changes its vectors, so switching models re-embeds.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import numpy as np

from rag.embed.base import Embedder
from rag.errors import BackendError, StoreError

__all__ = ["EmbeddingCache", "text_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_sha256)
) WITHOUT ROWID
"""
T = TypeVar("T")
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's bound-parameter limit


def text_key(text: str) -> bytes:
    """SHA-256 digest of the UTF-8 bytes of ``text`` (lone surrogates kept, not rejected)."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


def _chunks(items: Sequence[bytes], size: int) -> Iterable[Sequence[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EmbeddingCache:
    """Read-through cache of passage embeddings in the SQLite file ``path``.

    Only texts not yet stored for ``embedder.name`` go to the model, in
    batches of ``batch_size``; each batch is committed as soon as it is
    embedded, so an interrupted run keeps what it finished. Safe to share
    between threads (one connection guarded by a lock; concurrent misses of
    the same text are embedded twice and stored once).
    """

    def __init__(self, path: Path, *, batch_size: int = 256) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the embedding cache {self.path}: {exc}",
                hint="delete the file; it is rebuilt on the next ingest",
            ) from exc

    # -- public API ------------------------------------------------------
    def embed_passages(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        """``embedder.embed_passages(texts)``, served from the cache where possible."""
        keys = [text_key(t) for t in texts]
        unique: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            unique.setdefault(key, text)
        found = self._lookup(embedder.name, embedder.dim, list(unique))
        missing = [key for key in unique if key not in found]
        for batch in _chunks(missing, self.batch_size):
            vectors = np.asarray(embedder.embed_passages([unique[k] for k in batch]), dtype=np.float32)
            if vectors.shape != (len(batch), embedder.dim):
                raise BackendError(
                    f"embedder {embedder.name!r} returned shape {vectors.shape} for {len(batch)} texts "
                    f"(expected ({len(batch)}, {embedder.dim}))"
                )
            self._store(embedder.name, embedder.dim, batch, vectors)
            found.update(zip(batch, vectors, strict=True))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        out = np.empty((len(texts), embedder.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            out[row] = found[key]
        return out

    def count(self, model: str | None = None) -> int:
        """Number of stored vectors, for one embedder name or all."""
        sql, args = ("SELECT COUNT(*) FROM embeddings", tuple[str, ...]())
        if model is not None:
            sql, args = ("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,))
        with self._lock:
            return int(self._run(lambda: self._conn.execute(sql, args).fetchone()[0]))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- storage ---------------------------------------------------------
    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise StoreError(
                f"embedding cache {self.path} failed: {exc}",
                hint="delete the file; it is rebuilt on the next ingest",
            ) from exc

    def _lookup(self, model: str, dim: int, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}

        def read() -> None:
            for chunk in _chunks(keys, _LOOKUP_CHUNK):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT text_sha256, vector FROM embeddings WHERE model = ? AND dim = ? "
                    f"AND text_sha256 IN ({marks})",
                    (model, dim, *chunk),
                )
                for key, blob in rows:
                    if len(blob) == 4 * dim:
                        found[bytes(key)] = np.frombuffer(blob, dtype="<f4").astype(np.float32)

        with self._lock:
            self._run(read)
        return found

    def _store(self, model: str, dim: int, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        rows = [
            (model, key, dim, vec.astype("<f4").tobytes()) for key, vec in zip(keys, vectors, strict=True)
        ]

        def write() -> None:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO embeddings (model, text_sha256, dim, vector) VALUES (?, ?, ?, ?)",
                    rows,
                )

        with self._lock:
            self._run(write)
