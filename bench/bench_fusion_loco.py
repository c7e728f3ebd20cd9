"""Fusion chosen by leave-one-collection-out: every weight and threshold is fitted on the other
collections and scored on the one left out.

    python bench/bench_fusion_loco.py [--sets a,b,...] [--model e5-small] [--graph] [--out bench/results/fusion-loco.md]

Leg runs come from ``bench_fusion.leg_runs`` and ``bench_fusion.full_scores`` (cached under
bench/out/fusion/<model>/<set>; building them indexes and embeds, later runs take a few minutes).
Every query's BMX score and cosine for every chunk are held in memory, so a family may score any
chunk with both legs (re-scoring) or search the dense leg again (pseudo-relevance feedback).
Each leg's own candidates are its top 100, as in ``Retriever.search``.

Families (each a grid of parameters):

* ``minmax``    min-max normalised weighted sum over each leg's own list (today's default)
* ``zscore``    z-score normalised weighted sum over each leg's own list
* ``rrf``       weighted RRF with k fitted
* ``rescored-minmax`` / ``rescored-z``  every candidate of either leg scored by both legs, then
  min-max or z-score over the union and a weighted sum (``fusion.rescored``)
* ``adaptive``  per-query dense share from the legs' top-1 margins (``fusion.adaptive_weights``)
* ``agreement`` ``rescored-z`` with a per-query dense share from agreement between the legs: the
  share of a leg's top 10 that the other leg also returned in its top 100
* ``prf``       dense pseudo-relevance feedback: ``rescored-z`` (dense weight ``w0``), the mean
  vector of its top ``m`` chunks added to the query vector (Rocchio, weight ``beta``), the dense
  side of the same union scored again with it, then ``rescored-z`` (dense weight ``wd``)
* ``prf-search`` as ``prf``, but the dense leg searched again with the new vector (its top 100)
  and the new union fused
* ``prf-both`` (``--sparse-prf`` only) ``prf-search`` plus BMX query expansion (RM3-like)

For each family and each left-out collection the parameters are chosen on the other collections
by one of two rules, both reported: ``worst`` (largest worst-case margin over the best single leg
on those collections, then their mean) and ``mean`` (largest mean nDCG@10, each collection
counting once). The family shipped is the one with the best left-out worst-case margin under the
``worst`` rule (the goal is never to lose to the best leg), then the best left-out mean; its
parameters are those the same rule fits on all collections. The graph leg (``--graph``) is a third
weight in the ``zscore`` and ``prf`` grids.

nDCG@10 is computed at corpus-entry level (an entry's rank is its best chunk's), as
``eval.metrics.ndcg_at_k``; the shipped default is re-scored through ``rag.retrieval.fusion`` so
the shipped functions are what the table reports.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_fusion import DEPTH, EVAL_ROOT, full_scores, leg_runs, runs_path  # noqa: E402

from eval.metrics import evaluate_run  # noqa: E402
from rag.retrieval import fusion  # noqa: E402

SETS = ["xquad_en", "xquad_zh", "cmrc2018_dev_zh", "covidqa_chunks_en", "rgb_int_zh"]
TOP = 128  # sorted positions scanned for the first 10 distinct corpus entries
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"
RULES = ("worst", "mean")


@dataclass
class Collection:
    """One collection: every query x every chunk."""

    name: str
    qids: list[str]
    ids: list[str]
    vecs: np.ndarray  # unit chunk vectors (chunks x dim)
    qvecs: np.ndarray  # unit query vectors
    sp: np.ndarray  # BMX score (0: no query token)
    de: np.ndarray  # cosine
    gr: np.ndarray  # graph score (0 where the graph leg did not return it)
    in_sp: np.ndarray  # in the leg's own top DEPTH
    in_de: np.ndarray
    in_gr: np.ndarray
    rk_sp: np.ndarray  # 1-based rank in the leg's own list (inf outside)
    rk_de: np.ndarray
    rk_gr: np.ndarray
    tie: np.ndarray  # rank of each chunk id (ties break by id), shape (1, chunks)
    doc: np.ndarray  # corpus-entry index per chunk
    gain: np.ndarray
    idcg: np.ndarray
    raw: dict  # the cached leg runs


def top_mask(x: np.ndarray, k: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """Per row: mask of the ``k`` best finite entries (ties by column order, as ids are sorted
    the same way in ``load``) and their 1-based ranks (inf outside)."""
    order = np.argsort(-x, axis=1, kind="stable")[:, :k]
    ok = np.isfinite(np.take_along_axis(x, order, axis=1))
    mask = np.zeros(x.shape, dtype=bool)
    rank = np.full(x.shape, np.inf)
    rows = np.arange(x.shape[0])[:, None]
    mask[rows, order] = ok
    rank[rows, order] = np.where(ok, np.arange(1, order.shape[1] + 1), np.inf)
    return mask, rank


def load(name: str, model: str) -> Collection:
    runs = leg_runs(name, model)
    full = full_scores(name, model)
    order = np.argsort(full["ids"], kind="stable")  # chunks sorted by id: column order = id order
    ids = [str(x) for x in full["ids"][order]]
    qids = [str(q) for q in full["qids"]]
    vecs = full["vecs"][order].astype(np.float32)
    qvecs = full["qvecs"].astype(np.float32)
    sp = full["bmx"][:, order]
    de = (qvecs @ vecs.T).astype(np.float64)
    pos = {c: j for j, c in enumerate(ids)}
    gr = np.zeros(sp.shape)
    in_gr = np.zeros(sp.shape, dtype=bool)
    rk_gr = np.full(sp.shape, np.inf)
    for i, q in enumerate(qids):
        for rank, (c, s) in enumerate(runs["queries"][q]["graph"], start=1):
            gr[i, pos[c]], in_gr[i, pos[c]], rk_gr[i, pos[c]] = s, True, rank
    in_sp, rk_sp = top_mask(np.where(sp > 0, sp, -np.inf))
    in_de, rk_de = top_mask(de)
    docs: dict[str, int] = {}
    doc = np.array([docs.setdefault(str(d), len(docs)) for d in full["docs"][order]])
    doc_names = list(docs)
    qrels = runs["qrels"]
    gain = np.zeros(sp.shape)
    idcg = np.zeros(len(qids))
    for i, q in enumerate(qids):
        rel = np.array([max(0, qrels[q].get(d, 0)) for d in doc_names], dtype=float)
        gain[i] = rel[doc]
        ideal = sorted((g for g in qrels[q].values() if g > 0), reverse=True)[:10]
        idcg[i] = sum(g / math.log2(k + 2) for k, g in enumerate(ideal))
    tie = np.arange(len(ids))[None, :]
    return Collection(
        name, qids, ids, vecs, qvecs, sp, de, gr, in_sp, in_de, in_gr, rk_sp, rk_de, rk_gr,
        tie, doc, gain, idcg, runs,
    )  # fmt: skip


def ndcg10(c: Collection, score: np.ndarray) -> np.ndarray:
    """nDCG@10 per query of the ranking ``score`` gives (higher first, ties by chunk id; -inf =
    not retrieved)."""
    k = min(TOP, score.shape[1])
    part = (
        np.argpartition(-score, k - 1, axis=1)[:, :k]
        if k < score.shape[1]
        else np.tile(c.tie, (len(score), 1))
    )
    s = np.take_along_axis(score, part, axis=1)
    t = np.take_along_axis(np.broadcast_to(c.tie, score.shape), part, axis=1)
    o = np.lexsort((t, -s), axis=-1)
    order = np.take_along_axis(part, o, axis=1)
    d = c.doc[order]
    g = np.take_along_axis(c.gain, order, axis=1)
    ok = np.take_along_axis(score, order, axis=1) > -np.inf
    by_doc = np.argsort(d, axis=1, kind="stable")  # equal docs adjacent, in rank order
    sd = np.take_along_axis(d, by_doc, axis=1)
    lead = np.ones_like(sd, dtype=bool)
    lead[:, 1:] = sd[:, 1:] != sd[:, :-1]
    first = np.zeros_like(lead)
    np.put_along_axis(first, by_doc, lead, axis=1)
    first &= ok
    rank = np.cumsum(first, axis=1)
    disc = np.where(first & (rank <= 10), 1.0 / np.log2(np.maximum(rank, 1) + 1.0), 0.0)
    return (g * disc).sum(axis=1) / np.maximum(c.idcg, 1e-12)


# ---------------------------------------------------------------- normalisations (row-wise)


def _minmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lo = np.where(mask, x, np.inf).min(axis=1, keepdims=True)
    hi = np.where(mask, x, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(mask, out, 0.0)


def _zscore(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """z-score over the masked entries; 0 for an all-equal row; masked-out entries get the row's
    minimum z (a candidate a leg did not return ranks below all that it did)."""
    n = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    mu = np.where(mask, x, 0.0).sum(axis=1, keepdims=True) / n
    var = np.where(mask, (x - mu) ** 2, 0.0).sum(axis=1, keepdims=True) / n
    sd = np.sqrt(var)
    z = np.where(sd > 0, (x - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    zmin = np.where(mask, z, np.inf).min(axis=1, keepdims=True)
    zmin = np.where(np.isfinite(zmin), zmin, 0.0)
    return np.where(mask, z, zmin)


def _margin(x: np.ndarray, mask: np.ndarray, k: int = fusion.MARGIN_K) -> np.ndarray:
    """Top-1 minus the mean of the top k, in standard deviations of the top k (per row)."""
    top = -np.sort(-np.where(mask, x, -np.inf), axis=1)[:, :k]
    ok = np.isfinite(top)
    n = np.maximum(ok.sum(axis=1), 1)
    t = np.where(ok, top, 0.0)
    mu = t.sum(axis=1) / n
    sd = np.sqrt(np.where(ok, (t - mu[:, None]) ** 2, 0.0).sum(axis=1) / n)
    return np.where(sd > 0, (t[:, 0] - mu) / np.where(sd > 0, sd, 1.0), 0.0)


def _share(wd: float, x: np.ndarray) -> np.ndarray:
    """sigmoid(logit(wd) + x) as a column."""
    wd = min(max(wd, 1e-9), 1 - 1e-9)
    return (1.0 / (1.0 + np.exp(-(math.log(wd / (1 - wd)) + x))))[:, None]


# ---------------------------------------------------------------- families


Params = dict[str, float]
Family = tuple[Callable[[Collection, Params], np.ndarray], list[Params]]

W_DENSE = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.1)]
W_GRAPH = [0.0, 0.05, 0.1, 0.2]


def _grid(**axes: list[float]) -> list[Params]:
    keys = list(axes)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*axes.values())]


def _keep(c: Collection, p: Params, in_de: np.ndarray | None = None) -> np.ndarray:
    """Candidates of the legs with weight > 0 (as in ``Retriever.search``)."""
    return c.in_sp | (c.in_de if in_de is None else in_de) | (c.in_gr & (p.get("wg", 0.0) > 0))


def f_minmax(c: Collection, p: Params) -> np.ndarray:
    wd, wg = p["wd"], p.get("wg", 0.0)
    s = (1 - wd) * _minmax(c.sp, c.in_sp) + wd * _minmax(c.de, c.in_de) + wg * _minmax(c.gr, c.in_gr)
    return np.where(_keep(c, p), s, -np.inf)


def f_zscore(c: Collection, p: Params) -> np.ndarray:
    wd, wg = p["wd"], p.get("wg", 0.0)
    s = (1 - wd) * _zscore(c.sp, c.in_sp) + wd * _zscore(c.de, c.in_de) + wg * _zscore(c.gr, c.in_gr)
    return np.where(_keep(c, p), s, -np.inf)


def f_rrf(c: Collection, p: Params) -> np.ndarray:
    wd, wg, k = p["wd"], p.get("wg", 0.0), p["k"]
    s = (1 - wd) / (k + c.rk_sp) + wd / (k + c.rk_de) + wg / (k + c.rk_gr)
    return np.where(_keep(c, p), s, -np.inf)


def _rescored(c: Collection, de: np.ndarray, in_de: np.ndarray, wd: Any, p: Params, norm: str) -> np.ndarray:
    u = c.in_sp | in_de
    f = _zscore if norm == "z" else _minmax
    s = (1 - wd) * f(c.sp, u) + wd * f(de, u) + p.get("wg", 0.0) * _zscore(c.gr, c.in_gr)
    return np.where(_keep(c, p, in_de), s, -np.inf)


def f_rescored_mm(c: Collection, p: Params) -> np.ndarray:
    return _rescored(c, c.de, c.in_de, p["wd"], p, "minmax")


def f_rescored_z(c: Collection, p: Params) -> np.ndarray:
    return _rescored(c, c.de, c.in_de, p["wd"], p, "z")


def f_adaptive(c: Collection, p: Params) -> np.ndarray:
    wd = _share(p["wd"], p["b"] * (_margin(c.de, c.in_de) - _margin(c.sp, c.in_sp)))
    s = (1 - wd) * _zscore(c.sp, c.in_sp) + wd * _zscore(c.de, c.in_de)
    return np.where(_keep(c, p), s, -np.inf)


def _agreement(c: Collection, k: int = fusion.AGREEMENT_K) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the share of each leg's top ``k`` that the other leg returned (as
    ``fusion.agreement``)."""
    a_sp = ((c.rk_sp <= k) & c.in_de).sum(axis=1) / np.maximum((c.rk_sp <= k).sum(axis=1), 1)
    a_de = ((c.rk_de <= k) & c.in_sp).sum(axis=1) / np.maximum((c.rk_de <= k).sum(axis=1), 1)
    return a_sp, a_de


