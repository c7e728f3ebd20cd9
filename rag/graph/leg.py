"""The ``graph`` retrieval leg: entities of the question, their chunks and their 1-hop neighbours.

Scoring (pure functions below, golden tests in ``tests/test_graph_leg.py``).
With ``N`` chunks in the graph, ``df(e)`` the chunks mentioning entity ``e``,
``tf(e, c)`` its count in chunk ``c`` and ``w(e, n)`` the chunks in which ``e``
and ``n`` are both salient (the edge weight):

* ``idf(e) = ln(1 + (N - df + 0.5) / (df + 0.5))``: the BM25 inverse document
  frequency in its non-negative form (Robertson & Zaragoza, "The Probabilistic
  Relevance Framework: BM25 and Beyond", 2009; Lucene's variant);
* every query entity ``q`` weighs ``idf(q)``;
* every neighbour ``n`` of a query entity (not itself a query entity) weighs
  ``hop_decay * w(q, n) / df(q) * idf(n)``, summed over the query entities it
  neighbours: ``w(q, n) / df(q)`` is the share of ``q``'s chunks where ``n``
  appears beside it, an estimate of P(n | q). Only the ``max_neighbours``
  heaviest neighbours of each query entity are followed;
* ``score(c) = sum over weighted entities x of weight(x) * sat(tf(x, c))`` with
  ``sat(tf) = tf (k1 + 1) / (tf + k1)``, k1 = 1.2: BM25's term-frequency
  saturation without length normalisation.

A chunk thus scores like a BM25 match over entities instead of words, plus a
damped match on what the question's entities are usually written with.

The leg keeps itself in step with the chunk store the way the sparse leg does:
by chunk-id diff and the store generation; a change of extractor, alias table
or rules (the fingerprint in ``meta``) rebuilds it from the store. A sync can
be done in two steps (a published engine does, :mod:`rag.serving`): ``prepare``
computes the diff and extracts the entities of the chunks to add, in memory,
writing nothing, while searches go on; the ``sync`` that follows, to the same
store generation, only writes. Any other sync does the whole work itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rag.errors import LLMError
from rag.graph.extract import Mention, RuleExtractor
from rag.graph.normalize import load_alias_table
from rag.graph.store import GraphStore
from rag.retrieval.legs import ProgressFn, SyncResult
from rag.store import ChunkStore

if TYPE_CHECKING:
    from rag.graph.llm import LLMExtractor
    from rag.models import Chunk
    from rag.settings import GraphSettings, LLMSettings

__all__ = ["K1", "GraphLeg", "bm25_idf", "entity_weights", "graph_leg", "saturate", "score_chunks"]

K1 = 1.2
RULES_BATCH = 1000  # chunks per transaction with the rule extractor
PARALLEL_MIN_CHUNKS = 4000  # syncs this large extract in worker processes (starting them costs ~2 s)
PARALLEL_BATCH = 500
MAX_LLM_FAILURES = 3  # consecutive failed chunks before a sync stops asking the model
PREPARE_MAX_CHUNKS = 20_000  # chunks prepare extracts ahead (~10 KB each in memory); sync does the rest


def bm25_idf(n_chunks: int, df: int) -> float:
    """``ln(1 + (N - df + 0.5) / (df + 0.5))``."""
    return math.log(1.0 + (n_chunks - df + 0.5) / (df + 0.5))


def saturate(tf: int, k1: float = K1) -> float:
    """``tf (k1 + 1) / (tf + k1)``: 1 for one mention, approaching k1 + 1."""
    return tf * (k1 + 1.0) / (tf + k1)


def entity_weights(
    query: Mapping[str, int],
    neighbours: Mapping[str, Iterable[tuple[str, int, int]]],
    n_chunks: int,
    *,
    hop_decay: float,
    max_neighbours: int,
) -> dict[str, float]:
    """Weights of the query entities (``{key: df}``) and of their followed neighbours
    (``{query key: [(neighbour key, edge weight, neighbour df)]}``), as in the module docstring."""
    weights = {key: bm25_idf(n_chunks, df) for key, df in query.items()}
    if hop_decay <= 0 or max_neighbours <= 0:
        return weights
    spread: dict[str, float] = {}
    for key, df in query.items():
        scored = [
            (hop_decay * w / df * bm25_idf(n_chunks, ndf), nkey)
            for nkey, w, ndf in neighbours.get(key, ())
            if nkey not in query and df > 0
        ]
        scored.sort(key=lambda t: (-t[0], t[1]))
        for value, nkey in scored[:max_neighbours]:
            spread[nkey] = spread.get(nkey, 0.0) + value
    for nkey, value in spread.items():
        weights[nkey] = weights.get(nkey, 0.0) + value
    return weights


def score_chunks(
    weights: Mapping[str, float], postings: Mapping[str, Sequence[tuple[str, int]]], k1: float = K1
) -> dict[str, float]:
    """``{chunk_id: sum of weight(x) * sat(tf(x, chunk))}`` over the weighted entities' postings."""
    scores: dict[str, float] = {}
    for key, weight in weights.items():
        if weight <= 0:
            continue
        for chunk_id, tf in postings.get(key, ()):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight * saturate(tf, k1)
    return scores


