"""Golden tests for fusion, checked by hand."""

from __future__ import annotations

import pytest

from rag.retrieval.fusion import fuse, minmax, ranked, rrf, weighted

LEGS = {
    "sparse": {"a": 10.0, "b": 6.0, "c": 2.0},
    "dense": {"c": 0.9, "d": 0.8, "a": 0.5},
}


def test_ranked_breaks_ties_by_id() -> None:
    assert ranked({"b": 1.0, "a": 1.0, "c": 2.0}) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]


def test_rrf_textbook() -> None:
    # a: 1/(60+1) + 1/(60+3); c: 1/(60+3) + 1/(60+1); b: 1/(60+2); d: 1/(60+2)
    got = rrf(LEGS, k=60)
    assert got["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert got["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert got["b"] == pytest.approx(1 / 62)
    assert got["d"] == pytest.approx(1 / 62)


def test_rrf_weights_and_zero_weight_leg() -> None:
    got = rrf(LEGS, k=1, weights={"sparse": 2.0, "dense": 0.0})
    assert got == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 0.5})


def test_minmax() -> None:
    assert minmax({"x": 2.0, "y": 4.0, "z": 3.0}) == {"x": 0.0, "y": 1.0, "z": 0.5}
    assert minmax({"x": 5.0, "y": 5.0}) == {"x": 1.0, "y": 1.0}
    assert minmax({}) == {}


def test_weighted_by_hand() -> None:
    # sparse norm: a 1, b 0.5, c 0;  dense norm: c 1, d 0.75, a 0
    got = weighted(LEGS, weights={"sparse": 0.8, "dense": 0.2})
    assert got == pytest.approx({"a": 0.8, "b": 0.4, "c": 0.2, "d": 0.15})
    assert [d for d, _ in fuse(LEGS, method="weighted", weights={"sparse": 0.8, "dense": 0.2})] == [
        "a",
        "b",
        "c",
        "d",
    ]


def test_fuse_single_leg_keeps_its_order() -> None:
    out = fuse({"sparse": LEGS["sparse"]}, method="rrf", weights={"sparse": 1.0})
    assert [d for d, _ in out] == ["a", "b", "c"]


def test_fusion_weights_follow_the_embedding_model_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.retrieval.fusion import default_dense_weight
    from rag.settings import load_settings

    monkeypatch.delenv("RAG_EMBEDDING__MODEL", raising=False)
    r = load_settings().retrieval  # e5-small: measured 0.3
    assert (r.weight_sparse, r.weight_dense) == (0.7, 0.3)
    r = load_settings(embedding={"model": "use"}).retrieval
    assert (r.weight_sparse, r.weight_dense) == (0.9, 0.1)
    assert default_dense_weight("BAAI/bge-m3") == 0.1  # not measured: cautious
    monkeypatch.setenv("RAG_RETRIEVAL__WEIGHT_DENSE", "0.5")
    r = load_settings().retrieval
    assert (r.weight_sparse, r.weight_dense) == (0.5, 0.5)
    monkeypatch.setenv("RAG_RETRIEVAL__WEIGHT_SPARSE", "1.0")
    r = load_settings().retrieval
    assert (r.weight_sparse, r.weight_dense) == (1.0, 0.5)
