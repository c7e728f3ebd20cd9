"""Dense vector stores behind one small Protocol.

=========  ==========================================  ===============================
kind       engine                                      use
=========  ==========================================  ===============================
``edge``   qdrant-edge-py, in process, HNSW            the default: fast, persistent
``local``  qdrant-client local mode, brute force       tests, tiny folders, ``:memory:``
``server`` a Qdrant server through qdrant-client       shared or large deployments
=========  ==========================================  ===============================

The engines (qdrant_edge, qdrant_client) are imported when a store is opened.
"""

from __future__ import annotations

from pathlib import Path

from rag.errors import ConfigError
from rag.vectors.base import PAYLOAD_KEY, Hit, VectorBackend, VectorStore, point_id
from rag.vectors.client import QdrantClientStore, open_local, open_server
from rag.vectors.edge import EdgeVectorStore

__all__ = [
    "PAYLOAD_KEY",
    "EdgeVectorStore",
    "Hit",
    "QdrantClientStore",
    "VectorBackend",
    "VectorStore",
    "open_local",
    "open_server",
    "open_vector_store",
    "point_id",
]


def open_vector_store(
    kind: VectorBackend,
    *,
    path: Path | None,
    url: str | None,
    collection: str,
    dim: int,
    api_key: str | None = None,
    hnsw_ef: int | None = None,
    shard_number: int | None = None,
    replication_factor: int | None = None,
) -> VectorStore:
    """Open (creating if missing) the vector store for ``collection``.

    ``edge`` keeps its shard in ``path/collection/`` (``path`` required);
    ``local`` keeps qdrant-client files in ``path`` (in memory when ``path`` is
    None); ``server`` talks to ``url`` with ``api_key`` and creates the
    collection with ``shard_number``/``replication_factor`` if missing.
    ``hnsw_ef`` is the HNSW search beam (``edge``, ``server``; local mode is
    exact). Raises :class:`~rag.errors.StoreError` when the stored vectors
    have another dimension (the embedding model changed: re-index),
    :class:`~rag.errors.StoreLockedError` when another process has the store
    open (``edge``, ``local`` on disk), :class:`~rag.errors.BackendError` when
    the server cannot be reached.
    """
    if kind == "edge":
        if path is None:
            raise ConfigError("the 'edge' vector store needs a directory (path)")
        if hnsw_ef is None:
            return EdgeVectorStore(Path(path), collection, dim)
        return EdgeVectorStore(Path(path), collection, dim, hnsw_ef=hnsw_ef)
    if kind == "local":
        return open_local(None if path is None else Path(path), collection, dim)
    if kind == "server":
        if not url:
            raise ConfigError("the 'server' vector store needs a URL, e.g. http://localhost:6333")
        return open_server(
            url,
            collection,
            dim,
            api_key=api_key,
            shard_number=shard_number,
            replication_factor=replication_factor,
            hnsw_ef=hnsw_ef,
        )
    raise ConfigError(f"unknown vector store kind {kind!r}; choose edge, local or server")