def f_agreement(c: Collection, p: Params) -> np.ndarray:
    a_sp, a_de = _agreement(c)
    return _rescored(c, c.de, c.in_de, _share(p["wd"], p["b"] * (a_de - a_sp)), p, "z")


_PRF_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def prf_dense(c: Collection, w0: float, m: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """The dense leg searched again with the Rocchio query (``fusion.rocchio``) built from the
    top ``m`` of ``rescored-z`` at dense weight ``w0``: (cosines, own top-DEPTH mask)."""
    key = (c.name, w0, m, beta)
    if key not in _PRF_CACHE:
        if len(_PRF_CACHE) > 64:
            _PRF_CACHE.clear()
        base = _rescored(c, c.de, c.in_de, w0, {}, "z")
        top = np.lexsort((np.broadcast_to(c.tie, base.shape), -base), axis=-1)[:, :m]
        ok = np.take_along_axis(base, top, axis=1) > -np.inf
        cen = (c.vecs[top] * ok[:, :, None]).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)[:, None]
        q = c.qvecs + beta * cen
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        de = (q @ c.vecs.T).astype(np.float64)
        _PRF_CACHE[key] = (de, top_mask(de)[0])
    return _PRF_CACHE[key]


def f_prf_search(c: Collection, p: Params) -> np.ndarray:
    de, in_de = prf_dense(c, p["w0"], int(p["m"]), p["beta"])
    return _rescored(c, de, in_de, p["wd"], p, "z")


