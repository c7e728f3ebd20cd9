"""``qdrant-client`` backends: a Qdrant server, or the client's own local mode.

Both are the same class, :class:`QdrantClientStore`; they differ only in how the
``QdrantClient`` is built (:func:`open_local`, :func:`open_server`), so the
congruence tests that run against local mode also exercise every call the
server adapter makes.

Local mode (``QdrantClient(path=...)`` or ``":memory:"``) is brute force and
keeps every vector in Python objects: fine for tests and small folders, slow to
reopen and heavy at 100k chunks (see ``bench/results/vectors.md``).

Server collections are created on first use with cosine distance. For a
cluster, ``shard_number`` (how many shards the collection is split into,
default 1; more shards spread points over more nodes) and
``replication_factor`` (copies of each shard, default 1; 2 or more keeps the
collection available when a node is down) are passed to ``create_collection``;
they are ignored for an existing collection and by local mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from rag.errors import BackendError, DependencyMissingError, RagError, StoreError, StoreLockedError
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
    from qdrant_client import QdrantClient

#: Points per upsert/delete request.
WRITE_BATCH = 1024
#: Records per scroll page in :meth:`QdrantClientStore.ids`.
SCROLL_PAGE = 10_000

T = TypeVar("T")


def _client_module() -> Any:
    try:
        import qdrant_client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyMissingError(
            "the 'local' and 'server' vector stores need qdrant-client", hint="pip install qdrant-client"
        ) from exc
    return qdrant_client


def call_qdrant(where: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` on a ``QdrantClient``, turning failures into :mod:`rag.errors`.

    ``where`` names the store (a path or URL) in messages. Connection problems
    become :class:`~rag.errors.BackendError` with a hint; anything else the
    client raises becomes :class:`~rag.errors.StoreError`.
    """
    try:
        return fn(*args, **kwargs)
    except RagError:
        raise
    except Exception as exc:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(exc, ResponseHandlingException | ConnectionError | TimeoutError):
            raise BackendError(
                f"cannot reach Qdrant at {where}: {exc}",
                hint="is the Qdrant server running, and are the URL and API key right?",
            ) from exc
        if isinstance(exc, UnexpectedResponse):
            hint = "check the API key" if exc.status_code in (401, 403) else None
            raise BackendError(f"Qdrant at {where} answered {exc.status_code}: {exc}", hint=hint) from exc
        raise StoreError(f"vector store {where} failed: {exc}") from exc


def is_local_client(client: QdrantClient) -> bool:
    """True for a ``QdrantClient`` in local mode (``path=...`` or ``":memory:"``), False for a server."""
    options = getattr(client, "init_options", {}) or {}
    return options.get("location") == ":memory:" or options.get("path") is not None


