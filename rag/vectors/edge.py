"""The embedded default: ``qdrant-edge-py``, Qdrant's engine in-process, with HNSW.

One shard directory per collection, ``<path>/<collection>/``. Writes go to the
shard's write-ahead log before :meth:`EdgeVectorStore.upsert` returns, so a
process killed mid-write reopens with every acknowledged operation (the WAL is
replayed on load; each upsert/delete batch of up to :data:`WRITE_BATCH` points
is applied whole or not at all). The WAL is not fsynced per operation: after a
power cut only what :meth:`~EdgeVectorStore.close` (or :meth:`flush`) made
durable is guaranteed.

Edge runs no background optimizer. New points land in a plain (brute-force)
segment; :meth:`optimize` builds the HNSW graph over segments larger than the
indexing threshold and merges small ones. :meth:`close` runs it when this
handle wrote something, so a finished ingest leaves an indexed shard; segments
below the threshold are searched exactly, which stays fast.

One process at a time. ``EdgeShard.load`` opens (and repairs) the segments
*before* it takes its own lock on the WAL directory: a second process that
merely tried to open a shard held elsewhere used to replay the payload
tracker's journal into ``tracker.dat`` and delete ``tracker_journal.dat``
under the owner's feet, and the owner's next flush failed with "tracker journal
... is shorter than expected". So a shard is never loaded unless this handle
first holds an exclusive ``flock`` on ``<path>/.<collection>.lock`` (kept until
:meth:`close`) and the shard's own WAL lock is free; otherwise opening raises
:class:`~rag.errors.StoreLockedError` having written nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import DependencyMissingError, StoreError, StoreLockedError
from rag.vectors.base import (
    PAYLOAD_KEY,
    Hit,
    as_matrix,
    as_query,
    as_vectors,
    check_k,
    check_upsert,
    first_limit,
    hit,
    point_id,
    reindex_hint,
    top_k,
)

if TYPE_CHECKING:
    import qdrant_edge

#: Points per update operation (one WAL record each).
WRITE_BATCH = 1024
#: Records per scroll page in :meth:`EdgeVectorStore.ids`.
SCROLL_PAGE = 10_000

_CONFIG_FILE = "edge_config.json"
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _edge() -> Any:
    try:
        import qdrant_edge
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyMissingError(
            "the 'edge' vector store needs qdrant-edge-py", hint="pip install qdrant-edge-py"
        ) from exc
    return qdrant_edge


def _stored_dim(shard_dir: Path) -> int | None:
    """The vector size recorded in an existing shard's config, if readable."""
    try:
        config = json.loads((shard_dir / _CONFIG_FILE).read_text(encoding="utf-8"))
        return int(config["vectors"][""]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _locked(shard: Path) -> StoreLockedError:
    return StoreLockedError(
        f"vector store {shard} is open in another process",
        hint="the process that owns this data dir holds it; `rag` commands go through a running "
        "`rag serve`, or wait for the other process to finish",
    )


def _hold(lock_path: Path, shard: Path) -> int:
    """Take the exclusive open lock of a shard (non-blocking), or raise without touching it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _locked(shard) from None
    return fd


def _check_wal_free(shard: Path) -> None:
    """Raise if a process (one that predates the open lock, say) holds the shard's WAL lock.

    qdrant-edge takes ``flock(LOCK_EX)`` on the ``wal`` directory; probing it the same way and
    letting go at once tells whether loading would collide, before anything is read or written.
    """
    wal = shard / "wal"
    if not wal.is_dir():
        return
    fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _locked(shard) from None
    finally:
        os.close(fd)


class EdgeVectorStore:
    """:class:`~rag.vectors.base.VectorStore` on a ``qdrant_edge.EdgeShard``.

    ``hnsw_m`` / ``hnsw_ef_construct`` shape the graph (fixed when a segment is
    indexed); ``hnsw_ef`` is the search beam, recall against latency: at 100k
    embedding-like 384-d vectors, recall@10 is 0.95 at 128, 0.98 at 256 (about
    2 ms on 2 busy cores), 0.99 at 512 (``bench/results/vectors.md``).
    ``indexing_threshold_kb`` is the segment size above which a graph is built
    (Qdrant's default, 10 000 KB, is about 6 500 vectors of 384 floats).
    """

    def __init__(
        self,
        path: Path,
        collection: str,
        dim: int,
        *,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        hnsw_ef: int = 256,
        indexing_threshold_kb: int = 10_000,
    ) -> None:
        if not _COLLECTION_RE.match(collection):
            raise StoreError(f"invalid collection name {collection!r}", hint="use letters, digits, _ . -")
        if dim < 1:
            raise StoreError(f"invalid vector dimension {dim}")
        self.dim = dim
        self.path = Path(path) / collection
        self.hnsw_ef = hnsw_ef
        self._dirty = False
        self._closed = False
        self._lock_fd: int | None = None
        edge = _edge()
        self._edge = edge
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine),
            hnsw_config=edge.HnswIndexConfig(
                m=hnsw_m, ef_construct=hnsw_ef_construct, full_scan_threshold=indexing_threshold_kb
            ),
            optimizers=edge.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
        )
        self._lock_fd = _hold(Path(path) / f".{collection}.lock", self.path)
        try:
            _check_wal_free(self.path)
            self._shard: qdrant_edge.EdgeShard = self._open(config)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _open(self, config: Any) -> Any:
        exists = (self.path / _CONFIG_FILE).exists() or (self.path / "segments").exists()
        if exists:
            stored = _stored_dim(self.path)
            if stored is not None and stored != self.dim:
                raise StoreError(
                    f"vector store {self.path} holds {stored}-d vectors, the embedder makes {self.dim}-d",
                    hint=reindex_hint(self.path),
                )
        try:
            if exists:
                return self._edge.EdgeShard.load(str(self.path), config)
            self.path.mkdir(parents=True, exist_ok=True)
            return self._edge.EdgeShard.create(str(self.path), config)
        except Exception as exc:  # qdrant_edge raises plain Exception with a message
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> StoreError:
        msg = str(exc)
        if "WouldBlock" in msg:
            return _locked(self.path)
        if "ncompatible" in msg:
            return StoreError(f"vector store {self.path} does not match: {msg}", hint=reindex_hint(self.path))
        return StoreError(f"vector store {self.path} is unusable: {msg}")

    def _call(self, method: str, *args: Any) -> Any:
        if self._closed:
            raise StoreError(f"vector store {self.path} is closed")
        try:
            return getattr(self._shard, method)(*args)
        except Exception as exc:
            raise self._translate(exc) from exc

    # -- writes ---------------------------------------------------------------

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        id_list, arr = check_upsert(ids, vectors, self.dim)
        edge = self._edge
        for start in range(0, len(id_list), WRITE_BATCH):
            batch = id_list[start : start + WRITE_BATCH]
            rows = arr[start : start + WRITE_BATCH].tolist()
            points = [
                edge.Point(point_id(cid), row, {PAYLOAD_KEY: cid})
                for cid, row in zip(batch, rows, strict=True)
            ]
            self._dirty = True
            self._call("update", edge.UpdateOperation.upsert_points(points))

    def delete(self, ids: Sequence[str]) -> None:
        pids = [point_id(str(cid)) for cid in ids]
        for start in range(0, len(pids), WRITE_BATCH):
            self._dirty = True
            self._call("update", self._edge.UpdateOperation.delete_points(pids[start : start + WRITE_BATCH]))

    # -- reads ----------------------------------------------------------------

    def _request(self, vector: list[float], limit: int, *, with_vector: bool = False) -> Any:
        edge = self._edge
        return edge.QueryRequest(
            limit=limit,
            query=edge.Query.Nearest(vector),
            with_payload=[PAYLOAD_KEY],
            with_vector=with_vector,
            params=edge.SearchParams(hnsw_ef=max(self.hnsw_ef, limit)),
        )

    @staticmethod
    def _hits(points: list[Any]) -> list[Hit]:
        return [hit(p.payload[PAYLOAD_KEY], p.score) for p in points]

    def _fetch(self, vector: list[float]) -> Callable[[int], list[Hit]]:
        return lambda limit: self._hits(self._call("query", self._request(vector, limit)))

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        k = check_k(k)
        return top_k(self._fetch(as_query(vector, self.dim).tolist()), k)

    def search_with_vectors(self, vector: np.ndarray, k: int) -> tuple[list[Hit], dict[str, np.ndarray]]:
        k = check_k(k)
        query = as_query(vector, self.dim).tolist()
        points: dict[str, Any] = {}

        def fetch(limit: int) -> list[Hit]:
            # the vectors stay in the engine's records until read: only the hits kept are converted
            got = self._call("query", self._request(query, limit, with_vector=True))
            points.clear()
            points.update((p.payload[PAYLOAD_KEY], p) for p in got)
            return self._hits(got)

        hits = top_k(fetch, k)
        return hits, as_vectors((cid, points[cid].vector) for cid, _ in hits)

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        k = check_k(k)
        queries = as_matrix(vectors, self.dim).tolist()
        if not queries:
            return []
        limit = first_limit(k)
        batch = self._edge.QueryBatchRequest([self._request(q, limit) for q in queries])
        firsts = self._call("query_batch", batch)
        return [top_k(self._fetch(q), k, self._hits(first)) for q, first in zip(queries, firsts, strict=True)]

    def ids(self) -> set[str]:
        edge = self._edge
        out: set[str] = set()
        offset = None
        while True:
            request = edge.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=[PAYLOAD_KEY])
            records, offset = self._call("scroll", request)
            out.update(r.payload[PAYLOAD_KEY] for r in records)
            if offset is None:
                return out

    def count(self) -> int:
        return int(self._call("count", self._edge.CountRequest(exact=True)))

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        id_list = [str(cid) for cid in ids]
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(id_list), WRITE_BATCH):
            pids = [point_id(cid) for cid in id_list[start : start + WRITE_BATCH]]
            records = self._call("retrieve", pids, [PAYLOAD_KEY], True)
            out.update(as_vectors((r.payload[PAYLOAD_KEY], r.vector) for r in records))
        return out

    # -- maintenance ----------------------------------------------------------

    def optimize(self) -> bool:
        """Build HNSW graphs and merge segments now (blocking); True if anything changed."""
        return bool(self._call("optimize"))

    def flush(self) -> None:
        """Write every pending change to the segment files."""
        self._call("flush")

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._dirty:
                self.optimize()
            self.flush()
        finally:
            self._closed = True
            try:
                self._shard.close()
            finally:
                self._release()

    def __enter__(self) -> EdgeVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