def f_prf(c: Collection, p: Params) -> np.ndarray:
    """The union of the legs' own lists, its dense side scored with the Rocchio vector (no new
    search; ``fusion.feedback_search`` without ``dense_search``)."""
    de, _ = prf_dense(c, p["w0"], int(p["m"]), p["beta"])
    return _rescored(c, de, c.in_de, p["wd"], p, "z")


_EXPANSION_CACHE: dict[tuple, np.ndarray] = {}


def bmx_expansion(c: Collection, w0: float, m: int, t: int) -> np.ndarray:
    """Sparse pseudo-relevance feedback (RM3-like term expansion, Lavrenko & Croft, SIGIR 2001;
    Abdul-Jaleel et al., TREC 2004): the ``t`` terms of the top ``m`` chunks of ``rescored-z``
    (dense weight ``w0``) with the largest (summed term frequency x BMX idf), not in the query,
    searched alone with BMX: their score for every chunk (queries x chunks). Interpolated with the
    query's own BMX score by ``f_prf_both``."""
    key = (c.name, w0, m, t)
    if key in _EXPANSION_CACHE:
        return _EXPANSION_CACHE[key]
    from collections import Counter

    from bench_fusion import EVAL_ROOT as ROOT

    from eval.beir import load_beir
    from eval.runner import index_dataset
    from rag.settings import Settings
    from rag.sparse.bmx import bmx_idf

    ds = load_beir(ROOT / c.name)
    settings = Settings(data_dir=runs_path(c.name, "e5-small").parent)
    settings.embedding.model = "e5-small"
    engine = index_dataset(ds, settings, legs=["sparse"])
    try:
        leg = engine.leg("sparse")
        ix, tok = leg.index, leg.tokenizer  # type: ignore[attr-defined]
        toks = {ch.chunk_id: tok(ch.index_text()) for b in engine.store.iter_chunks() for ch in b}
        n = len(ix)
        pos = {cid: j for j, cid in enumerate(c.ids)}
        base = _rescored(c, c.de, c.in_de, w0, {}, "z")
        order = np.lexsort((np.broadcast_to(c.tie, base.shape), -base), axis=-1)[:, :m]
        out = np.zeros(c.sp.shape)
        texts = {q: ds.queries[q] for q in c.qids}
        for i, q in enumerate(c.qids):
            qt = set(tok(texts[q]))
            cnt: Counter[str] = Counter()
            for j in order[i]:
                if base[i, j] > -np.inf:
                    cnt.update(toks[c.ids[j]])
            terms = [w for w in cnt if w not in qt]
            if not terms:
                continue
            weight = np.array([cnt[w] for w in terms]) * bmx_idf(
                n, np.array([ix.document_frequency(w) for w in terms])
            )
            expansion = [terms[k] for k in np.argsort(-weight, kind="stable")[:t]]
            for cid, sc in ix.search(expansion, n):
                out[i, pos[cid]] = sc
    finally:
        engine.close()
    _EXPANSION_CACHE[key] = out
    return out


