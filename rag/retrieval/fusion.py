"""Rank fusion as pure functions.

Inputs are per-leg score maps ``{leg: {doc_id: score}}`` (each leg's own
candidate list); outputs are ``[(doc_id, fused_score)]`` best first, ties
broken by doc id so results are deterministic.

* RRF, Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms
  Condorcet and individual Rank Learning Methods", SIGIR 2009:
  ``score(d) = sum_leg w_leg / (k + rank_leg(d))`` with 1-based ranks and k = 60.
  Legs that do not return ``d`` contribute nothing.
* Convex combination of min-max normalised scores, Bruch, Gai & Ingber, "An
  Analysis of Fusion Functions for Hybrid Retrieval", TOIS 2023:
  ``score(d) = sum_leg w_leg * (s_leg(d) - min_leg) / (max_leg - min_leg)``;
  a leg that does not return ``d`` contributes 0; a leg whose candidates all
  tie contributes ``w_leg`` for each of them.
* Weighted sum of z-scores ("z-score" normalisation in Bruch et al. 2023, §4;
  Montague & Aslam, "Relevance Score Normalization for Metasearch", CIKM 2001):
  ``z_leg(d) = (s_leg(d) - mean_leg) / std_leg`` over the leg's own candidates
  (population std), ``score(d) = sum_leg w_leg * z_leg(d)``. A leg that does not
  return ``d`` contributes its lowest z (``d`` ranks below everything that leg
  returned); a leg whose candidates all tie contributes 0.
* Adaptive weights (``adaptive``): the z-score sum with the dense/sparse split
  set per query from the two legs' score distributions. Each leg's confidence
  is its top-1 margin, ``m_leg = (s_1 - mean(top k)) / std(top k)`` over its k =
  10 best scores (a query-performance predictor in the family of Cronen-Townsend
  et al.'s clarity and Shtok et al.'s NQC, TOIS 2012: a leg whose best
  candidate stands out of its own top list is more likely right). The dense
  share of the sparse+dense weight is
  ``sigmoid(logit(w_dense / (w_sparse + w_dense)) + slope * (m_dense - m_sparse))``;
  with ``slope = 0`` it is the configured split; other legs keep their weight.
* Re-scored z-scores (``rescored``): every candidate of the sparse or dense list is scored by
  both legs (the BMX score of a chunk for the query, the cosine of its stored vector), so the
  z-scores of both legs are taken over the same set, the union, and no candidate takes a floor.
* Dense pseudo-relevance feedback (``prf``), Rocchio, "Relevance Feedback in Information
  Retrieval" (1971), with the top of a first fused ranking as the feedback set (Xu & Croft,
  SIGIR 1996; for dense retrieval Li et al., "Pseudo Relevance Feedback with Deep Language
  Models and Dense Retrievers", TOIS 2023): the re-scored fusion with dense weight ``w0`` ranks
  the union; the mean vector of its top ``m`` is added to the query vector with weight ``beta``,
  ``q' = (q + beta * mean(v_1..v_m)) / |q + beta * mean(v_1..v_m)|``; every candidate of the
  union is scored again with ``q'`` (cosine of its stored vector) and the re-scored fusion with
  those dense scores is the answer. It helps where many passages answer a question (they pull
  the query toward each other). Searching the dense leg again with ``q'`` (``search``) ranks as
  well left out and costs one more vector search, so it is off.
* Agreement (measured only): the share of a leg's top k that the other leg also returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

FusionMethod = Literal["adaptive", "zscore", "weighted", "rrf"]
#: Methods that score candidates again through the legs (``Retriever`` runs them; see
#: :func:`feedback_search`).
FeedbackMethod = Literal["rescored", "prf"]

# Fusion per embedding model, measured on the five collections in ../shared/eval by
# leave-one-collection-out (bench/bench_fusion_loco.py, bench/results/fusion-loco.md).
# e5-small: dense pseudo-relevance feedback over re-scored z-scores (``prf``) has the best left-out
# worst-case margin over the best single leg of every family measured (min-max, z-score, RRF,
# re-scored, per-query weights from margins or agreement); dense weight 0.6 and the feedback
# parameters below are its fit on all five. USE: min-max, measured on four collections, only up to
# ~0.1 never trails BMX alone. A model not measured here gets min-max with the cautious 0.1.
MEASURED_FUSION: dict[str, str] = {"e5-small": "prf"}
MEASURED_DENSE_WEIGHT: dict[str, dict[str, float]] = {
    # e5-small min-max: 0.4, the previous default (its left-out worst case -0.029, rule *mean*)
    "e5-small": {"prf": 0.6, "weighted": 0.4},
    "use": {"weighted": 0.1},
}
MEASURED_FEEDBACK: dict[str, dict[str, float]] = {
    "e5-small": {"first_dense_weight": 0.6, "m": 10, "beta": 0.25}
}
CAUTIOUS_DENSE_WEIGHT = 0.1

MARGIN_K = 10  # scores per leg in the top-1 margin
AGREEMENT_K = 10  # top k of a leg in :func:`agreement`
ADAPTIVE_SLOPE = 0.5  # "adaptive" only (not the default): the left-out choice in 2 of 5 folds, 0 in 3


def default_dense_weight(model: str, method: str | None = None) -> float:
    """The dense leg's fusion weight for embedding ``model`` and fusion ``method`` (None: the
    model's default method) when none is configured; a method not measured for the model takes
    the weight of the model's default method."""
    per = MEASURED_DENSE_WEIGHT.get(model.strip().lower(), {})
    fallback = per.get(default_fusion(model), CAUTIOUS_DENSE_WEIGHT)
    return per.get(method or default_fusion(model), fallback)


