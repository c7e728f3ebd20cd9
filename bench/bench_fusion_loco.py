"""Fusion chosen by leave-one-collection-out: every weight and threshold is fitted on the other
collections and scored on the one left out.

    python bench/bench_fusion_loco.py [--sets a,b,...] [--model e5-small] [--out bench/results/fusion-loco.md]

Leg runs come from ``bench_fusion.leg_runs`` (cached under bench/out/fusion/<model>/<set>; the
first run indexes and embeds, later runs take seconds). Each query's candidates are the union of
the legs' top-100 lists; "cross" scores give every candidate both its BMX and its cosine score.

Families (each a grid of parameters):

* ``minmax``   min-max normalised weighted sum over each leg's own list (the old default)
* ``zscore``   z-score normalised weighted sum over each leg's own list
* ``rrf``      weighted RRF with k fitted
* ``rescored`` every candidate of either leg scored by both legs, then a normalisation over the
  union (min-max or z-score) and a weighted sum
* ``adaptive`` ``rescored`` z-scores with the dense weight set per query from the two legs' score
  distributions: ``w = sigmoid(a + b * (c_dense - c_sparse))``, ``c`` = the leg's top-1 margin over
  its own top-10 in standard deviations

For each family and each left-out collection the parameters maximising the mean over the other
collections (each collection counts once, whatever its number of queries) are chosen; the table
reports the left-out score, and the parameters fitted on all collections with their (fitted)
scores. The graph leg, when cached, is a third weight in the same grids.

nDCG@10 is computed at corpus-entry level (an entry's rank is its best chunk's), as
``eval.metrics.ndcg_at_k``; the chosen default is re-scored through ``rag.retrieval.fusion.fuse``
so the shipped code path is what the table reports.
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

from bench_fusion import EVAL_ROOT, leg_runs, runs_path  # noqa: E402

from eval.metrics import evaluate_run  # noqa: E402
from rag.retrieval import fusion  # noqa: E402

SETS = ["xquad_en", "xquad_zh", "cmrc2018_dev_zh", "covidqa_chunks_en", "rgb_int_zh"]
TOP = 64  # sorted positions scanned for the first 10 distinct corpus entries
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


@dataclass
class Collection:
    """One collection's candidates as padded arrays (queries x candidates)."""

    name: str
    qids: list[str]
    cands: list[list[str]]
    sp: np.ndarray  # BMX score of every candidate (cross)
    de: np.ndarray  # cosine of every candidate (cross)
    gr: np.ndarray  # graph score (0 where the graph leg did not return it)
    in_sp: np.ndarray  # candidate is in the leg's own top-100
    in_de: np.ndarray
    in_gr: np.ndarray
    rk_sp: np.ndarray  # 1-based rank in the leg's own list (inf outside)
    rk_de: np.ndarray
    rk_gr: np.ndarray
    valid: np.ndarray
    tie: np.ndarray  # rank of the chunk id among the row's candidates (ties break by id)
    doc: np.ndarray  # corpus-entry index per candidate (-1 for padding)
    gain: np.ndarray
    idcg: np.ndarray
    raw: dict  # the cached runs