def f_prf_both(c: Collection, p: Params) -> np.ndarray:
    """``prf`` with the sparse leg's scores interpolated with the expansion's: ``s + lam * s_exp``
    (its own list: the top DEPTH of that sum)."""
    de, in_de = prf_dense(c, p["w0"], int(p["m"]), p["beta"])
    sp_exp = bmx_expansion(c, p["w0"], int(p["m"]), int(p["t"]))
    sp = c.sp + p["lam"] * sp_exp
    in_sp = top_mask(np.where(sp > 0, sp, -np.inf))[0]
    u = in_sp | in_de
    s = (1 - p["wd"]) * _zscore(sp, u) + p["wd"] * _zscore(de, u)
    return np.where(u, s, -np.inf)


def f_prf_head(c: Collection, p: Params) -> np.ndarray:
    """``fusion.feedback_search`` with ``head``: the first ranking is ``zscore`` over each leg's
    own list (dense weight ``w0``, nothing fetched); its top ``n`` are scored by both legs (BMX
    score, cosine with the Rocchio vector from its top ``m``), z-scored over those ``n`` and fused
    with dense weight ``wd``; the rest keep the first ranking's order below them."""
    own = c.in_sp | c.in_de
    base = (1 - p["w0"]) * _zscore(c.sp, c.in_sp) + p["w0"] * _zscore(c.de, c.in_de)
    base = np.where(own, base, -np.inf)
    order = np.lexsort((np.broadcast_to(c.tie, base.shape), -base), axis=-1)
    n, m = int(p["n"]), int(p["m"])
    rows = np.arange(base.shape[0])[:, None]
    head = np.zeros(base.shape, dtype=bool)
    head[rows, order[:, :n]] = np.take_along_axis(base, order[:, :n], axis=1) > -np.inf
    top = order[:, :m]
    ok = np.take_along_axis(base, top, axis=1) > -np.inf
    cen = (c.vecs[top] * ok[:, :, None]).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)[:, None]
    q = c.qvecs + p["beta"] * cen
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    de2 = (q @ c.vecs.T).astype(np.float64)
    fused = (1 - p["wd"]) * _zscore(c.sp, head) + p["wd"] * _zscore(de2, head)
    below = base - np.nanmax(np.where(np.isfinite(base), np.abs(base), 0.0)) * 4 - 1e6
    return np.where(head, fused, below)