def default_fusion(model: str) -> str:
    """The fusion method for embedding ``model`` when none is configured."""
    return MEASURED_FUSION.get(model.strip().lower(), "weighted")


def default_feedback(model: str) -> Feedback:
    """The ``prf`` parameters for embedding ``model`` when none are configured."""
    return _feedback(MEASURED_FEEDBACK.get(model.strip().lower(), {}))


def ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """Scores sorted best first; ties by id (ascending)."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def rrf(
    legs: Mapping[str, Mapping[str, float]], *, k: int = 60, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    out: dict[str, float] = {}
    for leg, scores in legs.items():
        w = 1.0 if weights is None else weights.get(leg, 0.0)
        if w == 0.0:
            continue
        for rank, (doc, _) in enumerate(ranked(scores), start=1):
            out[doc] = out.get(doc, 0.0) + w / (k + rank)
    return out


def minmax(scores: Mapping[str, float]) -> dict[str, float]:
    """Min-max normalise to [0, 1]; all-equal scores map to 1."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return dict.fromkeys(scores, 1.0)
    span = hi - lo
    return {d: (s - lo) / span for d, s in scores.items()}


def weighted(legs: Mapping[str, Mapping[str, float]], *, weights: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for leg, scores in legs.items():
        w = weights.get(leg, 0.0)
        if w == 0.0:
            continue
        for doc, s in minmax(scores).items():
            out[doc] = out.get(doc, 0.0) + w * s
    return out


def zscore(scores: Mapping[str, float]) -> dict[str, float]:
    """Standardise to mean 0, population std 1; all-equal scores map to 0."""
    if not scores:
        return {}
    n = len(scores)
    mean = math.fsum(scores.values()) / n
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores.values()) / n)
    if std == 0.0:
        return dict.fromkeys(scores, 0.0)
    return {d: (s - mean) / std for d, s in scores.items()}


def zscored(legs: Mapping[str, Mapping[str, float]], *, weights: Mapping[str, float]) -> dict[str, float]:
    """Weighted sum of per-leg z-scores; a leg missing a candidate contributes its lowest z."""
    normed = {leg: zscore(scores) for leg, scores in legs.items() if weights.get(leg, 0.0) != 0.0 and scores}
    docs: set[str] = set().union(*normed.values()) if normed else set()
    out = dict.fromkeys(docs, 0.0)
    for leg, z in normed.items():
        w, floor = weights[leg], min(z.values())
        for doc in docs:
            out[doc] += w * z.get(doc, floor)
    return out


