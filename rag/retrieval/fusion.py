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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

FusionMethod = Literal["weighted", "rrf"]

# Weight of the dense leg in min-max weighted fusion (the sparse leg takes 1 - w), measured per
# embedding model on the four collections in ../shared/eval (bench/results/fusion-*.md): with
# e5-small 0.3 beats the best single leg on every set and has the best mean but one; with USE only
# up to ~0.1 never trails BMX alone. A model not measured here gets the cautious 0.1.
MEASURED_DENSE_WEIGHT: dict[str, float] = {"e5-small": 0.3, "use": 0.1}
CAUTIOUS_DENSE_WEIGHT = 0.1


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


def fuse(
    legs: Mapping[str, Mapping[str, float]],
    *,
    method: FusionMethod,
    weights: Mapping[str, float],
    rrf_k: int = 60,
) -> list[tuple[str, float]]:
    """Fuse per-leg candidates into one ranking (best first)."""
    if method == "rrf":
        return ranked(rrf(legs, k=rrf_k, weights=weights))
    return ranked(weighted(legs, weights=weights))