def load(name: str, model: str) -> Collection:
    runs = leg_runs(name, model)
    to_doc, qrels = runs["to_doc"], runs["qrels"]
    qids = sorted(runs["queries"])
    cands = []
    for q in qids:
        r = runs["queries"][q]
        cands.append(sorted({c for leg in ("sparse", "dense", "graph") for c, _ in r[leg]}))
    width = max(len(c) for c in cands)
    shape = (len(qids), width)
    a = {k: np.zeros(shape) for k in ("sp", "de", "gr", "gain")}
    m = {k: np.zeros(shape, dtype=bool) for k in ("in_sp", "in_de", "in_gr", "valid")}
    rk = {k: np.full(shape, np.inf) for k in ("rk_sp", "rk_de", "rk_gr")}
    tie = np.zeros(shape)
    doc = np.full(shape, -1, dtype=np.int64)
    idcg = np.zeros(len(qids))
    docs: dict[str, int] = {}
    for i, q in enumerate(qids):
        r = runs["queries"][q]
        pos = {c: j for j, c in enumerate(cands[i])}
        n = len(cands[i])
        m["valid"][i, :n] = True
        tie[i, :n] = np.arange(n)
        for j, c in enumerate(cands[i]):
            a["sp"][i, j], a["de"][i, j] = r["cross"][c]
            d = to_doc[c]
            doc[i, j] = docs.setdefault(d, len(docs))
            a["gain"][i, j] = max(0, qrels[q].get(d, 0))
        for leg, key in (("sparse", "sp"), ("dense", "de"), ("graph", "gr")):
            for rank, (c, s) in enumerate(r[leg], start=1):
                j = pos[c]
                m["in_" + key][i, j] = True
                rk["rk_" + key][i, j] = rank
                if key == "gr":
                    a["gr"][i, j] = s
        ideal = sorted((g for g in qrels[q].values() if g > 0), reverse=True)[:10]
        idcg[i] = sum(g / math.log2(k + 2) for k, g in enumerate(ideal))
    return Collection(
        name, qids, cands, a["sp"], a["de"], a["gr"], m["in_sp"], m["in_de"], m["in_gr"],
        rk["rk_sp"], rk["rk_de"], rk["rk_gr"], m["valid"], tie, doc, a["gain"], idcg, runs,
    )  # fmt: skip


def ndcg10(c: Collection, score: np.ndarray) -> np.ndarray:
    """nDCG@10 per query of the ranking ``score`` gives (higher first, ties by chunk id)."""
    s = np.where(c.valid, score, -np.inf)
    order = np.lexsort((c.tie, -s), axis=-1)[:, :TOP]
    d = np.take_along_axis(c.doc, order, axis=1)
    g = np.take_along_axis(c.gain, order, axis=1)
    ok = np.take_along_axis(s, order, axis=1) > -np.inf
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


def _margin(x: np.ndarray, mask: np.ndarray, k: int = 10) -> np.ndarray:
    """Top-1 minus the mean of the top k, in standard deviations of the top k (per row)."""
    top = -np.sort(-np.where(mask, x, -np.inf), axis=1)[:, :k]
    ok = np.isfinite(top)
    n = np.maximum(ok.sum(axis=1), 1)
    t = np.where(ok, top, 0.0)
    mu = t.sum(axis=1) / n
    sd = np.sqrt(np.where(ok, (t - mu[:, None]) ** 2, 0.0).sum(axis=1) / n)
    return np.where(sd > 0, (t[:, 0] - mu) / np.where(sd > 0, sd, 1.0), 0.0)


# ---------------------------------------------------------------- families


Params = dict[str, float]
Family = tuple[Callable[[Collection, Params], np.ndarray], list[Params]]

W_DENSE = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.1)]
W_GRAPH = [0.0, 0.05, 0.1, 0.2]


def _grid(**axes: list[float]) -> list[Params]:
    keys = list(axes)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*axes.values())]


def f_minmax(c: Collection, p: Params) -> np.ndarray:
    wd, wg = p["wd"], p.get("wg", 0.0)
    return (1 - wd) * _minmax(c.sp, c.in_sp) + wd * _minmax(c.de, c.in_de) + wg * _minmax(c.gr, c.in_gr)


def f_zscore(c: Collection, p: Params) -> np.ndarray:
    wd, wg = p["wd"], p.get("wg", 0.0)
    return (1 - wd) * _zscore(c.sp, c.in_sp) + wd * _zscore(c.de, c.in_de) + wg * _zscore(c.gr, c.in_gr)


def f_rrf(c: Collection, p: Params) -> np.ndarray:
    wd, wg, k = p["wd"], p.get("wg", 0.0), p["k"]
    return (1 - wd) / (k + c.rk_sp) + wd / (k + c.rk_de) + wg / (k + c.rk_gr)


