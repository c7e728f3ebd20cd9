"""Golden tests for eval.metrics, plus an oracle comparison with trec_eval (pytrec_eval)."""

from __future__ import annotations

import math
import random

import pytest

from eval.metrics import evaluate_run, evaluate_run_per_query, mrr_at_k, ndcg_at_k, rank_scores, recall_at_k
from rag.errors import InputError

# ---------------------------------------------------------------- nDCG golden cases


def test_ndcg_perfect_binary() -> None:
    assert ndcg_at_k(["a", "b", "x"], {"a": 1, "b": 1}, 10) == pytest.approx(1.0)


def test_ndcg_single_relevant_at_rank_two() -> None:
    # DCG = 1/log2(3), IDCG = 1/log2(2) = 1
    assert ndcg_at_k(["x", "a"], {"a": 1}, 10) == pytest.approx(1 / math.log2(3))


def test_ndcg_graded_hand_computed() -> None:
    qrels = {"a": 3, "b": 2, "c": 1, "n": 0}
    ranked = ["c", "n", "a", "b"]
    # DCG@3 = 1/log2(2) + 0 + 3/log2(4) = 1 + 1.5 = 2.5
    # IDCG@3 = 3/1 + 2/log2(3) + 1/log2(4) = 3 + 1.2618595 + 0.5
    idcg = 3 + 2 / math.log2(3) + 0.5
    assert ndcg_at_k(ranked, qrels, 3) == pytest.approx(2.5 / idcg, abs=1e-12)
    assert ndcg_at_k(ranked, qrels, 3) == pytest.approx(0.52500, abs=1e-5)