def families(graph: bool, sparse_prf: bool = False) -> dict[str, Family]:
    wg = W_GRAPH if graph else [0.0]
    slopes = [0.0, 0.5, 1.0, 2.0, 4.0]
    if sparse_prf:  # around the dense-feedback fit on all five collections (bench/results/fusion-loco.md)
        grid = _grid(
            w0=[0.6], m=[10], beta=[0.25], t=[10, 20], lam=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5], wd=[0.5, 0.6, 0.7]
        )
        return {"prf-both": (f_prf_both, grid)}
    return {
        "minmax": (f_minmax, _grid(wd=W_DENSE)),
        "zscore": (f_zscore, _grid(wd=W_DENSE, wg=wg)),
        "rrf": (f_rrf, _grid(wd=W_DENSE, k=[5, 20, 60])),
        "rescored-minmax": (f_rescored_mm, _grid(wd=W_DENSE)),
        "rescored-z": (f_rescored_z, _grid(wd=W_DENSE)),
        "adaptive": (f_adaptive, _grid(wd=W_DENSE[1:-1], b=slopes)),
        "agreement": (f_agreement, _grid(wd=W_DENSE[1:-1], b=[-4.0, -2.0, 0.0, 2.0, 4.0])),
        "prf": (
            f_prf,
            _grid(
                w0=[0.5, 0.6], m=[5, 10, 20], beta=[0.1, 0.25, 0.5, 1.0], wd=[0.4, 0.5, 0.6, 0.7, 0.8], wg=wg
            ),
        ),
        "prf-head": (
            f_prf_head,
            _grid(w0=[0.5, 0.6], n=[20, 50], m=[5, 10], beta=[0.1, 0.25, 0.5], wd=[0.5, 0.6, 0.7]),
        ),
        "prf-search": (
            f_prf_search,
            _grid(w0=[0.5, 0.6], m=[5, 10, 20], beta=[0.1, 0.25, 0.5, 1.0], wd=[0.5, 0.6, 0.7]),
        ),
    }


