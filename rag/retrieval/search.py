"""Hybrid search: run the legs, fuse, attach chunk data and per-leg scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rag.errors import InputError
from rag.models import Chunk
from rag.retrieval.fusion import Feedback, feedback_search, fuse, ranked
from rag.retrieval.legs import Leg, fill_uncovered
from rag.settings import RetrievalSettings
from rag.store import ChunkStore

if TYPE_CHECKING:
    from rag.llm.base import LLM

Mode = Literal["hybrid", "sparse", "dense", "graph"]
LEG_NAMES = ("sparse", "dense", "graph")
MAX_K = 1000


@dataclass(slots=True)
class Hit:
    rank: int
    chunk: Chunk
    score: float
    scores: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        """The HIT object of the CLI/HTTP contract."""
        c = self.chunk
        return {
            "rank": self.rank,
            "chunk_id": c.chunk_id,
            "doc_id": c.doc_id,
            "source": c.source,
            "page": c.page,
            "start": c.start,
            "end": c.end,
            "heading": c.heading,
            "text": c.text,
            "score": self.score,
            "scores": self.scores,
        }


class Retriever:
    """Searches the available legs and fuses them as configured."""

    def __init__(
        self,
        store: ChunkStore,
        legs: Mapping[str, Leg],
        settings: RetrievalSettings,
        *,
        llm: LLM | None = None,
    ) -> None:
        self.store = store
        self.legs = dict(legs)
        self.settings = settings
        #: the model that re-ranks hybrid hits when ``settings.rerank == "llm"`` (none: no re-ranking)
        self.llm = llm

    def weights(self) -> dict[str, float]:
        s = self.settings
        return {"sparse": s.weight_sparse, "dense": s.weight_dense, "graph": s.weight_graph}

    def leg_scores(self, query: str, k: int, mode: Mode) -> dict[str, dict[str, float]]:
        if mode == "hybrid":
            names = [n for n in LEG_NAMES if n in self.legs and self.weights()[n] > 0]
        elif mode in self.legs:
            names = [mode]
        else:
            raise InputError(
                f"the {mode} leg is not available in this index",
                hint="available: " + ", ".join(["hybrid", *self.legs]),
            )
        depth = max(k, self.settings.candidates)
        return {n: self.legs[n].search(query, depth) for n in names}

    def covered(self, per_leg: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Fusion input while the dense leg is still embedding: chunks it has no vector for are
        not ranked down for it (:func:`~rag.retrieval.legs.fill_uncovered`)."""
        dense = self.legs.get("dense")
        embedded = getattr(dense, "embedded_ids", None)
        if dense is None or embedded is None or dense.generation == self.store.generation():
            return per_leg
        return fill_uncovered(per_leg, embedded())

    def rescorable(self) -> bool:
        """Whether re-scoring fusion (``rescored``, ``prf``) can run: both the sparse and the
        dense leg take part, offer the per-chunk seams, and the dense leg covers the store."""
        sparse, dense = self.legs.get("sparse"), self.legs.get("dense")
        w = self.weights()
        return (
            w["sparse"] > 0
            and w["dense"] > 0
            and hasattr(sparse, "search_and_scorer")
            and all(hasattr(dense, a) for a in ("embed_query", "search_vector", "vectors_of"))
            and getattr(dense, "generation", None) == self.store.generation()
        )

    def feedback_order(
        self, query: str, k: int
    ) -> tuple[dict[str, dict[str, float]], list[tuple[str, float]]]:
        """Each leg's own list and the re-scored (``rescored``) or feedback (``prf``) ranking."""
        s = self.settings
        sparse, dense = self.legs["sparse"], self.legs["dense"]
        depth = max(k, s.candidates)
        qv = dense.embed_query(query)  # type: ignore[attr-defined]
        hits, sparse_scores = sparse.search_and_scorer(query, depth)  # type: ignore[attr-defined]
        per_leg = {"sparse": hits}
        per_leg.update(
            {
                n: self.legs[n].search(query, depth)
                for n in ("graph",)
                if n in self.legs and self.weights()[n] > 0
            }
        )
        if qv is None:  # a blank query: nothing for the dense leg
            return per_leg, []
        feedback = (
            Feedback(
                first_dense_weight=s.prf_first_dense_weight, m=s.prf_m, beta=s.prf_beta, search=s.prf_search
            )
            if s.fusion == "prf"
            else None
        )
        known = None
        if feedback and not feedback.search and hasattr(dense, "search_vector_with_vectors"):
            # ``prf`` re-scores every candidate with the feedback query, so it needs the stored
            # vector of each dense hit: the dense search reads them on its way (cheaper than a
            # fetch by id), and only the chunks the sparse leg alone found are fetched
            per_leg["dense"], known = dense.search_vector_with_vectors(qv, depth)
        else:
            per_leg["dense"] = dense.search_vector(qv, depth)  # type: ignore[attr-defined]
        order = feedback_search(
            per_leg,
            qv,
            sparse_scores=sparse_scores,
            vectors=dense.vectors_of,  # type: ignore[attr-defined]
            weights=self.weights(),
            feedback=feedback,
            dense_search=(lambda v: dense.search_vector(v, depth)) if feedback and feedback.search else None,  # type: ignore[attr-defined]
            known=known,
        )
        return per_leg, order

    def search(self, query: str, k: int = 10, mode: Mode = "hybrid") -> list[Hit]:
        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
        feedback = mode == "hybrid" and self.settings.fusion in ("rescored", "prf")
        if feedback and self.rescorable():
            per_leg, order = self.feedback_order(query, k)
        else:
            per_leg = self.leg_scores(query, k, mode)
            fusable = self.covered(per_leg) if mode == "hybrid" else per_leg
            if mode == "hybrid" and len(fusable) > 1:
                # re-scoring needs a dense leg that covers the store: until then, z-scores over
                # each leg's own list (the closest family)
                method = "zscore" if feedback else self.settings.fusion
                order = fuse(fusable, method=method, weights=self.weights(), rrf_k=self.settings.rrf_k)  # type: ignore[arg-type]
            else:
                order = ranked(next(iter(fusable.values()), {}))
        rerank = mode == "hybrid" and self.settings.rerank == "llm" and self.llm is not None
        top = order[: max(k, self.settings.rerank_depth) if rerank else k]
        chunks = {c.chunk_id: c for c in self.store.get_chunks([cid for cid, _ in top])}
        hits: list[Hit] = []
        for cid, fused in top:
            chunk = chunks.get(cid)
            if chunk is None:  # the index is ahead of/behind the store for a moment: skip
                continue
            scores: dict[str, float | None] = {
                n: per_leg[n].get(cid) if n in per_leg else None for n in LEG_NAMES
            }
            scores["fused"] = fused
            hits.append(Hit(rank=len(hits) + 1, chunk=chunk, score=fused, scores=scores))
        if rerank and self.llm is not None:
            from rag.retrieval.rerank import llm_order

            head = hits[: self.settings.rerank_depth]
            order_ = llm_order(self.llm, query, [h.chunk.text for h in head])
            hits = [head[i] for i in order_] + hits[len(head) :]
            for rank, h in enumerate(hits, start=1):
                h.rank = rank
        return hits[:k]
