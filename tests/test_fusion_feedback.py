"""Golden tests for re-scored fusion and dense pseudo-relevance feedback, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag.retrieval.fusion import Feedback, agreement, feedback_search, rocchio

Q = np.array([1.0, 0.0], dtype=np.float32)
VECS = {
    "a": np.array([1.0, 0.0], dtype=np.float32),
    "b": np.array([0.0, 1.0], dtype=np.float32),
    "c": np.array([0.6, 0.8], dtype=np.float32),
}
BMX = {"a": 0.0, "b": 2.0, "c": 1.0}


class Calls:
    def __init__(self) -> None:
        self.sparse: list[list[str]] = []
        self.vectors: list[list[str]] = []
        self.searched: list[np.ndarray] = []

    def sparse_scores(self, ids: list[str]) -> dict[str, float]:
        self.sparse.append(list(ids))
        return {d: BMX[d] for d in ids}

    def fetch(self, ids: list[str]) -> dict[str, np.ndarray]:
        self.vectors.append(list(ids))
        return {d: VECS[d] for d in ids if d in VECS}


def test_agreement_by_hand() -> None:
    legs = {"sparse": {"a": 3.0, "b": 2.0, "c": 1.0}, "dense": {"c": 0.9, "d": 0.8}}
    # sparse top 2 = a, b: neither in dense -> 0; dense top 2 = c, d: c in sparse -> 1/2
    assert agreement(legs, k=2) == {"sparse": 0.0, "dense": 0.5}
    # top 3 of sparse: a, b, c -> c shared: 1/3
    assert agreement(legs, k=3)["sparse"] == pytest.approx(1 / 3)
    assert agreement({"sparse": {}, "dense": {"c": 1.0}}) == {"sparse": 0.0, "dense": 0.0}


def test_rocchio_by_hand() -> None:
    # q + 1 * mean(b, c) = (1, 0) + (0.3, 0.9) = (1.3, 0.9); |.| = sqrt(2.5)
    got = rocchio(Q, [VECS["b"], VECS["c"]], 1.0)
    assert got == pytest.approx([1.3 / math.sqrt(2.5), 0.9 / math.sqrt(2.5)], abs=1e-6)
    assert got.dtype == np.float32
    # no feedback, or beta 0: the (normalised) query
    assert rocchio(np.array([2.0, 0.0]), [], 1.0) == pytest.approx([1.0, 0.0])
    assert rocchio(Q, [VECS["b"]], 0.0) == pytest.approx([1.0, 0.0])
    # beta 0.5 with one vector: (1, 0.5) / sqrt(1.25)
    assert rocchio(Q, [VECS["b"]], 0.5) == pytest.approx(
        [1 / math.sqrt(1.25), 0.5 / math.sqrt(1.25)], abs=1e-6
    )


def test_rescored_fusion_scores_every_candidate_with_both_legs() -> None:
    calls = Calls()
    legs = {"sparse": {"b": 2.0, "c": 1.0}, "dense": {"a": 1.0, "c": 0.6}}
    got = feedback_search(
        legs,
        Q,
        sparse_scores=calls.sparse_scores,
        vectors=calls.fetch,
        weights={"sparse": 0.5, "dense": 0.5},
    )
    # only what each leg lacks is looked up: BMX of a, the vector of b (cosine 0 with q)
    assert calls.sparse == [["a"]] and calls.vectors == [["b"]]
    # union {a, b, c}; sparse 0, 2, 1 -> z = -1.2247, 1.2247, 0 (mean 1, std sqrt(2/3));
    # dense 1, 0, 0.6 -> mean 0.5333, std 0.41096 -> z = 1.1355, -1.2978, 0.1622;
    # half each: a -0.0446, b -0.0365, c 0.0811
    assert [d for d, _ in got] == ["c", "b", "a"]
    assert dict(got) == pytest.approx({"a": -0.0446, "b": -0.0365, "c": 0.0811}, abs=1e-4)


def test_prf_searches_again_with_the_rocchio_query() -> None:
    calls = Calls()
    legs = {"sparse": {"b": 2.0, "c": 1.0}, "dense": {"a": 1.0, "c": 0.6}}

    def dense_search(v: np.ndarray) -> dict[str, float]:
        calls.searched.append(v)
        return {"c": round(float(VECS["c"] @ v), 6), "b": round(float(VECS["b"] @ v), 6)}

    got = feedback_search(
        legs,
        Q,
        sparse_scores=calls.sparse_scores,
        vectors=calls.fetch,
        dense_search=dense_search,
        weights={"sparse": 0.4, "dense": 0.6},
        feedback=Feedback(first_dense_weight=0.5, m=2, beta=1.0),
    )
    # the first (re-scored, half/half) ranking is c, b, a (test above): its top 2 are c and b,
    # so the search vector is (1.3, 0.9) / sqrt(2.5) = (0.8222, 0.5692)
    assert len(calls.searched) == 1
    assert calls.searched[0] == pytest.approx([0.8222, 0.5692], abs=1e-4)
    # new union {b, c} (a left the dense list): sparse 2, 1 -> z 1, -1; dense (cosines with the
    # new vector) b 0.5692, c 0.9487 -> z -1, 1; 0.4/0.6: b -0.2, c 0.2
    assert dict(got) == pytest.approx({"b": -0.2, "c": 0.2}, abs=1e-9)
    assert [d for d, _ in got] == ["c", "b"]
    # vectors are fetched once each; the sparse leg is asked only for a (first union)
    assert sorted(d for batch in calls.vectors for d in batch) == ["b", "c"]
    assert calls.sparse == [["a"]]


def test_prf_rescores_the_union_with_the_rocchio_query() -> None:
    calls = Calls()
    legs = {"sparse": {"b": 2.0, "c": 1.0}, "dense": {"a": 1.0, "c": 0.6}}
    got = feedback_search(
        legs,
        Q,
        sparse_scores=calls.sparse_scores,
        vectors=calls.fetch,
        weights={"sparse": 0.4, "dense": 0.6},
        feedback={"first_dense_weight": 0.5, "m": 2, "beta": 1.0},
    )
    # feedback set c, b as above: q' = (1.3, 0.9) / sqrt(2.5); the union {a, b, c} keeps its
    # candidates, dense scores become cosines with q', proportional to a 1.3, b 0.9, c 1.5:
    # mean 3.7/3, std sqrt(0.186667/3) -> z a 0.26726, b -1.33631, c 1.06904; sparse z as before
    # (-1.224745, 1.224745, 0); 0.4/0.6: a -0.329542, b -0.311888, c 0.641424
    assert dict(got) == pytest.approx({"a": -0.329542, "b": -0.311888, "c": 0.641424}, abs=1e-5)
    assert [d for d, _ in got] == ["c", "b", "a"]
    # every vector of the union is fetched once, the BMX score of a once
    assert sorted(d for batch in calls.vectors for d in batch) == ["a", "b", "c"]
    assert calls.sparse == [["a"]]


def test_prf_with_the_dense_hits_vectors_known_fetches_only_the_rest() -> None:
    legs = {"sparse": {"b": 2.0, "c": 1.0}, "dense": {"a": 1.0, "c": 0.6}}
    kwargs = {
        "weights": {"sparse": 0.4, "dense": 0.6},
        "feedback": {"first_dense_weight": 0.5, "m": 2, "beta": 1.0},
    }
    plain, given = Calls(), Calls()
    want = feedback_search(legs, Q, sparse_scores=plain.sparse_scores, vectors=plain.fetch, **kwargs)  # type: ignore[arg-type]
    got = feedback_search(
        legs,
        Q,
        sparse_scores=given.sparse_scores,
        vectors=given.fetch,
        known={d: VECS[d] for d in legs["dense"]},
        **kwargs,  # type: ignore[arg-type]
    )
    assert got == want  # the same ranking and scores, to the last digit
    assert given.vectors == [["b"]]  # only the chunk the sparse leg alone found is fetched
    assert given.sparse == plain.sparse == [["a"]]


def test_feedback_search_without_both_legs_is_plain_zscore() -> None:
    calls = Calls()
    got = feedback_search(
        {"sparse": {"b": 2.0, "c": 1.0}},
        Q,
        sparse_scores=calls.sparse_scores,
        vectors=calls.fetch,
        weights={"sparse": 1.0, "dense": 1.0},
    )
    assert got == [("b", 1.0), ("c", -1.0)]
    assert calls.sparse == [] and calls.vectors == []


def test_feedback_search_drops_chunks_without_a_vector_and_keeps_graph() -> None:
    calls = Calls()
    legs = {"sparse": {"b": 2.0, "x": 1.0}, "dense": {"a": 1.0}, "graph": {"b": 1.0, "g": 0.5}}
    got = dict(
        feedback_search(
            legs,
            Q,
            sparse_scores=calls.sparse_scores,
            vectors=calls.fetch,
            weights={"sparse": 1.0, "dense": 1.0, "graph": 1.0},
        )
    )
    # x has no vector (not embedded): left out of the union; the graph keeps its own list
    # union {a, b}: sparse 0, 2 -> z -1, 1; dense 1, 0 -> z 1, -1; graph over its own {b, g}:
    # b 1, g -1 (a takes the floor -1); g only in graph: sparse/dense floors -1, -1
    assert got == pytest.approx({"a": -1.0, "b": 1.0, "g": -3.0})