# ---------------------------------------------------------------- leave one collection out


def pick(table: np.ndarray, best_leg: np.ndarray, cols: list[int], rule: str) -> int:
    """Row of ``table`` (settings x collections) the rule prefers on the collections ``cols``."""
    mean = table[:, cols].mean(axis=1)
    if rule == "mean":
        return int(np.argmax(mean))
    worst = np.round((table[:, cols] - best_leg[cols]).min(axis=1), 4)
    return int(np.lexsort((-mean, -worst))[0])


def leave_one_out(cols: list[Collection], fams: dict[str, Family], best_leg: np.ndarray) -> dict[str, dict]:
    """Per family and rule: {"left_out": {set: {"params", "score"}}, "fitted": {"params", "scores"}}."""
    names = [c.name for c in cols]
    out: dict[str, dict] = {}
    for fam, (fn, grid) in fams.items():
        t0 = time.perf_counter()
        table = np.array([[float(ndcg10(c, fn(c, p)).mean()) for c in cols] for p in grid])
        out[fam] = {}
        for rule in RULES:
            left = {}
            for i, name in enumerate(names):
                j = pick(table, best_leg, [x for x in range(len(cols)) if x != i], rule)
                left[name] = {"params": grid[j], "score": float(table[j, i])}
            j = pick(table, best_leg, list(range(len(cols))), rule)
            fitted = {"params": grid[j], "scores": dict(zip(names, table[j].tolist(), strict=True))}
            out[fam][rule] = {"left_out": left, "fitted": fitted}
        print(f"{fam}: {len(grid)} settings in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def iter_sets(arg: str, model: str) -> Iterator[str]:
    for name in arg.split(","):
        if runs_path(name, model).exists() or (EVAL_ROOT / name).exists():
            yield name


# ---------------------------------------------------------------- the shipped functions


def production_run(c: Collection, cfg: dict) -> dict[str, list[str]]:
    """Each query ranked by the functions ``Retriever.search`` runs for ``cfg`` (the legs are the
    cached matrices; the dense leg's search is an exact scan, as the vector store at this size)."""
    to_doc = c.raw["to_doc"]
    run: dict[str, list[str]] = {}
    weights = cfg["weights"]
    pos = {cid: j for j, cid in enumerate(c.ids)}
    for i, q in enumerate(c.qids):
        sp_row, de_row = c.sp[i], c.de[i]
        legs = {
            "sparse": {c.ids[j]: float(sp_row[j]) for j in np.flatnonzero(c.in_sp[i])},
            "dense": {c.ids[j]: float(de_row[j]) for j in np.flatnonzero(c.in_de[i])},
        }
        method = cfg["method"]
        if method in ("rescored", "prf"):

            def sparse_of(ids: list[str], row: np.ndarray = sp_row) -> dict[str, float]:
                return {cid: float(row[pos[cid]]) for cid in ids}

            def dense_of(ids: list[str]) -> dict[str, np.ndarray]:
                return {cid: c.vecs[pos[cid]] for cid in ids}

            def dense_search(v: np.ndarray) -> dict[str, float]:
                cos = c.vecs @ v.astype(np.float32)
                top = np.argsort(-cos, kind="stable")[:DEPTH]
                return {c.ids[j]: float(cos[j]) for j in top}

            feedback = cfg.get("feedback")
            order = fusion.feedback_search(
                legs,
                c.qvecs[i],
                sparse_scores=sparse_of,
                vectors=dense_of,
                weights=weights,
                feedback=feedback,
                dense_search=dense_search if feedback and feedback.get("search") else None,
            )
        else:
            order = fusion.fuse(legs, method=method, weights=weights, rrf_k=cfg.get("rrf_k", 60))
        run[q] = list(dict.fromkeys(to_doc[cid] for cid, _ in order))
    return run


def production_score(c: Collection, cfg: dict) -> float:
    return float(evaluate_run(production_run(c, cfg), c.raw["qrels"], ks=(10,))["ndcg@10"])


SHIPPED: dict[str, Callable[[Params], dict[str, Any]]] = {
    "minmax": lambda p: {"method": "weighted", "weights": _w(p)},
    "zscore": lambda p: {"method": "zscore", "weights": _w(p)},
    "rrf": lambda p: {"method": "rrf", "weights": _w(p), "rrf_k": int(p["k"])},
    "rescored-z": lambda p: {"method": "rescored", "weights": _w(p)},
    "prf": lambda p: {
        "method": "prf",
        "weights": _w(p),
        "feedback": {"first_dense_weight": p["w0"], "m": int(p["m"]), "beta": p["beta"], "search": False},
    },
    "prf-search": lambda p: {
        "method": "prf",
        "weights": _w(p),
        "feedback": {"first_dense_weight": p["w0"], "m": int(p["m"]), "beta": p["beta"], "search": True},
    },
}


def _w(p: Params) -> dict[str, float]:
    return {"sparse": round(1 - p["wd"], 4), "dense": p["wd"], "graph": p.get("wg", 0.0)}


def rgb_pools(c: Collection) -> dict[str, Any]:
    """rgb_int_zh scored within per-query candidate pools instead of the full corpus.

    RGB gives each question its own positive and negative passages; the corpus is their union,
    numbered query by query (positives, then negatives), deduplicated by text. A query's pool is
    rebuilt as the corpus entries from its first positive up to the next query's first positive.
    Each leg (and min-max fusion) then ranks only that pool; nDCG@10 and MRR@10 via
    ``eval.metrics``."""

    def num(d: str) -> int:
        return int(d.rsplit("-", 1)[1])

    qrels = c.raw["qrels"]
    starts = sorted({min(num(d) for d in qrels[q]) for q in c.qids})
    entry = np.array([num(c.raw["to_doc"][cid]) for cid in c.ids])
    pool = np.zeros(c.sp.shape, dtype=bool)
    for i, q in enumerate(c.qids):
        s = min(num(d) for d in qrels[q])
        e = next((x for x in starts if x > s), 1 << 30)
        pool[i] = (entry >= s) & (entry < e)
    rel = c.gain > 0

    def run_of(score: np.ndarray) -> dict[str, list[str]]:
        out = {}
        for i, q in enumerate(c.qids):
            order = [j for j in np.lexsort((c.tie[0], -score[i]))[:300] if score[i, j] > -np.inf]
            out[q] = list(dict.fromkeys(c.raw["to_doc"][c.ids[j]] for j in order))
        return out

    variants = {
        "sparse, full corpus": np.where(c.in_sp, c.sp, -np.inf),
        "dense, full corpus": np.where(c.in_de, c.de, -np.inf),
        "min-max 0.6/0.4, full corpus": f_minmax(c, {"wd": 0.4}),
        "sparse, per-query pool": np.where(pool, c.sp, -np.inf),
        "dense, per-query pool": np.where(pool, c.de, -np.inf),
        "min-max 0.6/0.4, per-query pool": np.where(
            pool, 0.6 * _minmax(c.sp, pool) + 0.4 * _minmax(c.de, pool), -np.inf
        ),
    }
    figures = {}
    for label, score in variants.items():
        m = evaluate_run(run_of(score), qrels, ks=(10,))
        figures[label] = {"ndcg@10": round(m["ndcg@10"], 4), "mrr@10": round(m["mrr@10"], 4)}
    return {
        "mean_pool_size": float(pool.sum(axis=1).mean()),
        "relevant_inside_pools": float((rel & pool).sum() / max(rel.sum(), 1)),
        "figures": figures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--graph", action="store_true", help="fit a graph-leg weight too")
    ap.add_argument("--only", help="comma-separated families (default: all)")
    ap.add_argument("--rgb-pools", action="store_true", help="only the per-query pool check on rgb_int_zh")
    ap.add_argument(
        "--sparse-prf", action="store_true", help="only the family with BMX query expansion too (prf-both)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fusion-loco.md")
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.rgb_pools:
        pools = rgb_pools(load("rgb_int_zh", args.model))
        args.out.with_name("fusion-rgb-pools.json").write_text(json.dumps(pools, indent=1))
        print(json.dumps(pools, indent=1))
        return
    cols = [load(n, args.model) for n in iter_sets(args.sets, args.model)]
    names = [c.name for c in cols]
    singles = {
        "sparse only": {c.name: float(ndcg10(c, np.where(c.in_sp, c.sp, -np.inf)).mean()) for c in cols},
        "dense only": {c.name: float(ndcg10(c, np.where(c.in_de, c.de, -np.inf)).mean()) for c in cols},
        "today's default (min-max 0.6/0.4)": {
            c.name: float(ndcg10(c, f_minmax(c, {"wd": 0.4})).mean()) for c in cols
        },
    }
    if args.graph:
        singles["graph only"] = {
            c.name: float(ndcg10(c, np.where(c.in_gr, c.gr, -np.inf)).mean()) for c in cols
        }
    best_leg = {n: max(singles["sparse only"][n], singles["dense only"][n]) for n in names}
    fams = families(args.graph, args.sparse_prf)
    if args.only:
        fams = {k: v for k, v in fams.items() if k in args.only.split(",")}
    res = leave_one_out(cols, fams, np.array([best_leg[n] for n in names]))

    def worst(vals: dict[str, float]) -> float:
        return min(vals[n] - best_leg[n] for n in names)

    def left(fam: str, rule: str) -> dict[str, float]:
        return {n: res[fam][rule]["left_out"][n]["score"] for n in names}

    shippable = [f for f in res if f in SHIPPED]
    chosen: str | None = None
    shipped: dict[str, Any] | None = None
    better = False
    check: dict[str, float] = {}
    check_s = 0.0
    if shippable:
        chosen = max(
            shippable,
            key=lambda f: (
                round(worst(left(f, "worst")), 4),
                float(np.mean(list(left(f, "worst").values()))),
            ),
        )
        shipped = SHIPPED[chosen](res[chosen]["worst"]["fitted"]["params"])
        # today's default, left out: min-max chosen by the mean rule (how it was chosen)
        if "minmax" in res:
            today_left = left("minmax", "mean")
            better = round(worst(left(chosen, "worst")), 4) >= round(worst(today_left), 4) and float(
                np.mean(list(left(chosen, "worst").values()))
            ) >= float(np.mean(list(today_left.values())))
        t0 = time.perf_counter()
        check = {c.name: production_score(c, shipped) for c in cols}
        check_s = time.perf_counter() - t0
    result = {
        "sets": names,
        "n_queries": {c.name: len(c.qids) for c in cols},
        "singles": singles,
        "families": res,
        "chosen": chosen,
        "shipped": shipped,
        "better_than_today_left_out": better,
        "production_check": check,
        "production_check_s": check_s,
        "took_s": time.perf_counter() - t_start,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))

    def row(label: str, vals: dict[str, float]) -> str:
        v = [vals[n] for n in names]
        return (
            f"| {label} | "
            + " | ".join(f"{x:.4f}" for x in v)
            + f" | {np.mean(v):.4f} | {worst(vals):+.4f} |"
        )

    def fmt(p: Params) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in p.items())

    lines = [
        f"# Fusion by leave-one-collection-out (dense leg = {args.model})",
        "",
        f"`python bench/bench_fusion_loco.py{' --graph' if args.graph else ''}{' --sparse-prf' if args.sparse_prf else ''}`; nDCG@10 at corpus-entry level "
        "over each full corpus; queries per set: " + ", ".join(f"{c.name} {len(c.qids)}" for c in cols) + ".",
        "*left out*: parameters chosen on the other four collections, scored on this one (rule *worst*: "
        "largest worst-case margin over the best single leg, then mean; rule *mean*: largest mean); "
        "*fitted*: rule *worst* on all five, scored on each. Last column: the worst margin over the best "
        "single leg.",
        "",
        f"| variant | {' | '.join(names)} | mean | worst vs best leg |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for label, vals in singles.items():
        lines.append(row(label, vals))
    for fam in res:
        tag = " **(chosen)**" if fam == chosen else ""
        lines.append(row(f"{fam}{tag}, left out (worst)", left(fam, "worst")))
        lines.append(row(f"{fam}, left out (mean)", left(fam, "mean")))
        lines.append(
            row(
                f"{fam}, fitted ({fmt(res[fam]['worst']['fitted']['params'])})",
                res[fam]["worst"]["fitted"]["scores"],
            )
        )
    lines += ["", "Parameters chosen with each collection left out (rule *worst*):", ""]
    for fam in res:
        per = "; ".join(f"{n}: {fmt(res[fam]['worst']['left_out'][n]['params'])}" for n in names)
        lines.append(f"- {fam}: {per}")
    if chosen is not None:
        lines += [
            "",
            f"Chosen: **{chosen}** (best left-out worst-case margin over the best single leg under rule "
            f"*worst*, then mean); fitted on all five: `{json.dumps(shipped)}`; "
            + (
                "better than today's default left out (min-max, rule *mean*: worst margin and mean)."
                if better
                else "NOT better than today's default left out (min-max, rule *mean*)."
            ),
            "Through the shipped functions (`rag.retrieval.fusion`): "
            + ", ".join(f"{n} {v:.4f}" for n, v in check.items())
            + f" ({check_s:.0f} s for all queries).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out.exists() and NOTES_MARKER in (old := args.out.read_text()):
        text += "\n" + old[old.index(NOTES_MARKER) :]
    args.out.write_text(text)


if __name__ == "__main__":
    main()