def _union(c: Collection) -> np.ndarray:
    return c.valid & (c.in_sp | c.in_de)


def f_rescored_mm(c: Collection, p: Params) -> np.ndarray:
    u = _union(c)
    wd, wg = p["wd"], p.get("wg", 0.0)
    return (1 - wd) * _minmax(c.sp, u) + wd * _minmax(c.de, u) + wg * _minmax(c.gr, c.in_gr)


def f_rescored_z(c: Collection, p: Params) -> np.ndarray:
    u = _union(c)
    wd, wg = p["wd"], p.get("wg", 0.0)
    return (1 - wd) * _zscore(c.sp, u) + wd * _zscore(c.de, u) + wg * _zscore(c.gr, c.in_gr)


def _dense_share(c: Collection, p: Params) -> np.ndarray:
    """sigmoid(logit(wd) + b * (margin_dense - margin_sparse)) per query (as ``fusion.adaptive_weights``)."""
    wd = min(max(p["wd"], 1e-9), 1 - 1e-9)
    x = math.log(wd / (1 - wd)) + p["b"] * (_margin(c.de, c.in_de) - _margin(c.sp, c.in_sp))
    return (1.0 / (1.0 + np.exp(-x)))[:, None]


def f_adaptive(c: Collection, p: Params) -> np.ndarray:
    wd, wg = _dense_share(c, p), p.get("wg", 0.0)
    return (1 - wd) * _zscore(c.sp, c.in_sp) + wd * _zscore(c.de, c.in_de) + wg * _zscore(c.gr, c.in_gr)


def f_adaptive_rescored(c: Collection, p: Params) -> np.ndarray:
    u = _union(c)
    wd, wg = _dense_share(c, p), p.get("wg", 0.0)
    return (1 - wd) * _zscore(c.sp, u) + wd * _zscore(c.de, u) + wg * _zscore(c.gr, c.in_gr)


def restrict(fn: Callable[[Collection, Params], np.ndarray]) -> Callable[[Collection, Params], np.ndarray]:
    """Only candidates of a leg with weight > 0 take part (as in ``Retriever.search``)."""

    def scored(c: Collection, p: Params) -> np.ndarray:
        keep = c.in_sp | c.in_de | (c.in_gr & (p.get("wg", 0.0) > 0))
        return np.where(keep, fn(c, p), -np.inf)

    return scored


def families(graph: bool) -> dict[str, Family]:
    wg = W_GRAPH if graph else [0.0]  # the graph weight is fitted for the shippable z-score families
    slopes = [0.0, 0.5, 1.0, 2.0, 4.0]
    fams: dict[str, Family] = {
        "minmax": (f_minmax, _grid(wd=W_DENSE)),
        "zscore": (f_zscore, _grid(wd=W_DENSE, wg=wg)),
        "rrf": (f_rrf, _grid(wd=W_DENSE, k=[5, 20, 60])),
        "rescored-minmax": (f_rescored_mm, _grid(wd=W_DENSE)),
        "rescored-z": (f_rescored_z, _grid(wd=W_DENSE)),
        "adaptive": (f_adaptive, _grid(wd=W_DENSE[1:-1], b=slopes, wg=wg)),
        "adaptive-rescored": (f_adaptive_rescored, _grid(wd=W_DENSE[1:-1], b=slopes)),
    }
    return {name: (restrict(fn), grid) for name, (fn, grid) in fams.items()}


# ---------------------------------------------------------------- leave one collection out