def margin(scores: Mapping[str, float], k: int = MARGIN_K) -> float:
    """Top-1 margin of a leg: ``(s_1 - mean(top k)) / std(top k)``; 0 for fewer than two
    scores or a top k that ties."""
    top = sorted(scores.values(), reverse=True)[:k]
    if len(top) < 2:
        return 0.0
    mean = math.fsum(top) / len(top)
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in top) / len(top))
    return (top[0] - mean) / std if std > 0.0 else 0.0


def adaptive_weights(
    legs: Mapping[str, Mapping[str, float]], weights: Mapping[str, float], *, slope: float = ADAPTIVE_SLOPE
) -> dict[str, float]:
    """``weights`` with the sparse/dense split moved toward the leg whose top-1 stands out more
    for this query (module docstring). Unchanged unless both legs have candidates and weight."""
    out = dict(weights)
    ws, wd = weights.get("sparse", 0.0), weights.get("dense", 0.0)
    sparse, dense = legs.get("sparse"), legs.get("dense")
    if ws <= 0.0 or wd <= 0.0 or not sparse or not dense:
        return out
    total = ws + wd
    x = math.log(wd / ws) + slope * (margin(dense) - margin(sparse))
    share = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    out["sparse"], out["dense"] = total * (1.0 - share), total * share
    return out


def fuse(
    legs: Mapping[str, Mapping[str, float]],
    *,
    method: FusionMethod,
    weights: Mapping[str, float],
    rrf_k: int = 60,
    slope: float = ADAPTIVE_SLOPE,
) -> list[tuple[str, float]]:
    """Fuse per-leg candidates into one ranking (best first)."""
    if method == "rrf":
        return ranked(rrf(legs, k=rrf_k, weights=weights))
    if method == "zscore":
        return ranked(zscored(legs, weights=weights))
    if method == "adaptive":
        return ranked(zscored(legs, weights=adaptive_weights(legs, weights, slope=slope)))
    return ranked(weighted(legs, weights=weights))


def agreement(legs: Mapping[str, Mapping[str, float]], k: int = AGREEMENT_K) -> dict[str, float]:
    """Per leg, the share of its top ``k`` (:func:`ranked`) that another leg also returned; 0 for
    a leg with no candidates (or no other leg)."""
    out: dict[str, float] = {}
    for leg, scores in legs.items():
        top = [d for d, _ in ranked(scores)[:k]]
        others = set().union(*(set(s) for name, s in legs.items() if name != leg))
        out[leg] = sum(d in others for d in top) / len(top) if top else 0.0
    return out


def rocchio(query: np.ndarray, feedback: Sequence[np.ndarray], beta: float) -> np.ndarray:
    """``(q + beta * mean(feedback)) / |...|`` as float32; ``q`` (normalised) when there is no
    feedback, ``beta`` is 0 or the sum vanishes."""
    q = np.asarray(query, dtype=np.float64)
    q = q / np.linalg.norm(q)
    if not len(feedback) or beta == 0.0:
        return q.astype(np.float32)
    v = q + beta * np.mean(np.asarray(feedback, dtype=np.float64), axis=0)
    n = np.linalg.norm(v)
    return (v / n if n > 0 else q).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Feedback:
    """Parameters of :data:`FeedbackMethod` ``prf`` (fitted by leave-one-collection-out)."""

    #: dense weight of the first (re-scored) fusion that picks the feedback set
    first_dense_weight: float = 0.5
    #: chunks of the first ranking whose mean vector joins the query
    m: int = 10
    #: weight of that mean vector
    beta: float = 0.5
    #: search the dense leg again with the new vector (one more vector search) instead of
    #: re-scoring the candidates already found with it
    search: bool = False


def _feedback(p: Mapping[str, float]) -> Feedback:
    d = Feedback()
    return Feedback(
        first_dense_weight=float(p.get("first_dense_weight", d.first_dense_weight)),
        m=int(p.get("m", d.m)),
        beta=float(p.get("beta", d.beta)),
        search=bool(p.get("search", d.search)),
    )


