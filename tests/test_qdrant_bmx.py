"""BMX in Qdrant: golden scores, congruence with the in-process BMXIndex, shared statistics, repairs.

Everything runs on qdrant-client local mode, which takes the same calls as a
Qdrant server (sparse vectors, retrieve, scroll with filters).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from rag.errors import InputError, StoreError
from rag.sparse.bmx import BMXIndex, bmx_entropy_terms
from rag.sparse.qdrant_bmx import (
    IMPACT_VECTOR,
    META_POINT,
    CollectionStats,
    QdrantBMX,
    bmx_impacts,
    bmx_rescore,
)
from rag.vectors.base import point_id


def memory_index(**kwargs: object) -> QdrantBMX:
    return QdrantBMX(QdrantClient(location=":memory:"), "t", **kwargs)  # type: ignore[arg-type]


def synthetic(n: int, seed: int) -> tuple[list[str], list[list[str]], random.Random]:
    """Zipf-like token lists of 0-40 tokens over 200 terms (mixed Latin and CJK)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" if i % 3 else f"词{i}" for i in range(200)]

    def doc() -> list[str]:
        return [vocab[min(int(rng.paretovariate(1.0)) - 1, 199)] for _ in range(rng.randint(0, 40))]

    return [f"d{i}" for i in range(n)], [doc() for _ in range(n)], rng