def leave_one_out(
    cols: list[Collection], fams: dict[str, Family]
) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """Per family: {left-out set: {"params", "score"}} and the all-collections fit."""
    names = [c.name for c in cols]
    out: dict[str, dict[str, dict]] = {}
    fitted: dict[str, dict] = {}
    for fam, (fn, grid) in fams.items():
        t0 = time.perf_counter()
        table = np.array([[float(ndcg10(c, fn(c, p)).mean()) for c in cols] for p in grid])
        out[fam] = {}
        for i, name in enumerate(names):
            others = [j for j in range(len(cols)) if j != i]
            best = int(np.argmax(table[:, others].mean(axis=1)))
            out[fam][name] = {"params": grid[best], "score": float(table[best, i])}
        best = int(np.argmax(table.mean(axis=1)))
        fitted[fam] = {"params": grid[best], "scores": dict(zip(names, table[best].tolist(), strict=True))}
        print(f"{fam}: {len(grid)} settings in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out, fitted


def iter_sets(arg: str, model: str) -> Iterator[str]:
    for name in arg.split(","):
        if runs_path(name, model).exists() or (EVAL_ROOT / name).exists():
            yield name


def production_score(c: Collection, method: str, kwargs: dict) -> float:
    """nDCG@10 of ``rag.retrieval.fusion.fuse`` over the cached legs (the shipped code path)."""
    run = {}
    for q in c.qids:
        r = c.raw["queries"][q]
        weights = kwargs["weights"]
        legs = {leg: {cid: s for cid, s in r[leg]} for leg in weights if weights[leg] > 0 and r[leg]}
        order = fusion.fuse(legs, method=method, **kwargs)  # type: ignore[arg-type]
        run[q] = list(dict.fromkeys(c.raw["to_doc"][cid] for cid, _ in order))
    return float(evaluate_run(run, c.raw["qrels"], ks=(10,))["ndcg@10"])


def fusion_cost_us(cols: list[Collection], configs: dict[str, dict], rounds: int = 5) -> dict[str, float]:
    """Median microseconds of one ``fusion.fuse`` call per config, over every query's real
    candidate lists (100 per leg), configs interleaved per query so load changes hit all alike;
    each query's best of ``rounds``."""
    times: dict[str, list[float]] = {name: [] for name in configs}
    for c in cols:
        for q in c.qids:
            r = c.raw["queries"][q]
            legs = {leg: {cid: s for cid, s in r[leg]} for leg in ("sparse", "dense") if r[leg]}
            for name, kw in configs.items():
                best = math.inf
                for _ in range(rounds):
                    t0 = time.perf_counter_ns()
                    fusion.fuse(legs, **kw)
                    best = min(best, time.perf_counter_ns() - t0)
                times[name].append(best / 1000)
    return {name: float(np.median(v)) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--graph", action="store_true", help="fit a graph-leg weight too")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fusion-loco.md")
    args = ap.parse_args()
    cols = [load(n, args.model) for n in iter_sets(args.sets, args.model)]
    names = [c.name for c in cols]
    singles = {
        "sparse only": {c.name: float(ndcg10(c, np.where(c.in_sp, c.sp, -np.inf)).mean()) for c in cols},
        "dense only": {c.name: float(ndcg10(c, np.where(c.in_de, c.de, -np.inf)).mean()) for c in cols},
        "old default (min-max 0.7/0.3)": {
            c.name: float(ndcg10(c, f_minmax(c, {"wd": 0.3})).mean()) for c in cols
        },
    }
    if args.graph:
        singles["graph only"] = {
            c.name: float(ndcg10(c, np.where(c.in_gr, c.gr, -np.inf)).mean()) for c in cols
        }
    loo, fitted = leave_one_out(cols, families(args.graph))
    best_leg = {n: max(singles["sparse only"][n], singles["dense only"][n]) for n in names}

    def worst(vals: dict[str, float]) -> float:
        return min(vals[n] - best_leg[n] for n in names)

    left = {fam: {n: loo[fam][n]["score"] for n in names} for fam in loo}
    shippable = [f for f in left if f in SHIPPED_METHOD]  # rescored-*: needs a second lookup per leg
    chosen = max(shippable, key=lambda f: (round(worst(left[f]), 4), float(np.mean(list(left[f].values())))))
    params = fitted[chosen]["params"]
    shipped: dict[str, Any] = {
        "method": SHIPPED_METHOD.get(chosen),
        "weights": {
            "sparse": round(1 - params["wd"], 4),
            "dense": params["wd"],
            "graph": params.get("wg", 0.0),
        },
    }
    if "b" in params:
        shipped["slope"] = params["b"]
    if "k" in params:
        shipped["rrf_k"] = int(params["k"])
    check: dict[str, float] = {}
    if shipped["method"] is not None:
        check = {
            c.name: production_score(
                c, shipped["method"], {k: v for k, v in shipped.items() if k != "method"}
            )
            for c in cols
        }
    old_cfg = {"method": "weighted", "weights": {"sparse": 0.7, "dense": 0.3}}
    new_cfg = {k: v for k, v in shipped.items() if shipped["method"] is not None}
    cost = fusion_cost_us(
        cols, {"old default": old_cfg, "new default": new_cfg} if new_cfg else {"old default": old_cfg}
    )
    result = {
        "sets": names,
        "n_queries": {c.name: len(c.qids) for c in cols},
        "singles": singles,
        "left_out": loo,
        "fitted": fitted,
        "chosen": chosen,
        "shipped": shipped,
        "production_check": check,
        "fusion_cost_us_p50": cost,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))

    def row(label: str, vals: dict[str, float]) -> str:
        v = [vals[n] for n in names]
        return (
            f"| {label} | "
            + " | ".join(f"{x:.4f}" for x in v)
            + f" | {np.mean(v):.4f} | {worst(vals):+.4f} |"
        )

    lines = [
        f"# Fusion by leave-one-collection-out (dense leg = {args.model})",
        "",
        f"`python bench/bench_fusion_loco.py{' --graph' if args.graph else ''}`; nDCG@10 at corpus-entry level; "
        "queries per set: " + ", ".join(f"{c.name} {len(c.qids)}" for c in cols) + ".",
        "*left out*: parameters fitted on the other collections (mean nDCG@10, each collection once), scored "
        "on this one; *fitted*: parameters fitted on all collections, scored on each (the shipped default "
        "is the fitted row of the chosen family). Last column: the worst margin over the best single leg.",
        "",
        f"| variant | {' | '.join(names)} | mean | worst vs best leg |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for label, vals in singles.items():
        lines.append(row(label, vals))
    for fam in loo:
        tag = " **(chosen)**" if fam == chosen else ""
        lines.append(row(f"{fam}{tag}, left out", left[fam]))
        p = ", ".join(f"{k}={v:g}" for k, v in fitted[fam]["params"].items())
        lines.append(row(f"{fam}{tag}, fitted ({p})", fitted[fam]["scores"]))
    lines += ["", "Parameters chosen with each collection left out:", ""]
    for fam in loo:
        per = "; ".join(
            f"{n}: " + ", ".join(f"{k}={v:g}" for k, v in loo[fam][n]["params"].items()) for n in names
        )
        lines.append(f"- {fam}: {per}")
    lines += [
        "",
        f"Chosen: **{chosen}** (best worst-case left-out margin over the best single leg, then mean); "
        f"shipped as `{json.dumps(shipped)}`.",
    ]
    if check:
        lines.append(
            "Re-scored through `rag.retrieval.fusion.fuse`: "
            + ", ".join(f"{n} {v:.4f}" for n, v in check.items())
            + "."
        )
    lines.append(
        "Fusion cost per query (`fuse` alone, real candidate lists of 100 per leg, median of each query's "
        "best of 5, µs): " + ", ".join(f"{k} {v:.0f}" for k, v in cost.items()) + "."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out.exists() and NOTES_MARKER in (old := args.out.read_text()):
        text += "\n" + old[old.index(NOTES_MARKER) :]
    args.out.write_text(text)


SHIPPED_METHOD = {"minmax": "weighted", "zscore": "zscore", "rrf": "rrf", "adaptive": "adaptive"}


if __name__ == "__main__":
    main()
