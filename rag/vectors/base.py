"""The vector-store seam: one small Protocol and the helpers every backend shares.

Chunk ids are arbitrary strings; Qdrant point ids must be unsigned 64-bit
integers or UUIDs. Every backend maps a chunk id to ``uuid5(NAMESPACE, chunk_id)``
(deterministic, collision-free in practice) and keeps the chunk id itself in
the payload under :data:`PAYLOAD_KEY`, so results and :meth:`VectorStore.ids`
return the caller's ids unchanged.

Scores are cosine similarities (vectors are stored normalised), best first,
rounded to :data:`SCORE_DECIMALS` places: engines compute them in float32 or
float64 with noise near 1e-7, so without rounding two chunks with the same
vector could come back in either order. Equal scores are ordered by chunk id,
so every backend returns the same ranking.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from rag.errors import InputError

VectorBackend = Literal["edge", "local", "server"]

#: Payload field that holds the original chunk id.
PAYLOAD_KEY = "chunk_id"

#: Fixed namespace for chunk id -> point id (never change it: stored ids depend on it).
POINT_ID_NAMESPACE = uuid.UUID("6f1d4a52-2b0e-5c1e-9a57-3c0f5e1b7d21")

#: Extra candidates fetched beyond ``k`` so that exact ties at the cut-off are
#: resolved by chunk id rather than by storage order (see :func:`top_k`).
TIE_SLACK = 8

#: Decimal places kept in scores (see the module docstring).
SCORE_DECIMALS = 6

Hit = tuple[str, float]


@runtime_checkable
class VectorStore(Protocol):
    """Dense vectors keyed by chunk id, searched by cosine similarity."""

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace ``vectors[i]`` (float32, normalised) under ``ids[i]``."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove these chunk ids; unknown ids are ignored."""
        ...

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """The ``k`` nearest chunks as ``(chunk_id, cosine)``, best first."""
        ...

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """:meth:`search` for each row of ``vectors``, in one call."""
        ...

    def ids(self) -> set[str]:
        """Every stored chunk id."""
        ...

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalised, float32) vector of each of ``ids`` that is stored; unknown ids
        are left out."""
        ...

    def search_with_vectors(self, vector: np.ndarray, k: int) -> tuple[list[Hit], dict[str, np.ndarray]]:
        """:meth:`search` and the stored vector of each hit (as :meth:`vectors` gives it), read
        by the search itself rather than fetched by id afterwards."""
        ...

    def count(self) -> int:
        """Number of stored vectors."""
        ...

    def close(self) -> None:
        """Make every write durable and release files and locks; idempotent."""
        ...


def reindex_hint(where: object) -> str:
    """The hint for a store whose vector size no longer matches the embedder."""
    return f"the embedding model changed: delete {where} and re-index, or use another data dir"


_NAMESPACE_SHA1 = hashlib.sha1(POINT_ID_NAMESPACE.bytes, usedforsecurity=False)


def point_id(chunk_id: str) -> str:
    """The Qdrant point id (a UUID string) of a chunk id: ``str(uuid.uuid5(POINT_ID_NAMESPACE,
    chunk_id))``, spelled out (RFC 4122 §4.3: SHA-1 of namespace and name, version 5, variant
    bits) from a hash already fed the namespace, three times faster; candidates are looked up by
    it on every query."""
    h = _NAMESPACE_SHA1.copy()
    h.update(chunk_id.encode("utf-8"))
    b = bytearray(h.digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def check_upsert(ids: Sequence[str], vectors: np.ndarray, dim: int) -> tuple[list[str], np.ndarray]:
    """Validate an upsert batch; drop earlier duplicates of an id (the last one wins)."""
    if isinstance(ids, str):
        raise InputError("ids must be a sequence of chunk ids, not one string")
    arr = as_matrix(vectors, dim)
    id_list = [str(i) for i in ids]
    if len(id_list) != arr.shape[0]:
        raise InputError(f"{len(id_list)} ids but {arr.shape[0]} vectors")
    if any(not i for i in id_list):
        raise InputError("chunk ids must be non-empty strings")
    last = {cid: n for n, cid in enumerate(id_list)}
    if len(last) != len(id_list):
        keep = sorted(last.values())
        id_list = [id_list[n] for n in keep]
        arr = arr[keep]
    return id_list, arr


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(n, dim)`` array of finite values."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim == 1 and arr.shape[0] == 0:
        arr = arr.reshape(0, dim)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"expected vectors of shape (n, {dim}), got {tuple(np.shape(vectors))}")
    if not np.isfinite(arr).all():
        raise InputError("vectors contain NaN or infinite values")
    if arr.shape[0] and not np.any(arr, axis=1).all():
        raise InputError("zero vector: cosine similarity is undefined for it")
    return arr


def as_query(vector: np.ndarray, dim: int) -> np.ndarray:
    """One query vector as float32 ``(dim,)``."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise InputError(f"expected one query vector of shape ({dim},), got {arr.shape}")
    return as_matrix(arr[None, :], dim)[0]


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def hit(chunk_id: str, score: float) -> Hit:
    """One result with its score rounded to :data:`SCORE_DECIMALS` places."""
    return chunk_id, round(float(score), SCORE_DECIMALS)


@functools.lru_cache(maxsize=8)
def _float32s(n: int) -> struct.Struct:
    return struct.Struct(f"={n}f")


def as_vectors(records: Iterable[tuple[str, Any]]) -> dict[str, np.ndarray]:
    """``{chunk_id: float32 vector}`` from ``(chunk_id, vector)`` records.

    The engines hand a vector over as a list of Python floats; packing it as C floats and
    viewing the bytes is about twice as fast as ``np.asarray(vec, dtype=np.float32)`` and gives
    the same values (both round each double to the nearest float32; stored vectors are float32
    already, so nothing is rounded at all)."""
    out: dict[str, np.ndarray] = {}
    for cid, vec in records:
        if type(vec) is list and vec:
            out[cid] = np.frombuffer(bytearray(_float32s(len(vec)).pack(*vec)), dtype=np.float32)
        else:
            out[cid] = np.asarray(vec, dtype=np.float32)
    return out


def rank_hits(hits: Iterable[Hit], k: int) -> list[Hit]:
    """Best first by score, ties by chunk id; the first ``k``."""
    return sorted(hits, key=lambda h: (-h[1], h[0]))[:k]


def first_limit(k: int) -> int:
    """How many candidates to ask the engine for on the first try."""
    return k + TIE_SLACK


def settle(hits: list[Hit], k: int, limit: int) -> list[Hit] | None:
    """The top ``k`` of ``limit`` fetched candidates, or None when a tie may run past them.

    Engines order equal scores by storage position. Ranking ``limit > k``
    candidates by (score, id) fixes the order unless the ``k``-th score is still
    tied with the last candidate fetched; then the caller fetches more.
    """
    ranked = rank_hits(hits, len(hits))
    if len(ranked) < limit or ranked[k - 1][1] != ranked[-1][1]:
        return ranked[:k]
    return None


def top_k(fetch: Callable[[int], list[Hit]], k: int, first: list[Hit] | None = None) -> list[Hit]:
    """Deterministic top ``k`` from ``fetch(limit)``, fetching more while a tie spans the cut-off."""
    limit = first_limit(k)
    hits = fetch(limit) if first is None else first
    while True:
        done = settle(hits, k, limit)
        if done is not None:
            return done
        limit *= 4
        hits = fetch(limit)