def assert_hits_equal(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [d for d, _ in got] == [d for d, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-9)


def assert_same(ref: BMXIndex, qb: QdrantBMX, queries: list[list[str]], k: int = 10) -> None:
    for q in queries:
        assert_hits_equal(qb.search(q, k, candidates=10_000), ref.search(q, k))


# ----------------------------------------------------------------------------- golden


def test_rescore_golden_three_documents() -> None:
    # d1 = [a, b], d2 = [a], d3 = [c]; query [a]. N = 3, avgdl = 4/3, alpha = clip(avgdl/100) = 0.5,
    # beta = 1/ln 4, IDF(a) = ln(1 + 1.5/2.5) = ln 1.6, E~(a) = E_avg = 1, S = 1 for d1 and d2.
    # d2: ln1.6 * 1.5 / (1 + 0.5 * 1 * 3/4 + 0.5) = 0.8 ln1.6; d1: ln1.6 * 1.5 / (1 + 0.5 * 2 * 3/4 + 0.5).
    bonus = 1 / math.log(4)
    want_d2 = 0.8 * math.log(1.6) + bonus
    want_d1 = (1.5 / 2.25) * math.log(1.6) + bonus
    ent_a = 2 * float(bmx_entropy_terms([1])[0])
    scores = bmx_rescore(
        [[1.0], [1.0]], [2, 1], [1], df=[2], ent=[ent_a], n_docs=3, avgdl=4 / 3, alpha=0.5, beta=bonus
    )
    np.testing.assert_allclose(scores, [want_d1, want_d2], rtol=1e-12)

    qb = memory_index()
    qb.upsert(["d1", "d2", "d3"], [["a", "b"], ["a"], ["c"]])
    got = qb.search(["a"], 10)
    assert [d for d, _ in got] == ["d2", "d1"]
    np.testing.assert_allclose([s for _, s in got], [want_d2, want_d1], rtol=1e-12)


def test_impacts_are_bmx_saturation_with_unit_entropy() -> None:
    # tf (alpha + 1) / (tf + alpha |D| / avgdl + alpha): tf = 2, |D| = 10, avgdl = 5, alpha = 1 -> 4 / 5
    np.testing.assert_allclose(bmx_impacts([2.0], [10], avgdl=5.0, alpha=1.0), [0.8])


def test_rescore_rejects_mismatched_shapes() -> None:
    with pytest.raises(InputError):
        bmx_rescore([1.0, 2.0], [1], [1], df=[1], ent=[0.5], n_docs=1, avgdl=1, alpha=1, beta=1)
    with pytest.raises(InputError):
        bmx_rescore([[1.0, 2.0]], [1], [1], df=[1], ent=[0.5], n_docs=1, avgdl=1, alpha=1, beta=1)


# ----------------------------------------------------------------------------- congruence


@pytest.mark.parametrize(
    "options",
    [{}, {"alpha": 1.2, "beta": 0.3, "normalize_scores": True}],
    ids=["defaults", "alpha-beta-normalized"],
)
def test_matches_in_process_index_through_updates(options: dict[str, object]) -> None:
    ids, docs, rng = synthetic(300, seed=5)
    ref = BMXIndex(**options)  # type: ignore[arg-type]
    qb = memory_index(**options)
    for s in range(0, len(ids), 64):
        ref.upsert(ids[s : s + 64], docs[s : s + 64])
        qb.upsert(ids[s : s + 64], docs[s : s + 64])
    replaced = ids[::9]
    new_docs = [[rng.choice(["w1", "w2", "词3", "new"]) for _ in range(rng.randint(1, 6))] for _ in replaced]
    ref.upsert(replaced, new_docs)
    qb.upsert(replaced, new_docs)
    for doc_id in ids[5:40:4]:  # single upserts, as a watcher would send them
        ref.upsert([doc_id], [["w1", "w1", "词6"]])
        qb.upsert([doc_id], [["w1", "w1", "词6"]])
    gone = [*ids[1::13], "never-added"]
    assert qb.delete(gone) == ref.delete(gone) == len(ids[1::13])
    assert len(qb) == len(ref)
    vocab = sorted({t for d in docs for t in d} | {"new", "unknown"})
    queries = [[rng.choice(vocab) for _ in range(rng.randint(1, 6))] for _ in range(150)]
    queries += [["w1", "w1", "w1"], ["词6", "unknown"], ["new"]]
    assert_same(ref, qb, queries)


def test_default_depth_finds_the_exact_top_10_on_a_small_corpus() -> None:
    ids, docs, rng = synthetic(400, seed=11)
    ref, qb = BMXIndex(), memory_index()
    ref.upsert(ids, docs)
    qb.upsert(ids, docs)
    vocab = sorted({t for d in docs for t in d})
    for _ in range(50):
        q = [rng.choice(vocab) for _ in range(rng.randint(1, 4))]
        assert [d for d, _ in qb.search(q, 10)] == [d for d, _ in ref.search(q, 10)]


def test_shallow_candidates_still_give_exact_scores() -> None:
    ids, docs, rng = synthetic(300, seed=3)
    ref, qb = BMXIndex(), memory_index(candidate_vector="tf")
    ref.upsert(ids, docs)
    qb.upsert(ids, docs)
    vocab = sorted({t for d in docs for t in d})
    for _ in range(30):
        q = [rng.choice(vocab) for _ in range(3)]
        exact = dict(ref.search(q, 1000))
        got = qb.search(q, 5, candidates=5)
        assert len(got) == min(5, len(exact))
        for doc_id, score in got:  # a shallow pool may miss documents, never mis-score one
            assert score == pytest.approx(exact[doc_id], abs=1e-9)


# ----------------------------------------------------------------------------- shared statistics


def test_a_second_replica_reads_the_writers_statistics_without_local_state() -> None:
    client = QdrantClient(location=":memory:")
    writer = QdrantBMX(client, "shared")
    reader = QdrantBMX(client, "shared")  # opens the existing collections, keeps nothing in memory
    writer.upsert(["a", "b"], [["docker", "gpu"], ["ollama"]])
    assert [d for d, _ in reader.search(["docker"], 5)] == ["a"]
    writer.upsert(["c"], [["docker", "docker"]])
    writer.delete(["a"])
    ref = BMXIndex()
    ref.upsert(["a", "b"], [["docker", "gpu"], ["ollama"]])
    ref.upsert(["c"], [["docker", "docker"]])
    ref.delete(["a"])
    assert reader.search(["docker", "ollama"], 5) == ref.search(["docker", "ollama"], 5)
    assert reader.stats().n_docs == 2


def test_statistics_equal_a_full_recount() -> None:
    ids, docs, rng = synthetic(200, seed=8)
    qb = memory_index()
    for s in range(0, len(ids), 50):
        qb.upsert(ids[s : s + 50], docs[s : s + 50])
    qb.upsert(ids[:30], [["w1"] * rng.randint(1, 4) for _ in range(30)])
    qb.delete(ids[100:140])
    stored_before = qb.stats()
    terms_before = qb.term_stats({t for d in docs for t in d} | {"w1"})
    rebuilt = qb.rebuild_stats()
    terms_after = qb.term_stats(terms_before)
    assert (rebuilt.n_docs, rebuilt.total_len) == (stored_before.n_docs, stored_before.total_len)
    for term, ts in terms_before.items():
        assert terms_after[term].df == ts.df
        assert terms_after[term].ent == pytest.approx(ts.ent, abs=1e-9)
    # and both agree with counting the surviving documents directly
    survivors = {i: d for i, d in zip(ids, docs, strict=True) if not 100 <= int(i[1:]) < 140}
    df = Counter(t for i, d in survivors.items() if int(i[1:]) >= 30 for t in set(d))
    df["w1"] += 30  # the replaced documents hold only w1
    for term in ("w1", "w2", "词3"):
        assert terms_after[term].df == df[term]


def test_a_write_interrupted_between_its_steps_is_repaired_by_the_next_one() -> None:
    qb = memory_index()
    qb.upsert(["a", "b"], [["x", "y"], ["x"]])
    ref = BMXIndex()
    ref.upsert(["a", "b"], [["x", "y"], ["x"]])
    # a writer that died after writing postings but before the statistics: pending set, counts stale
    stats = qb.stats()
    qb.client.upsert(
        qb.stats_collection,
        points=[
            models.PointStruct(
                id=META_POINT,
                vector={},
                payload={**vars(CollectionStats(1, 1, stats.next_tid, stats.next_seq, 7)), "pending": True},
            )
        ],
    )
    qb.upsert(["c"], [["x", "z"]])
    ref.upsert(["c"], [["x", "z"]])
    assert not qb.stats().pending
    assert qb.stats().n_docs == 3
    assert_hits_equal(qb.search(["x", "z"], 5), ref.search(["x", "z"], 5))


def stored_impacts(qb: QdrantBMX, doc_id: str) -> list[float]:
    records: Any = qb.client.retrieve(qb.collection, ids=[point_id(doc_id)], with_vectors=[IMPACT_VECTOR])
    return list(records[0].vector[IMPACT_VECTOR].values)


def test_reweight_writes_impacts_with_current_statistics() -> None:
    qb = memory_index()
    qb.upsert(["short"], [["a"]])
    qb.upsert(["long"], [["a"] * 2 + ["b"] * 38])  # avgdl moves from 1 to 20.5
    want = bmx_impacts([1.0], [1], avgdl=20.5, alpha=0.5).tolist()
    assert stored_impacts(qb, "short") != pytest.approx(want)  # written when avgdl was 1
    assert qb.reweight() == 2
    assert stored_impacts(qb, "short") == pytest.approx(want)


def test_persists_in_local_mode_on_disk(tmp_path: Path) -> None:
    ids, docs, _ = synthetic(120, seed=2)
    path = tmp_path / "qdrant"
    with QdrantBMX(QdrantClient(path=str(path)), "disk") as qb:
        qb.upsert(ids, docs)
        want = qb.search(["w1", "词3"], 10)
    with QdrantBMX(QdrantClient(path=str(path)), "disk") as qb:
        assert qb.search(["w1", "词3"], 10) == want
        assert len(qb) == 120


# ----------------------------------------------------------------------------- edges and errors


def test_queries_without_known_tokens_and_empty_collections() -> None:
    qb = memory_index()
    assert qb.search(["anything"], 5) == []
    qb.upsert(["empty", "one"], [[], ["t"]])
    assert len(qb) == 2  # an empty document still counts in N and avgdl, as in BMXIndex
    assert qb.search(["nothing", "here"], 5) == []
    assert qb.search([], 5) == []
    assert qb.search(["t"], 0) == []
    ref = BMXIndex()
    ref.upsert(["empty", "one"], [[], ["t"]])
    assert_hits_equal(qb.search(["t"], 5), ref.search(["t"], 5))
    assert qb.delete(["one", "empty", "one"]) == 2
    assert qb.search(["t"], 5) == []
    assert qb.stats().total_len == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda qb: qb.search("docker", 5), "not a string"),
        (lambda qb: qb.search(["docker"], -1), "k must be"),
        (lambda qb: qb.upsert(["a"], [["x"], ["y"]]), "1 ids but 2"),
        (lambda qb: qb.upsert(["a"], ["x y"]), "not a string"),
        (lambda qb: qb.upsert(["a"], [["x", 3]]), "tokens must be strings"),
        (lambda qb: qb.upsert([1], [["x"]]), "ids must be strings"),
    ],
)
def test_bad_input_raises_input_error(call: object, message: str) -> None:
    qb = memory_index()
    with pytest.raises(InputError, match=message):
        call(qb)  # type: ignore[operator]


def test_constructor_checks() -> None:
    with pytest.raises(InputError):
        memory_index(candidates=0)
    with pytest.raises(InputError):
        memory_index(alpha=-1.0)
    with pytest.raises(InputError):
        memory_index(candidate_vector="dense")
    client = QdrantClient(location=":memory:")
    client.create_collection(
        "dense", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
    )
    with pytest.raises(StoreError, match="not a BMX index"):
        QdrantBMX(client, "dense")


def test_closed_index_refuses_calls() -> None:
    qb = memory_index()
    qb.close()
    qb.close()
    with pytest.raises(StoreError, match="closed"):
        qb.search(["x"], 1)
