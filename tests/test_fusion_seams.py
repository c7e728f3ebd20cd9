"""The seams re-scoring fusion needs: a BMX score for any chunk, stored vectors by id, and a
dense search by vector, on real indexes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.sparse.bmx import BMXIndex
from rag.vectors import open_vector_store

DOCS = {
    "a": ["docker", "gpu", "ollama"],
    "b": ["docker", "docker", "port"],
    "c": ["qdrant", "vector"],
    "d": ["gpu", "cuda", "driver", "ollama"],
    "e": ["port", "11434"],
}


def _index() -> BMXIndex:
    ix = BMXIndex()
    ix.upsert(list(DOCS), list(DOCS.values()))
    return ix


def test_bmx_score_ids_equals_search_scores() -> None:
    ix = _index()
    query = ["docker", "ollama", "gpu"]
    ranked = dict(ix.search(query, 10))
    got = ix.score_ids(query, ["e", "a", "b", "c", "d", "missing"])
    assert set(got) == {"a", "b", "c", "d", "e"}  # an id that is not indexed is left out
    for doc, score in ranked.items():
        assert got[doc] == pytest.approx(score, rel=1e-12)
    # documents without a query token score 0 (search never returns them)
    assert got["c"] == 0.0 and got["e"] == 0.0
    assert "c" not in ranked


def test_bmx_score_ids_beyond_search_depth_and_deleted() -> None:
    ix = _index()
    query = ["docker", "port"]
    full = dict(ix.search(query, 10))
    top1 = ix.search(query, 1)
    rest = [d for d in full if d != top1[0][0]]
    got = ix.score_ids(query, rest)
    assert got == pytest.approx({d: full[d] for d in rest})
    ix.delete(["b"])
    assert "b" not in ix.score_ids(query, ["b", "e"])
    assert ix.score_ids(query, ["e"])["e"] == pytest.approx(dict(ix.search(query, 10))["e"])


def test_bmx_search_and_scorer_share_one_scoring_pass() -> None:
    ix = _index()
    query = ["docker", "port", "gpu"]
    hits, scorer = ix.search_and_scorer(query, 2)
    assert hits == ix.search(query, 2)
    assert scorer(list(DOCS)) == pytest.approx(ix.score_ids(query, list(DOCS)))
    empty, none = ix.search_and_scorer(["unknown"], 3)
    assert empty == [] and none(["a", "zz"]) == {"a": 0.0}
    assert BMXIndex().search_and_scorer(["x"], 3)[1](["a"]) == {}


def test_bmx_score_ids_unknown_query_and_normalized() -> None:
    ix = _index()
    assert ix.score_ids(["nothing", "known"], ["a", "c"]) == {"a": 0.0, "c": 0.0}
    assert ix.score_ids(["docker"], []) == {}
    norm = BMXIndex(normalize_scores=True)
    norm.upsert(list(DOCS), list(DOCS.values()))
    query = ["gpu", "ollama"]
    assert norm.score_ids(query, ["a", "d"]) == pytest.approx(dict(norm.search(query, 2)))


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_vector_store_fetches_vectors_by_id(tmp_path: Path, kind: str) -> None:
    store = open_vector_store(kind, path=tmp_path / kind, url=None, collection="c", dim=4)
    try:
        raw = np.array([[3, 0, 4, 0], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32)
        store.upsert(["x", "y", "z"], raw)
        got = store.vectors(["z", "nope", "x"])
        assert set(got) == {"x", "z"}
        np.testing.assert_allclose(got["x"], [0.6, 0.0, 0.8, 0.0], atol=1e-6)  # stored normalised
        np.testing.assert_allclose(got["z"], [0.5, 0.5, 0.5, 0.5], atol=1e-6)
        assert got["x"].dtype == np.float32
        # the cosine of a fetched vector is the score search reports
        q = np.array([1, 0, 0, 0], dtype=np.float32)
        for cid, score in store.search(q, 3):
            assert float(store.vectors([cid])[cid] @ q) == pytest.approx(score, abs=1e-6)
        store.delete(["x"])
        assert store.vectors(["x"]) == {}
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_search_with_vectors_is_search_and_the_fetched_vectors(tmp_path: Path, kind: str) -> None:
    store = open_vector_store(kind, path=tmp_path / kind, url=None, collection="c", dim=8)
    try:
        rng = np.random.default_rng(3)
        raw = rng.standard_normal((60, 8)).astype(np.float32)
        raw[10:20] = raw[0]  # ties at the cut-off: top_k fetches again, the vectors follow
        ids = [f"c{i:02d}" for i in range(60)]
        store.upsert(ids, raw)
        for _ in range(3):  # local mode settles its stored vectors (last digits) over the first searches
            store.search(raw[1], 3)
        for q in [raw[0], raw[5], rng.standard_normal(8).astype(np.float32)]:
            for k in (1, 5, 12, 60):
                hits, vecs = store.search_with_vectors(q, k)
                fetched = store.vectors([cid for cid, _ in hits])
                assert hits == store.search(q, k)
                assert set(vecs) == set(fetched) == {cid for cid, _ in hits}
                for cid, v in vecs.items():
                    assert v.dtype == np.float32 and np.array_equal(v, fetched[cid])
    finally:
        store.close()


def test_legs_score_ids_vectors_and_search_by_vector(tmp_path: Path) -> None:
    from rag.embed import EmbeddingCache
    from rag.retrieval.legs import DenseLeg, SparseLeg
    from rag.sparse.tokenize import Tokenizer
    from tests.hashing_embedder import HashingEmbedder

    texts = {cid: " ".join(words) for cid, words in DOCS.items()}
    sparse = SparseLeg(tmp_path / "sparse", Tokenizer(), alpha=None, beta=None)
    sparse.index.upsert(list(texts), [sparse.tokenizer(t) for t in texts.values()])
    query = "docker gpu"
    ranked = sparse.search(query, 10)
    got = sparse.score_ids(query, list(texts))
    assert {d: got[d] for d in ranked} == pytest.approx(ranked)
    assert got["c"] == 0.0

    emb = HashingEmbedder(dim=32)
    store = open_vector_store("local", path=None, url=None, collection="c", dim=32)
    dense = DenseLeg(tmp_path / "dense", emb, EmbeddingCache(tmp_path / "cache.sqlite3"), store)
    try:
        store.upsert(list(texts), emb.embed_passages(list(texts.values())))
        assert dense.embed_query("   ") is None
        assert dense.search("   ", 3) == {}
        qv = dense.embed_query(query)
        assert qv is not None
        assert dense.search_vector(qv, 3) == dense.search(query, 3)
        vecs = dense.vectors_of(["a", "zz"])
        assert set(vecs) == {"a"}
        assert float(vecs["a"] @ qv) == pytest.approx(dense.search(query, 5)["a"], abs=1e-6)
        hits, hit_vecs = dense.search_vector_with_vectors(qv, 3)
        fetched = dense.vectors_of(list(hits))
        assert set(hit_vecs) == set(hits)
        assert all(np.array_equal(hit_vecs[c], fetched[c]) for c in hits)
        assert hits == dense.search_vector(qv, 3)
    finally:
        dense.close()


def _engine_notes(root: Path) -> Path:
    root.mkdir(parents=True)
    words = ["docker", "ollama", "gpu", "port", "qdrant", "vector", "cuda", "nginx", "index", "model"]
    for i in range(24):
        body = " ".join(words[(i * 3 + w) % len(words)] for w in range(12 + i % 5))
        (root / f"n{i:02d}.md").write_text(f"# note {i}\n\n{body} note{i}\n", encoding="utf-8")
    return root


@pytest.mark.parametrize(("method", "search"), [("rescored", False), ("prf", False), ("prf", True)])
def test_retriever_runs_feedback_fusion_through_the_legs(tmp_path: Path, method: str, search: bool) -> None:
    from ingest.publish import ingest_and_publish
    from rag.engine import Engine
    from rag.retrieval.fusion import Feedback, feedback_search
    from rag.settings import Settings
    from tests.hashing_embedder import HashingEmbedder

    notes = _engine_notes(tmp_path / "notes")
    settings = Settings(data_dir=tmp_path / "d")
    settings.embedding.model = "hashing"
    settings.graph.enabled = False
    r = settings.retrieval
    r.fusion, r.weight_sparse, r.weight_dense = method, 0.4, 0.6  # type: ignore[assignment]
    r.candidates, r.prf_m, r.prf_beta, r.prf_first_dense_weight = 5, 3, 1.0, 0.5
    r.prf_search = search
    with Engine.open(settings, create=True, embedder=HashingEmbedder(32)) as engine:
        ingest_and_publish([notes], settings, engine, engine.store)
        sparse, dense = engine.leg("sparse"), engine.leg("dense")
        for query in ["docker gpu port", "qdrant vector note7", "cuda nginx"]:
            hits = engine.search(query, k=5, mode="hybrid")
            qv = dense.embed_query(query)  # type: ignore[attr-defined]
            legs = {"sparse": sparse.search(query, 5), "dense": dense.search(query, 5)}
            want = feedback_search(
                legs,
                qv,
                sparse_scores=lambda ids, q=query: sparse.score_ids(q, ids),  # type: ignore[attr-defined]
                vectors=dense.vectors_of,  # type: ignore[attr-defined]
                dense_search=(lambda v: dense.search_vector(v, 5)) if search else None,  # type: ignore[attr-defined]
                weights={"sparse": 0.4, "dense": 0.6, "graph": 0.0},
                feedback=Feedback(first_dense_weight=0.5, m=3, beta=1.0) if method == "prf" else None,
            )[:5]
            assert [(h.chunk.chunk_id, h.score) for h in hits] == [(c, pytest.approx(s)) for c, s in want]
            # hits report each leg's own list: null where that leg did not return the chunk
            for h in hits:
                assert h.scores["sparse"] == legs["sparse"].get(h.chunk.chunk_id)
                assert h.scores["dense"] == legs["dense"].get(h.chunk.chunk_id)
        # re-scoring changes the candidates: the union holds chunks one leg alone returned
        assert any(h.scores["sparse"] is None or h.scores["dense"] is None for h in hits)


def test_retriever_falls_back_to_zscore_while_the_dense_leg_lags(tmp_path: Path) -> None:
    from ingest.publish import ingest_and_publish
    from rag.engine import Engine
    from rag.retrieval.fusion import fuse
    from rag.settings import Settings
    from tests.hashing_embedder import HashingEmbedder

    notes = _engine_notes(tmp_path / "notes")
    settings = Settings(data_dir=tmp_path / "d")
    settings.embedding.model = "hashing"
    settings.graph.enabled = False
    settings.retrieval.fusion = "prf"
    with Engine.open(settings, create=True, embedder=HashingEmbedder(32)) as engine:
        ingest_and_publish([notes], settings, engine, engine.store)
        dense = engine.leg("dense")
        retriever = engine.retriever("hybrid")
        assert retriever.rescorable()
        dense.generation = -1  # the store moved on and the dense leg has not caught up yet
        assert not retriever.rescorable()
        query = "docker gpu port"
        per_leg = retriever.covered(retriever.leg_scores(query, 10, "hybrid"))
        want = fuse(per_leg, method="zscore", weights=retriever.weights())[:10]
        got = retriever.search(query, 10, "hybrid")
        assert [(h.chunk.chunk_id, h.score) for h in got] == [(c, pytest.approx(s)) for c, s in want]


class _FetchOnly:
    """A dense leg without the vectors-with-search seam: every vector comes by id."""

    def __init__(self, leg: object) -> None:
        self._leg = leg

    def __getattr__(self, name: str) -> object:
        if name == "search_vector_with_vectors":
            raise AttributeError(name)
        return getattr(self._leg, name)


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_prf_ranking_is_the_same_with_the_dense_hits_vectors_read_by_the_search(
    tmp_path: Path, backend: str
) -> None:
    """The Retriever hands ``prf`` the dense hits' vectors from the search itself; hits and
    every score are exactly those of fetching each vector by id."""
    from ingest.publish import ingest_and_publish
    from rag.engine import Engine
    from rag.retrieval.fusion import Feedback, feedback_search
    from rag.retrieval.search import Retriever
    from rag.settings import Settings
    from tests.hashing_embedder import HashingEmbedder

    notes = _engine_notes(tmp_path / "notes")
    settings = Settings(data_dir=tmp_path / "d")
    settings.embedding.model = "hashing"
    settings.graph.enabled = False
    settings.vectors.backend = backend  # type: ignore[assignment]
    r = settings.retrieval
    r.fusion, r.weight_sparse, r.weight_dense = "prf", 0.4, 0.6  # type: ignore[assignment]
    r.candidates, r.prf_m, r.prf_beta, r.prf_first_dense_weight = 8, 3, 0.5, 0.6
    with Engine.open(settings, create=True, embedder=HashingEmbedder(32)) as engine:
        ingest_and_publish([notes], settings, engine, engine.store)
        fast = engine.retriever("hybrid")
        assert fast.rescorable() and hasattr(fast.legs["dense"], "search_vector_with_vectors")
        slow = Retriever(engine.store, {**fast.legs, "dense": _FetchOnly(fast.legs["dense"])}, r)  # type: ignore[dict-item]
        assert slow.rescorable() and not hasattr(slow.legs["dense"], "search_vector_with_vectors")
        fetched: list[list[str]] = []
        dense_leg = fast.legs["dense"]
        fetch = dense_leg.vectors_of  # type: ignore[attr-defined]

        def counting(ids: list[str]) -> dict[str, np.ndarray]:
            fetched.append(list(ids))
            return fetch(ids)

        dense_leg.vectors_of = counting  # type: ignore[attr-defined]
        sparse = engine.leg("sparse")
        for _ in range(3):  # local mode settles its stored vectors (last digits) over the first searches
            dense_leg.search("docker", 3)
        seen_union = False
        for query in ["docker gpu port", "qdrant vector note7", "cuda nginx", "ollama index model", "note3"]:
            for k in (3, 10):
                fetched.clear()
                got = [(h.chunk.chunk_id, h.score, h.scores) for h in fast.search(query, k)]
                # only chunks the sparse leg alone found were fetched by id, once
                dense_hits = dense_leg.search(query, max(k, r.candidates))
                assert all(c not in dense_hits for ids in fetched for c in ids)
                assert len(fetched) <= 1
                want = [(h.chunk.chunk_id, h.score, h.scores) for h in slow.search(query, k)]
                assert got == want
                # and both are the fusion with every vector fetched by id
                qv = dense_leg.embed_query(query)  # type: ignore[attr-defined]
                legs = {"sparse": sparse.search(query, max(k, 8)), "dense": dense_hits}
                order = feedback_search(
                    legs,
                    qv,
                    sparse_scores=lambda ids, q=query: sparse.score_ids(q, ids),  # type: ignore[attr-defined]
                    vectors=fetch,
                    weights={"sparse": 0.4, "dense": 0.6, "graph": 0.0},
                    feedback=Feedback(first_dense_weight=0.6, m=3, beta=0.5),
                )[:k]
                assert [(c, s) for c, s, _ in got] == order
                seen_union |= bool(set(legs["sparse"]) - set(dense_hits))
        assert seen_union  # some query had chunks the sparse leg alone found
