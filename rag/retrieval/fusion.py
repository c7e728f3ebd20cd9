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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

FusionMethod = Literal["adaptive", "zscore", "weighted", "rrf"]

# Weight of the dense leg in min-max weighted fusion (the sparse leg takes 1 - w), per embedding
# model. e5-small: fitted on the five collections in ../shared/eval and checked by
# leave-one-collection-out (bench/bench_fusion_loco.py, bench/results/fusion-loco.md): 0.4 has the
# best worst-case margin over the best single leg of every family measured (z-score, RRF, re-scored
# and per-query adaptive weights included). USE: measured on four collections, only up to ~0.1 never
# trails BMX alone. A model not measured here gets the cautious 0.1.
MEASURED_DENSE_WEIGHT: dict[str, float] = {"e5-small": 0.4, "use": 0.1}
CAUTIOUS_DENSE_WEIGHT = 0.1

MARGIN_K = 10  # scores per leg in the top-1 margin
ADAPTIVE_SLOPE = 0.5  # "adaptive" only (not the default): the left-out choice in 2 of 5 folds, 0 in 3


def default_dense_weight(model: str) -> float:
    """The dense leg's fusion weight for embedding ``model`` when none is configured."""
    return MEASURED_DENSE_WEIGHT.get(model.strip().lower(), CAUTIOUS_DENSE_WEIGHT)


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
