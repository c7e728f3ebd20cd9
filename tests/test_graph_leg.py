"""The graph leg's scoring (golden numbers worked by hand) and its place in search."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rag.engine import Engine
from rag.graph import GraphLeg
from rag.graph.leg import bm25_idf, entity_weights, saturate, score_chunks
from tests.test_graph_sync import ingest, settings_for, write_notes


def test_bm25_idf_and_saturation_golden() -> None:
    # ln(1 + (N - df + 0.5) / (df + 0.5))
    assert bm25_idf(10, 1) == pytest.approx(math.log(1 + 9.5 / 1.5))  # 1.99243
    assert bm25_idf(10, 1) == pytest.approx(1.992430, abs=1e-6)
    assert bm25_idf(10, 10) == pytest.approx(math.log(1 + 0.5 / 10.5))  # everywhere: small, not negative
    assert bm25_idf(10, 10) > 0
    # tf (k1 + 1) / (tf + k1), k1 = 1.2
    assert saturate(1) == pytest.approx(1.0)
    assert saturate(2) == pytest.approx(2 * 2.2 / 3.2)  # 1.375
    assert saturate(100) < 2.2


def test_entity_weights_golden() -> None:
    n = 10
    query = {"a": 2}  # entity a is mentioned in 2 of 10 chunks
    # neighbours of a: (key, edge weight, neighbour df)
    neighbours = {"a": [("b", 2, 4), ("c", 1, 1), ("a", 5, 2)]}
    idf_a, idf_b, idf_c = bm25_idf(n, 2), bm25_idf(n, 4), bm25_idf(n, 1)
    # b: 0.5 * 2/2 * idf(4) = 0.5 * 0.893818 = 0.446909; c: 0.5 * 1/2 * idf(1) = 0.25 * 1.992430 = 0.498108
    full = entity_weights(query, neighbours, n, hop_decay=0.5, max_neighbours=10)
    assert full == pytest.approx({"a": idf_a, "b": 0.5 * idf_b, "c": 0.25 * idf_c})
    assert full["b"] == pytest.approx(0.446909, abs=1e-6) and full["c"] == pytest.approx(0.498108, abs=1e-6)
    # one neighbour only: the heavier contribution (c) wins, though b shares more chunks with a
    assert entity_weights(query, neighbours, n, hop_decay=0.5, max_neighbours=1) == pytest.approx(
        {"a": idf_a, "c": 0.25 * idf_c}
    )
    # no hops
    assert entity_weights(query, neighbours, n, hop_decay=0.0, max_neighbours=10) == {"a": idf_a}
    assert entity_weights(query, neighbours, n, hop_decay=0.5, max_neighbours=0) == {"a": idf_a}


def test_neighbour_of_two_query_entities_adds_up() -> None:
    weights = entity_weights(
        {"a": 1, "b": 1},
        {"a": [("x", 1, 1)], "b": [("x", 1, 1), ("a", 1, 1)]},
        4,
        hop_decay=1.0,
        max_neighbours=5,
    )
    idf1 = bm25_idf(4, 1)
    assert weights == pytest.approx({"a": idf1, "b": idf1, "x": 2 * idf1})  # a is a query entity, not a hop


def test_score_chunks_golden() -> None:
    weights = {"a": 2.0, "b": 0.5, "z": 0.0}
    postings = {"a": [("c1", 1), ("c2", 2)], "b": [("c2", 1), ("c3", 1)], "z": [("c4", 9)]}
    assert score_chunks(weights, postings) == pytest.approx(
        {"c1": 2.0, "c2": 2.0 * 1.375 + 0.5, "c3": 0.5}  # z weighs nothing: c4 is not a hit
    )


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    e = ingest(settings_for(tmp_path / "data"), write_notes(tmp_path / "notes"))
    yield e
    e.close()


def test_graph_search_ranks_mentions_then_neighbours(engine: Engine) -> None:
    leg = engine.leg("graph")
    assert isinstance(leg, GraphLeg)
    scores = leg.search("怎么用 Qdrant", 10)
    chunks = {c.chunk_id: c for c in engine.store.get_chunks(list(scores))}
    best = max(scores, key=lambda c: scores[c])
    assert "Qdrant" in chunks[best].text
    assert all("Qdrant" not in chunks[c].text for c in scores if c != best)  # the rest: via neighbours
    assert all(scores[c] < scores[best] for c in scores if c != best)

    leg.hop_decay = 0.0  # no hops: only the chunk that names Qdrant
    assert list(leg.search("怎么用 Qdrant", 10)) == [best]
    assert leg.search("something unrelated entirely", 10) == {}
    assert leg.search("", 10) == {}
    assert len(leg.search("docker ollama 模型", 2)) == 2


def test_graph_mode_and_hybrid_weight(engine: Engine) -> None:
    hits = engine.search("docker commit 保存镜像", 3, "graph")
    assert hits and hits[0].chunk.source == "docker/gpu.md" and "docker commit" in hits[0].chunk.text
    assert hits[0].scores["graph"] is not None and hits[0].scores["sparse"] is None
    # weight 0 (the default): hybrid does not run the graph leg
    hybrid = engine.search("docker commit", 3, "hybrid")
    assert all(h.scores["graph"] is None for h in hybrid)
    engine.settings.retrieval.weight_graph = 0.2
    fused = engine.search("docker commit", 3, "hybrid")
    assert fused[0].scores["graph"] is not None and fused[0].scores["sparse"] is not None


def test_status_reports_the_graph(engine: Engine) -> None:
    engine.leg("graph")
    info = engine.status()["legs"]["graph"]
    assert info["in_sync"] is True
    assert info["chunks"] == engine.store.count_chunks()
    assert info["entities"] > 10 and info["edges"] > info["entities"]
