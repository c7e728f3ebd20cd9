"""Golden tests for fusion, checked by hand."""

from __future__ import annotations

import math

import pytest

from rag.retrieval.fusion import (
    adaptive_weights,
    fuse,
    margin,
    minmax,
    ranked,
    rrf,
    weighted,
    zscore,
    zscored,
)

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
    from rag.retrieval.fusion import default_dense_weight, default_fusion
    from rag.settings import load_settings

    monkeypatch.delenv("RAG_EMBEDDING__MODEL", raising=False)
    monkeypatch.delenv("RAG_RETRIEVAL__FUSION", raising=False)
    r = load_settings().retrieval  # e5-small: prf, dense 0.6 (bench/results/fusion-loco.md)
    assert (r.fusion, r.weight_sparse, r.weight_dense) == ("prf", 0.4, 0.6)
    assert (r.prf_first_dense_weight, r.prf_m, r.prf_beta) == (0.6, 10, 0.25)
    r = load_settings(retrieval={"fusion": "weighted"}).retrieval  # e5-small min-max: measured 0.4
    assert (r.fusion, r.weight_sparse, r.weight_dense) == ("weighted", 0.6, 0.4)
    r = load_settings(embedding={"model": "use"}).retrieval
    assert (r.fusion, r.weight_sparse, r.weight_dense) == ("weighted", 0.9, 0.1)
    assert default_dense_weight("BAAI/bge-m3") == 0.1  # not measured: cautious
    assert default_fusion("BAAI/bge-m3") == "weighted"
    assert default_dense_weight("e5-small", "rrf") == 0.6  # not measured for rrf: the model's default
    monkeypatch.setenv("RAG_RETRIEVAL__WEIGHT_DENSE", "0.5")
    r = load_settings().retrieval
    assert (r.weight_sparse, r.weight_dense) == (0.5, 0.5)
    monkeypatch.setenv("RAG_RETRIEVAL__WEIGHT_SPARSE", "1.0")
    monkeypatch.setenv("RAG_RETRIEVAL__PRF_BETA", "1.5")
    r = load_settings().retrieval
    assert (r.weight_sparse, r.weight_dense, r.prf_beta) == (1.0, 0.5, 1.5)


# z-score normalisation (Montague & Aslam, CIKM 2001; Bruch, Gai & Ingber, TOIS 2023, §4):
# z(d) = (s(d) - mean) / std, population std. Sparse deviations from the mean 6 are (4, 0, -4),
# mean square 32/3, so z = (sqrt(3/2), 0, -sqrt(3/2)); dense deviations from 2.2/3 are
# (5, 2, -7)/30, mean square 26/900, so z(c, d, a) = (5, 2, -7)/sqrt(26).
Z_SPARSE = {"a": math.sqrt(1.5), "b": 0.0, "c": -math.sqrt(1.5)}
Z_DENSE = {"c": 5 / math.sqrt(26), "d": 2 / math.sqrt(26), "a": -7 / math.sqrt(26)}


def test_zscore_by_hand() -> None:
    assert zscore(LEGS["sparse"]) == pytest.approx(Z_SPARSE)
    assert zscore(LEGS["dense"]) == pytest.approx(Z_DENSE)
    assert zscore({"x": 3.0, "y": 3.0}) == {"x": 0.0, "y": 0.0}
    assert zscore({}) == {}


def test_zscored_missing_candidate_takes_the_legs_lowest_z() -> None:
    # b is not in the dense list: it gets dense's lowest z (a's, -7/sqrt(26)); d likewise sparse's
    got = zscored(LEGS, weights={"sparse": 0.5, "dense": 0.5})
    floor_s, floor_d = -math.sqrt(1.5), -7 / math.sqrt(26)
    assert got == pytest.approx(
        {
            "a": 0.5 * Z_SPARSE["a"] + 0.5 * Z_DENSE["a"],
            "b": 0.5 * 0.0 + 0.5 * floor_d,
            "c": 0.5 * Z_SPARSE["c"] + 0.5 * Z_DENSE["c"],
            "d": 0.5 * floor_s + 0.5 * Z_DENSE["d"],
        }
    )
    # a weight of 0 leaves the leg (and its candidates) out
    assert zscored(LEGS, weights={"sparse": 1.0, "dense": 0.0}) == pytest.approx(Z_SPARSE)


def test_margin_by_hand() -> None:
    # top-1 minus the mean of the top k, over the std of the top k (here k covers all three)
    assert margin(LEGS["sparse"]) == pytest.approx(math.sqrt(1.5))
    assert margin(LEGS["dense"]) == pytest.approx(5 / math.sqrt(26))
    assert margin({"x": 1.0, "y": 0.0, "z": -5.0}, k=2) == pytest.approx(1.0)  # (1 - 0.5) / 0.5
    assert margin({"x": 1.0}) == 0.0
    assert margin({"x": 2.0, "y": 2.0}) == 0.0


def test_adaptive_weights_by_hand() -> None:
    # dense share = sigmoid(logit(0.5) + slope * (m_dense - m_sparse)); with the slope below the
    # logit is -ln 3, so the share is 1 / (1 + 3) = 0.25 of the total weight 1
    slope = math.log(3) / (math.sqrt(1.5) - 5 / math.sqrt(26))
    got = adaptive_weights(LEGS, {"sparse": 0.5, "dense": 0.5, "graph": 0.1}, slope=slope)
    assert got == pytest.approx({"sparse": 0.75, "dense": 0.25, "graph": 0.1})
    # slope 0: the configured split
    assert adaptive_weights(LEGS, {"sparse": 0.6, "dense": 0.4}, slope=0.0) == pytest.approx(
        {"sparse": 0.6, "dense": 0.4}
    )
    # a missing or weightless leg: nothing to adapt
    assert adaptive_weights({"sparse": LEGS["sparse"]}, {"sparse": 0.6, "dense": 0.4}, slope=2.0) == {
        "sparse": 0.6,
        "dense": 0.4,
    }
    assert adaptive_weights(LEGS, {"sparse": 1.0, "dense": 0.0}, slope=2.0) == {"sparse": 1.0, "dense": 0.0}


def test_fuse_adaptive_is_zscored_with_adapted_weights() -> None:
    w = {"sparse": 0.5, "dense": 0.5}
    slope = math.log(3) / (math.sqrt(1.5) - 5 / math.sqrt(26))
    got = dict(fuse(LEGS, method="adaptive", weights=w, slope=slope))
    assert got == pytest.approx(zscored(LEGS, weights={"sparse": 0.75, "dense": 0.25}))
    # sparse-heavy: a (sparse 1st, dense 3rd) first, then b, c, d
    assert [d for d, _ in fuse(LEGS, method="adaptive", weights=w, slope=slope)] == ["a", "b", "c", "d"]
    assert dict(fuse(LEGS, method="zscore", weights=w)) == pytest.approx(zscored(LEGS, weights=w))