@dataclass(frozen=True, slots=True)
class _Extracted:
    """One chunk's extraction, ready to write."""

    chunk_id: str
    mentions: list[Mention]
    status: str | None = None  # LLM extraction: "ok" | "failed"; None with the rules only
    cache_row: tuple[str, str] | None = None  # a new LLM cache row (digest, entities JSON)


@dataclass(slots=True)
class _Plan:
    """What a sync to one store generation does: the chunk-id diff and, once prepared, the
    extraction of the chunks to add (``todo``, in order)."""

    generation: int
    remove: list[str]
    retry: list[str]  # LLM extraction failed last time: removed, then extracted again
    todo: list[str]
    extracted: list[_Extracted] = field(default_factory=list)


class GraphLeg:
    """Entity graph under ``<dir>``; see the module docstring."""

    name = "graph"

    def __init__(
        self,
        directory: Path,
        extractor: RuleExtractor,
        *,
        hop_decay: float = 0.5,
        max_neighbours: int = 10,
        llm: LLMExtractor | None = None,
        workers: int = 1,
    ) -> None:
        self.dir = Path(directory)
        self.workers = workers
        self.extractor = extractor
        self.llm = llm
        self.hop_decay = hop_decay
        self.max_neighbours = max_neighbours
        self.graph = GraphStore(self.dir)
        self.fingerprint = json.dumps(
            {"rules": extractor.fingerprint(), "llm": llm.fingerprint() if llm else None}, sort_keys=True
        )
        if self.graph.meta("fingerprint") != self.fingerprint:
            self.graph.reset()  # first use, or the extractor or alias table changed: rebuild
            with self.graph.transaction():
                self.graph.set_meta("fingerprint", self.fingerprint)
        gen = self.graph.meta("generation")
        self.generation: int | None = int(gen) if gen is not None else None
        self.llm_failed = 0  # chunks of the last sync whose LLM extraction failed (rules only)
        self._prepared: _Plan | None = None  # from prepare(), for the next sync

    # -- search ------------------------------------------------------------------------------------

    def query_entities(self, query: str) -> dict[str, tuple[int, int]]:
        """``{key: (id, df)}`` of the graph's entities found in ``query``."""
        keys = self.extractor.query_keys(query)
        return self.graph.entities(keys) if keys else {}

    def search(self, query: str, k: int) -> dict[str, float]:
        found = self.query_entities(query)
        if not found:
            return {}
        n = self.graph.count("chunks")
        query_df = {key: df for key, (_, df) in found.items()}
        neighbours: dict[str, list[tuple[str, int, int]]] = {}
        ids = {key: eid for key, (eid, _) in found.items()}
        if self.hop_decay > 0 and self.max_neighbours > 0:
            for key, (eid, _) in found.items():
                rows = self.graph.neighbours(eid)
                neighbours[key] = [(nkey, w, ndf) for nid, nkey, w, ndf in rows]
                ids.update((nkey, nid) for nid, nkey, _, _ in rows)
        weights = entity_weights(
            query_df, neighbours, n, hop_decay=self.hop_decay, max_neighbours=self.max_neighbours
        )
        postings = {key: self.graph.postings(ids[key]) for key in weights}
        scores = score_chunks(weights, postings)
        top = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return dict(top)

    # -- sync --------------------------------------------------------------------------------------

    def prepare(self, store: ChunkStore) -> None:
        """Do the slow part of the next :meth:`sync` to ``store`` now, writing nothing: the chunk-id
        diff and the entity extraction (rules, and the model's if configured) of the chunks to add,
        kept in memory (at most ``PREPARE_MAX_CHUNKS`` of them; the sync extracts any others).
        Searches meanwhile see the graph as it is; a :meth:`sync` to the same store generation then
        only writes. Call it from the thread that calls :meth:`sync`."""
        generation = store.generation()  # read first: what follows is at least this new
        if generation == self.generation:
            self._prepared = None
            return
        if self._prepared is not None and self._prepared.generation == generation:
            return
        self._prepared = None
        plan = self._plan(store, generation)
        with contextlib.closing(self._extractions(store, plan.todo[:PREPARE_MAX_CHUNKS])) as batches:
            for batch in batches:
                plan.extracted.extend(batch)
        self.graph.checkpoint()  # else the sync's commit may have to
        self._prepared = plan

    def sync(self, store: ChunkStore, progress: ProgressFn | None = None) -> SyncResult:
        """Bring the graph to ``store``; with a plan from :meth:`prepare` for the same store
        generation, only write it (a plan for another generation is dropped and the work redone)."""
        t0 = time.perf_counter()
        prepared, self._prepared = self._prepared, None  # after any sync a plan is stale
        generation = store.generation()
        if generation == self.generation:
            return SyncResult(0, 0, 0.0)
        if prepared is not None and prepared.generation == generation:
            plan = prepared
        else:
            plan = self._plan(store, generation)
        if self.llm is not None:
            self.llm_failed = 0
        label = "entity graph (LLM)" if self.llm is not None else "entity graph"
        extracted = {e.chunk_id for e in plan.extracted}
        missing = [c for c in plan.todo if c not in extracted]
        done = 0
        with self.graph.transaction():  # a prepared plan is written in one transaction
            if plan.remove or plan.retry:
                self.graph.remove(plan.remove + plan.retry)
            for i in range(0, len(plan.extracted), RULES_BATCH):
                done += self._add(plan.extracted[i : i + RULES_BATCH])
                if progress:
                    progress(done, len(plan.todo), label)
            if not missing:
                self.graph.set_meta("generation", str(generation))
        if missing:
            with contextlib.closing(self._extractions(store, missing)) as batches:
                for batch in batches:
                    with self.graph.transaction():
                        done += self._add(batch)
                    if progress:
                        progress(done, len(plan.todo), label)
            with self.graph.transaction():
                self.graph.set_meta("generation", str(generation))
        self.generation = generation
        return SyncResult(len(plan.todo), len(plan.remove), time.perf_counter() - t0)

    def _plan(self, store: ChunkStore, generation: int) -> _Plan:
        """The chunk-id diff between the graph and ``store``: what to remove, retry and add."""
        have = self.graph.chunk_ids()
        want = store.chunk_ids()
        retry = sorted(self.graph.chunk_ids(llm="failed") & want) if self.llm is not None else []
        return _Plan(
            generation, remove=sorted(have - want), retry=retry, todo=sorted((want - have) | set(retry))
        )

    def _add(self, items: Sequence[_Extracted]) -> int:
        """Extracted chunks (and new LLM cache rows), inside a transaction. Returns how many."""
        for item in items:
            if item.cache_row is not None:
                self.graph.cache_llm(*item.cache_row)
        self.graph.add([(e.chunk_id, e.mentions, e.status) for e in items], self.extractor.max_salient)
        self.llm_failed += sum(e.status == "failed" for e in items)
        return len(items)

    def _extractions(self, store: ChunkStore, todo: list[str]) -> Generator[list[_Extracted], None, None]:
        """The extraction of the chunks ``todo``, batch after batch, in order. With the LLM a batch
        is one chunk, so a sync that writes each batch as it comes keeps every answer the model gave."""
        if self.llm is not None:
            yield from self._extract_llm(store, todo)
        elif self.workers > 1 and len(todo) >= PARALLEL_MIN_CHUNKS:
            yield from self._extract_parallel(store, todo)
        else:
            for i in range(0, len(todo), RULES_BATCH):
                chunks = store.get_chunks(todo[i : i + RULES_BATCH])
                yield [_Extracted(c.chunk_id, self.extractor.extract(c.index_text())) for c in chunks]

    def _extract_parallel(
        self, store: ChunkStore, todo: list[str]
    ) -> Generator[list[_Extracted], None, None]:
        """Extraction in ``workers - 1`` processes while this one reads chunks (and the caller writes)."""
        import multiprocessing
        from concurrent.futures import Future, ProcessPoolExecutor

        pool = ProcessPoolExecutor(
            max_workers=self.workers - 1,
            mp_context=multiprocessing.get_context("spawn"),  # no fork: the caller may hold threads
            initializer=_init_worker,
            initargs=(self.extractor,),
        )
        pending: deque[tuple[list[Chunk], Future[list[list[Mention]]]]] = deque()
        try:
            for i in range(0, len(todo), PARALLEL_BATCH):
                chunks = store.get_chunks(todo[i : i + PARALLEL_BATCH])
                pending.append((chunks, pool.submit(_extract_batch, [c.index_text() for c in chunks])))
                while len(pending) > self.workers:  # a few batches ahead, not the whole corpus
                    chunks, future = pending.popleft()
                    yield [_Extracted(c.chunk_id, m) for c, m in zip(chunks, future.result(), strict=True)]
            while pending:
                chunks, future = pending.popleft()
                yield [_Extracted(c.chunk_id, m) for c, m in zip(chunks, future.result(), strict=True)]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _extract_llm(self, store: ChunkStore, todo: list[str]) -> Generator[list[_Extracted], None, None]:
        """Rules plus the model, one chunk at a time; after ``MAX_LLM_FAILURES`` failures in a row
        (or one that will repeat) the rest get the rules only and stay marked for a retry."""
        failures = 0  # consecutive
        llm_down = False
        answers: dict[str, str] = {}  # this run's new cache rows, for repeated texts
        for chunk_id in todo:
            for chunk in store.get_chunks([chunk_id]):
                rules = self.extractor.extract(chunk.index_text())
                mentions, status, row, fatal = self._with_llm(chunk, rules, skip=llm_down, answers=answers)
                if status == "failed":
                    failures += 1
                    llm_down = llm_down or fatal or failures >= MAX_LLM_FAILURES
                else:
                    failures = 0
                if row is not None:
                    answers[row[0]] = row[1]
                yield [_Extracted(chunk.chunk_id, mentions, status, row)]

    def _with_llm(
        self, chunk: Chunk, rules: list[Mention], *, skip: bool, answers: Mapping[str, str]
    ) -> tuple[list[Mention], str, tuple[str, str] | None, bool]:
        """Rule mentions merged with the model's (from the cache, or ``answers`` not yet written, when
        this text was seen before): ``(mentions, "ok" | "failed", new cache row or None, whether the
        failure will repeat)``."""
        from rag.graph.llm import is_fatal, merge_llm_entities

        assert self.llm is not None
        text = chunk.index_text()
        digest = self.llm.cache_key(text)
        cached = answers.get(digest) or self.graph.cached_llm(digest)
        new_row: tuple[str, str] | None = None
        if cached is not None:
            names = json.loads(cached)
        elif skip:
            return rules, "failed", None, False
        else:
            try:
                names = self.llm.extract(text)
            except LLMError as exc:
                return rules, "failed", None, is_fatal(exc)
            new_row = (digest, json.dumps(names, ensure_ascii=False))
        return merge_llm_entities(rules, names, text, self.extractor.aliases), "ok", new_row, False

    # -- facts -------------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "chunks": self.graph.count("chunks"),
            "entities": self.graph.count("entities"),
            "edges": self.graph.count("edges"),
        }

    def flush(self) -> None:
        """Move the graph's WAL into its database file (every sync commits before it returns)."""
        self.graph.checkpoint()

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.graph.close()


