"""The composition root of the core: settings in, a store plus retrieval legs out.

``Engine.open(settings)`` wires the chunk store, the BMX leg and (when a model
is configured) the dense leg. Heavy parts load lazily: a sparse-only search
never imports torch. :func:`make_leg` builds every leg from its settings
sections.

:meth:`Engine.publish` brings the legs to what the chunk store has committed.
A plain engine does it in place (one process, no concurrent readers in it);
:class:`rag.serving.ServingEngine` publishes a new consistent state beside the
one searches see and swaps it in (see :mod:`rag.serving`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag.errors import InputError, StoreLockedError
from rag.retrieval.legs import (
    LEG_PHASE,
    Leg,
    ProgressFn,
    SyncResult,
    dense_leg,
    read_dense_progress,
    sparse_leg,
)
from rag.retrieval.search import LEG_NAMES, Hit, Mode, Retriever
from rag.settings import Settings
from rag.store import ChunkStore

if TYPE_CHECKING:
    from rag.embed import Embedder
    from rag.llm.base import LLM


def available_legs(settings: Settings) -> list[str]:
    """The legs these settings configure: sparse always, dense with a model, graph when enabled."""
    names = ["sparse"]
    if settings.embedding.model.lower() != "none":
        names.append("dense")
    if settings.graph.enabled:
        names.append("graph")
    return names


def make_leg(name: str, settings: Settings, *, embedder: Embedder | None = None) -> Leg:
    """The leg ``name`` as its settings sections describe it (``embedder`` replaces the model)."""
    if name == "sparse":
        return sparse_leg(settings.data_dir, settings.sparse)
    if name == "dense":
        return dense_leg(
            settings.data_dir,
            settings.embedding,
            settings.vectors,
            embedder=embedder,
            model_dir=settings.model_dir,
        )
    if name == "graph":
        from rag.graph import graph_leg

        return graph_leg(settings.data_dir, settings.graph, settings.llm, workers=settings.ingest.workers)
    raise InputError(f"unknown retrieval leg {name!r}", hint="one of: " + ", ".join(LEG_NAMES))


@dataclass(frozen=True, slots=True)
class Published:
    """What one :meth:`Engine.publish` did."""

    generation: int
    previous: int | None
    took_s: float
    locked_ms: float  # how long searches were held back (0 for an engine without readers)
    #: seconds per ingest phase (``bmx``, ``graph``, ``embed``, ``vectors``)
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "previous": self.previous,
            "took_s": round(self.took_s, 3),
            "locked_ms": round(self.locked_ms, 2),
        }


class Engine:
    def __init__(self, settings: Settings, store: ChunkStore, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.store = store
        self._embedder = embedder
        self._legs: dict[str, Leg] = {}
        self._opened: set[str] = set()  # legs whose opening a publish has counted in its phases
        self._rerank_llm: LLM | None = None  # made on first use when retrieval.rerank == "llm"
        self.warnings: list[str] = []

    @classmethod
    def open(cls, settings: Settings, *, create: bool = False, embedder: Embedder | None = None) -> Engine:
        return cls(settings, ChunkStore(settings.data_dir, create=create), embedder=embedder)

    def close(self) -> dict[str, float]:
        """Close the legs and the store; the seconds each took, by ingest phase (closing the
        dense leg builds its vector index: ``vectors``)."""
        took: dict[str, float] = {}
        for name, leg in self._legs.items():
            t = time.perf_counter()
            leg.close()
            phase = "vectors" if name == "dense" else LEG_PHASE.get(name, name)
            took[phase] = took.get(phase, 0.0) + time.perf_counter() - t
        self._legs.clear()
        if self._rerank_llm is not None:
            self._rerank_llm.close()
            self._rerank_llm = None
        if not getattr(self, "_closed", False):
            t = time.perf_counter()
            self.store.close()
            took["store"] = time.perf_counter() - t
            self._closed = True
        return took

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- legs --------------------------------------------------------------------------------------

    def available_legs(self) -> list[str]:
        return available_legs(self.settings)

    def leg(self, name: str) -> Leg:
        if name not in self._legs:
            if name not in self.available_legs():
                raise InputError(
                    f"the {name} leg is not configured",
                    hint={
                        "dense": "set RAG_EMBEDDING__MODEL to enable the dense leg",
                        "graph": "set RAG_GRAPH__ENABLED=true and re-run `rag ingest` to build the entity graph",
                    }.get(name),
                )
            self._legs[name] = self._make_leg(name)
        return self._legs[name]

    def _make_leg(self, name: str) -> Leg:
        return make_leg(name, self.settings, embedder=self._embedder)

    def loaded_legs(self) -> dict[str, Leg]:
        """The legs opened so far, by name."""
        return dict(self._legs)

    def legs_for(self, mode: Mode) -> dict[str, Leg]:
        """The legs a search in ``mode`` runs. In hybrid mode a leg whose store another
        process holds (the embedded vector store is single-process, e.g. while `rag serve`
        runs) is left out with a warning instead of failing the search. A leg with fusion
        weight 0 is not opened for hybrid search (it would add nothing)."""
        if mode != "hybrid":
            return {mode: self.leg(mode)}
        r = self.settings.retrieval
        weight = {"sparse": r.weight_sparse, "dense": r.weight_dense, "graph": r.weight_graph}
        legs: dict[str, Leg] = {}
        for name in self.available_legs():
            if name != "sparse" and weight.get(name, 1.0) <= 0:
                continue
            try:
                legs[name] = self.leg(name)
            except StoreLockedError as exc:
                if name == "sparse":
                    raise
                warning = f"{name} leg skipped: {exc}"
                if warning not in self.warnings:
                    self.warnings.append(warning)
        return legs

    # -- operations --------------------------------------------------------------------------------

    def sync(
        self, legs: Iterable[str] | None = None, progress: ProgressFn | None = None
    ) -> dict[str, SyncResult]:
        """Bring the derived indexes in step with the chunk store."""
        return {n: self.leg(n).sync(self.store, progress) for n in (legs or self.available_legs())}

    def publish(self, *, force: bool = False, progress: ProgressFn | None = None) -> Published | None:
        """Bring every configured leg to the chunk store's committed state; None when all were
        there already (unless ``force``). The caller holds the data dir's writer lock.

        Search first, dense later: the BMX leg (and the graph) sync before the dense leg, and
        each saves its state when done, so searches in other processes work while the dense
        leg still embeds (they use the legs they can open; see :meth:`legs_for`)."""
        t0 = time.perf_counter()
        generation = self.store.generation()
        phases: dict[str, float] = {}
        before: dict[str, int | None] = {}
        for name in search_first(self.available_legs()):
            # each leg is opened right before it syncs: loading the embedding model must not hold
            # back the BMX index (opening a leg is part of its phase)
            t = time.perf_counter()
            leg = self.leg(name)
            if name not in self._opened:
                self._opened.add(name)
                phase = LEG_PHASE.get(name, name)
                phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - t
            before[name] = leg.generation
            add_phases(phases, leg.sync(self.store, phase_progress(name, progress)), name)
        if not force and all(g == generation for g in before.values()):
            return None
        previous = min((g for g in before.values() if g is not None), default=None)
        return Published(generation, previous, time.perf_counter() - t0, 0.0, phases)

    def dense_coverage(self) -> float | None:
        """Share of the chunks the dense leg has embedded (None: no dense leg configured).

        When another process holds the dense leg (an ingest embedding it), the share comes from
        the progress it writes as it goes."""
        if "dense" not in self.available_legs():
            return None
        leg = self._legs.get("dense")
        coverage = getattr(leg, "coverage", None)
        if coverage is not None:
            return round(float(coverage(self.store)), 4)
        info = read_dense_progress(self.settings.data_dir)
        total = self.store.count_chunks()
        if not total:
            return 1.0
        if info.get("generation") != self.store.generation():
            return 0.0 if not info else round(min(1.0, int(info.get("embedded", 0)) / total), 4)
        return round(min(1.0, int(info.get("embedded", 0)) / max(1, int(info.get("chunks", total)))), 4)

    def retriever(self, mode: Mode = "hybrid") -> Retriever:
        llm = self._reranker() if mode == "hybrid" else None
        return Retriever(self.store, self.legs_for(mode), self.settings.retrieval, llm=llm)

    def _reranker(self) -> LLM | None:
        """The configured LLM when hybrid hits are re-ranked by it (``retrieval.rerank == "llm"``)."""
        if self.settings.retrieval.rerank != "llm":
            return None
        if self._rerank_llm is None:
            from rag.llm import make_llm

            self._rerank_llm = make_llm(self.settings.llm)
        return self._rerank_llm

    def search(self, query: str, k: int = 10, mode: Mode = "hybrid") -> list[Hit]:
        return self.retriever(mode).search(query, k, mode)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "documents": self.store.count_documents(),
            "chunks": self.store.count_chunks(),
            "generation": self.store.generation(),
            "legs": {},
        }
        for name, leg in self._legs.items():
            info: dict[str, Any] = {"in_sync": leg.generation == out["generation"]}
            info.update(leg.stats())
            out["legs"][name] = info
        out["dense_coverage"] = self.dense_coverage()
        return out


def search_first(names: Iterable[str]) -> list[str]:
    """Legs in publishing order: the dense leg (slow: a model embeds every chunk) last."""
    return sorted(names, key=lambda n: n == "dense")


def phase_progress(leg: str, progress: ProgressFn | None) -> ProgressFn | None:
    """``progress`` with each report named by the ingest phase of ``leg`` (the dense leg names its
    own two phases, ``embed`` and ``vectors``)."""
    if progress is None or leg == "dense":
        return progress
    phase = LEG_PHASE.get(leg, leg)
    return lambda done, total, _item: progress(done, total, phase)


def add_phases(phases: dict[str, float], result: SyncResult, leg: str) -> None:
    """Add the seconds of one leg's sync to ``phases`` (a leg that names none: all under its phase)."""
    parts = result.phases or ({LEG_PHASE.get(leg, leg): result.took_s} if result.took_s else {})
    for name, seconds in parts.items():
        phases[name] = phases.get(name, 0.0) + seconds