#: ``scores(ids)``: the sparse leg's score of each id for this query.
SparseScorer = Callable[[list[str]], Mapping[str, float]]
#: ``vectors(ids)``: the stored vector of each id the dense leg has.
VectorFetcher = Callable[[list[str]], Mapping[str, np.ndarray]]
#: ``search(vector)``: the dense leg's candidates for a query vector.
DenseSearcher = Callable[[np.ndarray], Mapping[str, float]]


def _complete(
    legs: Mapping[str, Mapping[str, float]],
    query: np.ndarray,
    sparse_scores: SparseScorer,
    vectors: VectorFetcher,
    cache: dict[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    """The sparse and dense lists, each extended to every candidate of either (the union): a
    chunk the dense leg has no vector for is left out of the union. Fetched vectors go to
    ``cache``."""
    sparse, dense = dict(legs.get("sparse", {})), dict(legs.get("dense", {}))
    union = sorted(set(sparse) | set(dense))
    need = [d for d in union if d not in dense and d not in cache]
    if need:
        cache.update(vectors(need))
    q = np.asarray(query, dtype=np.float32)
    for d in union:
        if d not in dense and d in cache:
            dense[d] = round(float(cache[d] @ q), 6)
    union = [d for d in union if d in dense]
    missing = [d for d in union if d not in sparse]
    if missing:
        got = sparse_scores(missing)
        for d in missing:
            sparse[d] = float(got.get(d, 0.0))
    out = {name: dict(scores) for name, scores in legs.items() if name not in ("sparse", "dense")}
    out["sparse"] = {d: sparse[d] for d in union}
    out["dense"] = {d: dense[d] for d in union}
    return out


def feedback_search(
    legs: Mapping[str, Mapping[str, float]],
    query: np.ndarray,
    *,
    sparse_scores: SparseScorer,
    vectors: VectorFetcher,
    weights: Mapping[str, float],
    feedback: Feedback | Mapping[str, float] | None = None,
    dense_search: DenseSearcher | None = None,
    known: Mapping[str, np.ndarray] | None = None,
) -> list[tuple[str, float]]:
    """Re-scored z-score fusion (``feedback`` None) or dense pseudo-relevance feedback (module
    docstring), best first.

    With ``feedback``, the Rocchio vector re-scores the dense side of the union (no new search),
    or, given ``dense_search``, searches the dense leg again and the new union is fused.
    ``legs`` holds each leg's own list (``sparse``, ``dense``, optionally ``graph``, which keeps
    its own list); ``query`` is the dense leg's query vector. ``known`` holds stored vectors
    already at hand (those of the dense hits, read by the dense search): they are not fetched
    again, and must be what ``vectors`` gives for them."""
    if "sparse" not in legs or "dense" not in legs:
        return ranked(zscored(legs, weights=weights))
    cache: dict[str, np.ndarray] = dict(known or {})
    full = _complete(legs, query, sparse_scores, vectors, cache)
    if feedback is None:
        return ranked(zscored(full, weights=weights))
    fb = feedback if isinstance(feedback, Feedback) else _feedback(feedback)
    w0 = fb.first_dense_weight
    first = ranked(
        zscored({"sparse": full["sparse"], "dense": full["dense"]}, weights={"sparse": 1 - w0, "dense": w0})
    )
    top = [d for d, _ in first[: fb.m]]
    union = list(full["dense"]) if dense_search is None else top
    need = [d for d in union if d not in cache]
    if need:
        cache.update(vectors(need))
    q2 = rocchio(query, [cache[d] for d in top if d in cache], fb.beta)
    if dense_search is None:
        dense2 = {d: round(float(cache[d] @ q2), 6) for d in union if d in cache}
        sparse2 = {d: full["sparse"][d] for d in dense2}
        return ranked(zscored({**full, "sparse": sparse2, "dense": dense2}, weights=weights))
    again = {**legs, "dense": dict(dense_search(q2))}
    return ranked(zscored(_complete(again, q2, sparse_scores, vectors, cache), weights=weights))