def test_ndcg_ideal_uses_all_qrels_not_only_retrieved() -> None:
    # "b" is relevant but not retrieved: the ideal still counts it.
    assert ndcg_at_k(["a"], {"a": 1, "b": 1}, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ndcg_cutoff_excludes_lower_ranks() -> None:
    assert ndcg_at_k(["x", "y", "a"], {"a": 1}, 2) == 0.0
    assert ndcg_at_k(["x", "y", "a"], {"a": 1}, 3) == pytest.approx(0.5)


def test_ndcg_zero_without_relevant() -> None:
    assert ndcg_at_k(["a", "b"], {}, 10) == 0.0
    assert ndcg_at_k(["a", "b"], {"a": 0, "b": -1}, 10) == 0.0


def test_negative_grade_is_not_relevant_and_not_a_penalty() -> None:
    assert ndcg_at_k(["bad", "a"], {"bad": -2, "a": 1}, 10) == pytest.approx(1 / math.log2(3))
    assert recall_at_k(["bad"], {"bad": -2, "a": 1}, 10) == 0.0
    assert mrr_at_k(["bad", "a"], {"bad": -2, "a": 1}, 10) == 0.5


def test_duplicates_count_once_at_first_position() -> None:
    # the repeat is dropped, so "b" moves up to rank 2
    assert recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 1) == 0.5
    assert recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 2) == 1.0
    assert ndcg_at_k(["a", "a"], {"a": 1, "b": 1}, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # the repeat of "x" does not push "b" to rank 3
    assert mrr_at_k(["x", "x", "b"], {"b": 1}, 2) == 0.5


# ---------------------------------------------------------------- recall / MRR golden cases


def test_recall_hand_computed() -> None:
    qrels = {"a": 1, "b": 2, "c": 1, "n": 0}
    ranked = ["a", "n", "x", "c", "b"]
    assert recall_at_k(ranked, qrels, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, qrels, 4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, qrels, 100) == pytest.approx(1.0)
    assert recall_at_k([], qrels, 10) == 0.0
    assert recall_at_k(ranked, {}, 10) == 0.0


def test_mrr_hand_computed() -> None:
    qrels = {"c": 1, "d": 1}
    assert mrr_at_k(["a", "b", "c", "d"], qrels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["a", "b", "c", "d"], qrels, 2) == 0.0
    assert mrr_at_k(["d"], qrels, 1) == 1.0
    assert mrr_at_k([], qrels, 10) == 0.0


@pytest.mark.parametrize("bad_k", [0, -1, True, 2.5])
def test_invalid_k_raises(bad_k: object) -> None:
    with pytest.raises(InputError):
        ndcg_at_k(["a"], {"a": 1}, bad_k)  # type: ignore[arg-type]


# ---------------------------------------------------------------- evaluate_run


def test_rank_scores_ties_break_by_doc_id_ascending() -> None:
    assert rank_scores({"b": 1.0, "a": 1.0, "c": 2.0, "d": 0.5}) == ["c", "a", "b", "d"]


def test_evaluate_run_averages_over_queries_with_relevant_docs() -> None:
    qrels = {
        "q1": {"a": 1},
        "q2": {"b": 2, "c": 1},
        "q3": {"z": 0},  # nothing relevant: excluded
        "q4": {"d": 1},  # missing from the run: scores 0
    }
    run = {
        "q1": ["a", "x"],
        "q2": ["x", "c", "b"],
        "q3": ["z"],
        "q9": ["a"],  # no qrels: ignored
    }
    res = evaluate_run(run, qrels, ks=(1, 10))
    assert set(res) == {"ndcg@1", "ndcg@10", "recall@1", "recall@10", "mrr@1", "mrr@10"}
    q2_ndcg10 = (1 / math.log2(3) + 2 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert res["ndcg@10"] == pytest.approx((1 + q2_ndcg10 + 0) / 3)
    assert res["recall@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert res["recall@10"] == pytest.approx((1 + 1 + 0) / 3)
    assert res["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert res["mrr@1"] == pytest.approx(1 / 3)


def test_evaluate_run_default_names() -> None:
    res = evaluate_run({"q": ["a"]}, {"q": {"a": 1}})
    for name in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert res[name] == 1.0


def test_evaluate_run_accepts_scores_with_deterministic_ties() -> None:
    qrels = {"q": {"b": 1}}
    # "a" and "b" tie; "a" < "b" so "a" ranks first and "b" second.
    res = evaluate_run({"q": {"b": 0.5, "a": 0.5}}, qrels, ks=(1, 2))
    assert res["mrr@2"] == 0.5
    assert res["recall@1"] == 0.0
    same = evaluate_run({"q": ["a", "b"]}, qrels, ks=(1, 2))
    assert res == same


def test_evaluate_run_per_query_keys() -> None:
    per_q = evaluate_run_per_query({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"b": 1}}, ks=(10,))
    assert per_q == {
        "q1": {"ndcg@10": 1.0, "recall@10": 1.0, "mrr@10": 1.0},
        "q2": {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0},
    }


def test_evaluate_run_errors() -> None:
    with pytest.raises(InputError):
        evaluate_run({"q": ["a"]}, {"q": {"a": 0}})
    with pytest.raises(InputError):
        evaluate_run({"q": ["a"]}, {"q": {"a": 1}}, ks=())
    with pytest.raises(InputError):
        evaluate_run({"q": "abc"}, {"q": {"a": 1}})  # type: ignore[dict-item]


# ---------------------------------------------------------------- oracle: trec_eval via pytrec_eval


def _random_collection(seed: int) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    rng = random.Random(seed)
    docs = [f"d{i:03d}" for i in range(300)]
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for qi in range(50):
        qid = f"q{qi:02d}"
        judged = rng.sample(docs, rng.randint(1, 25))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        if qi % 7 == 0:  # some queries with nothing relevant
            qrels[qid] = dict.fromkeys(judged, 0)
        retrieved = rng.sample(docs, rng.randint(0, 150))
        # Distinct scores so that trec_eval's own tie order does not matter.
        scores = rng.sample(range(10_000), len(retrieved))
        run[qid] = {d: float(s) for d, s in zip(retrieved, scores, strict=True)}
    return run, qrels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_trec_eval(seed: int) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run, qrels = _random_collection(seed)
    ks = (1, 5, 10, 100)
    ours = evaluate_run_per_query(run, qrels, ks=ks)

    measures = {f"ndcg_cut.{','.join(map(str, ks))}", f"recall.{','.join(map(str, ks))}"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    # MRR@k = trec_eval recip_rank on the run cut at depth k.
    ref_rr = {}
    for k in ks:
        cut = {q: dict(sorted(r.items(), key=lambda it: -it[1])[:k]) for q, r in run.items()}
        ref_rr[k] = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)

    checked = 0
    for qid, metrics in ours.items():
        for k in ks:
            assert metrics[f"ndcg@{k}"] == pytest.approx(ref[qid][f"ndcg_cut_{k}"], abs=1e-9)
            assert metrics[f"recall@{k}"] == pytest.approx(ref[qid][f"recall_{k}"], abs=1e-9)
            rr = ref_rr[k].get(qid, {}).get("recip_rank", 0.0)
            assert metrics[f"mrr@{k}"] == pytest.approx(rr, abs=1e-9)
            checked += 1
    assert len(ours) >= 40  # most of the 50 queries have something relevant
    assert checked == len(ours) * len(ks)

    means = evaluate_run(run, qrels, ks=ks)
    for k in ks:
        ref_mean = sum(ref[q][f"ndcg_cut_{k}"] for q in ours) / len(ours)
        assert means[f"ndcg@{k}"] == pytest.approx(ref_mean, abs=1e-9)