def graph_leg(
    data_dir: Path, settings: GraphSettings, llm: LLMSettings | None = None, *, workers: int = 1
) -> GraphLeg:
    """The graph leg as ``settings`` describe it, under ``<data_dir>/graph``; ``workers`` processes
    extract entities in large syncs (``settings.ingest.workers``)."""
    directory = Path(data_dir) / "graph"
    aliases = load_alias_table(settings.aliases, data_dir)
    extractor = RuleExtractor(aliases, cache_dir=directory)
    llm_extractor = None
    if settings.extractor == "llm":
        from rag.graph.llm import LLMExtractor
        from rag.settings import LLMSettings

        llm_extractor = LLMExtractor(llm or LLMSettings.model_validate({}), timeout_s=settings.llm_timeout_s)
    return GraphLeg(
        directory,
        extractor,
        hop_decay=settings.hop_decay,
        max_neighbours=settings.max_neighbours,
        llm=llm_extractor,
        workers=workers,
    )


_WORKER_EXTRACTOR: RuleExtractor | None = None


def _init_worker(extractor: RuleExtractor) -> None:
    global _WORKER_EXTRACTOR
    _WORKER_EXTRACTOR = extractor


def _extract_batch(texts: list[str]) -> list[list[Mention]]:
    assert _WORKER_EXTRACTOR is not None
    return [_WORKER_EXTRACTOR.extract(t) for t in texts]