class QdrantClientStore:
    """:class:`~rag.vectors.base.VectorStore` over any ``QdrantClient``.

    The store owns ``client`` and closes it. ``where`` names the store in
    messages (a path or URL). ``hnsw_ef`` is sent as a search parameter (server
    only: local mode searches exactly and warns about search parameters, so
    leave it ``None`` there).
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dim: int,
        *,
        where: str,
        hnsw_ef: int | None = None,
        create_options: dict[str, Any] | None = None,
    ) -> None:
        if dim < 1:
            raise StoreError(f"invalid vector dimension {dim}")
        self.client = client
        self.collection = collection
        self.dim = dim
        self.where = where
        self.hnsw_ef = hnsw_ef
        self._closed = False
        self._models = _client_module().models
        try:
            self._ensure_collection(create_options or {})
        except BaseException:
            self._close_client()
            raise

    # -- plumbing -------------------------------------------------------------

    def _guard(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` on the client, turning failures into :mod:`rag.errors`."""
        if self._closed:
            raise StoreError(f"vector store {self.where} is closed")
        return call_qdrant(self.where, fn, *args, **kwargs)

    def _ensure_collection(self, create_options: dict[str, Any]) -> None:
        models = self._models
        name = self.collection
        if self._guard(self.client.collection_exists, name):
            params = self._guard(self.client.get_collection, name).config.params.vectors
            if not isinstance(params, models.VectorParams):
                raise StoreError(
                    f"collection {name!r} at {self.where} has named vectors: not made by this program",
                    hint="choose another collection name",
                )
            if params.size != self.dim:
                raise StoreError(
                    f"collection {name!r} at {self.where} holds {params.size}-d vectors, "
                    f"the embedder makes {self.dim}-d",
                    hint=reindex_hint(f"collection {name!r}"),
                )
            if params.distance != models.Distance.COSINE:
                raise StoreError(
                    f"collection {name!r} at {self.where} uses {params.distance} distance, not cosine",
                    hint="choose another collection name",
                )
            return
        options = {key: value for key, value in create_options.items() if value is not None}
        vectors = models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
        self._guard(self.client.create_collection, name, vectors_config=vectors, **options)

    # -- writes ---------------------------------------------------------------

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        id_list, arr = check_upsert(ids, vectors, self.dim)
        for start in range(0, len(id_list), WRITE_BATCH):
            batch = id_list[start : start + WRITE_BATCH]
            points = self._models.Batch(
                ids=[point_id(cid) for cid in batch],
                vectors=arr[start : start + WRITE_BATCH].tolist(),
                payloads=[{PAYLOAD_KEY: cid} for cid in batch],
            )
            self._guard(self.client.upsert, self.collection, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        pids = [point_id(str(cid)) for cid in ids]
        for start in range(0, len(pids), WRITE_BATCH):
            selector = self._models.PointIdsList(points=pids[start : start + WRITE_BATCH])
            self._guard(self.client.delete, self.collection, points_selector=selector, wait=True)

    # -- reads ----------------------------------------------------------------

    def _params(self, limit: int) -> Any:
        if self.hnsw_ef is None:
            return None
        return self._models.SearchParams(hnsw_ef=max(self.hnsw_ef, limit))

    @staticmethod
    def _hits(points: list[Any]) -> list[Hit]:
        return [hit(p.payload[PAYLOAD_KEY], p.score) for p in points]

    def _fetch(self, query: list[float]) -> Callable[[int], list[Hit]]:
        def fetch(limit: int) -> list[Hit]:
            response = self._guard(
                self.client.query_points,
                self.collection,
                query=query,
                limit=limit,
                with_payload=[PAYLOAD_KEY],
                search_params=self._params(limit),
            )
            return self._hits(response.points)

        return fetch

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        k = check_k(k)
        return top_k(self._fetch(as_query(vector, self.dim).tolist()), k)

    def search_with_vectors(self, vector: np.ndarray, k: int) -> tuple[list[Hit], dict[str, np.ndarray]]:
        # a fetch by id right after the search, as without this seam: local mode's stored
        # vectors move in their last digits over its first searches, so vectors read with one
        # search need not be the ones a fetch gives next; nothing is saved here (see ``edge``)
        hits = self.search(vector, k)
        return hits, self.vectors([cid for cid, _ in hits])

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        k = check_k(k)
        queries = as_matrix(vectors, self.dim).tolist()
        if not queries:
            return []
        limit = first_limit(k)
        requests = [
            self._models.QueryRequest(
                query=q, limit=limit, with_payload=[PAYLOAD_KEY], params=self._params(limit)
            )
            for q in queries
        ]
        responses = self._guard(self.client.query_batch_points, self.collection, requests=requests)
        return [
            top_k(self._fetch(q), k, self._hits(r.points)) for q, r in zip(queries, responses, strict=True)
        ]

    def ids(self) -> set[str]:
        out: set[str] = set()
        offset: Any = None
        while True:
            records, offset = self._guard(
                self.client.scroll,
                self.collection,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=[PAYLOAD_KEY],
            )
            out.update(r.payload[PAYLOAD_KEY] for r in records if r.payload)
            if offset is None:
                return out

    def count(self) -> int:
        return int(self._guard(self.client.count, self.collection, exact=True).count)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        id_list = [str(cid) for cid in ids]
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(id_list), WRITE_BATCH):
            records = self._guard(
                self.client.retrieve,
                self.collection,
                ids=[point_id(cid) for cid in id_list[start : start + WRITE_BATCH]],
                with_payload=[PAYLOAD_KEY],
                with_vectors=True,
            )
            out.update(as_vectors((r.payload[PAYLOAD_KEY], r.vector) for r in records if r.payload))
        return out

    # -- lifecycle ------------------------------------------------------------

    def _close_client(self) -> None:
        self._closed = True
        self.client.close()

    def close(self) -> None:
        if not self._closed:
            self._close_client()

    def __enter__(self) -> QdrantClientStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_local(path: Path | None, collection: str, dim: int) -> QdrantClientStore:
    """qdrant-client local mode: persistent under ``path``, in memory when ``path`` is None."""
    qdrant_client = _client_module()
    if path is None:
        location = ":memory:"
        client = qdrant_client.QdrantClient(location=location)
    else:
        location = str(path)
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            client = qdrant_client.QdrantClient(path=location)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise StoreLockedError(f"vector store {location} is open in another process") from exc
            raise StoreError(f"vector store {location} is unusable: {exc}") from exc
    return QdrantClientStore(client, collection, dim, where=location)


def open_server(
    url: str,
    collection: str,
    dim: int,
    *,
    api_key: str | None = None,
    shard_number: int | None = None,
    replication_factor: int | None = None,
    hnsw_ef: int | None = None,
    timeout: int | None = None,
    client: QdrantClient | None = None,
) -> QdrantClientStore:
    """A Qdrant server at ``url`` (e.g. ``http://localhost:6333``).

    ``client`` replaces the HTTP client built from ``url``/``api_key`` (the
    tests pass a local-mode one; no server is needed to run them).
    """
    if client is None:
        client = _client_module().QdrantClient(
            url=url, api_key=api_key, timeout=timeout, check_compatibility=False
        )
    return QdrantClientStore(
        client,
        collection,
        dim,
        where=url,
        hnsw_ef=hnsw_ef,
        create_options={"shard_number": shard_number, "replication_factor": replication_factor},
    )
