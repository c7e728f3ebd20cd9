"""Choose fusion defaults by measurement: RRF vs min-max weighted fusion, weight sweep.

    python bench/bench_fusion.py [--sets xquad_zh,...] [--model e5-small] [--out bench/results/fusion-<model>.md]

Each collection is indexed once (sparse + dense, through `eval.runner.index_dataset`,
kept under bench/out/fusion/<model>/<set> so re-runs reuse the embeddings). Each
leg's top-100 candidates are computed once per query; the fusion variants are then
pure functions over those candidates (`rag.retrieval.fusion`), so every variant sees
exactly the same leg results. Scores are nDCG@10 at corpus-entry level (best chunk).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.beir import load_beir  # noqa: E402
from eval.metrics import evaluate_run  # noqa: E402
from eval.runner import index_dataset  # noqa: E402
from rag.retrieval.fusion import fuse, ranked  # noqa: E402
from rag.settings import Settings  # noqa: E402

EVAL_ROOT = REPO.parent / "shared" / "eval"
SETS = ["xquad_zh", "cmrc2018_dev_zh", "xquad_en", "covidqa_chunks_en"]
DEPTH = 100
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


def leg_candidates(ds_name: str, model: str) -> tuple[dict, dict, dict]:
    """{qid: {chunk_id: score}} per leg (top DEPTH), plus chunk -> corpus id and the qrels."""
    runs = leg_runs(ds_name, model)
    legs = {leg: {q: dict(r[leg]) for q, r in runs["queries"].items()} for leg in ("sparse", "dense")}
    return legs, runs["to_doc"], runs["qrels"]


def runs_path(ds_name: str, model: str, max_queries: int | None = None) -> Path:
    tail = f"-q{max_queries}" if max_queries else ""
    return REPO / "bench" / "out" / "fusion" / model / ds_name / f"runs-{DEPTH}{tail}.json.gz"


def leg_runs(ds_name: str, model: str, *, graph: bool = True, max_queries: int | None = None) -> dict:
    """Every leg's run on one collection, computed once and cached (``runs_path``).

    ``{"to_doc": {chunk: corpus id}, "qrels", "queries": {qid: {"sparse"|"dense"|"graph":
    [[chunk, score], ...] (top DEPTH, best first), "cross": {chunk: [bmx, cosine]} for every
    candidate of any leg, "corpus": {"sparse"|"dense": [mean, std] over all chunks}}}}``.
    ``max_queries``: a fixed random sample of that many queries (seed 0), cached apart; a cached
    run over every query is used when there is one.
    "cross" holds both scores for each candidate (a chunk with no query token has BMX 0), so
    re-scoring one leg's candidates with the other leg is a lookup. Queries are embedded in
    batches; dense scores are exact cosines over all stored vectors (what the vector store
    returns at this size).
    """
    path = runs_path(ds_name, model, max_queries)
    for p in (runs_path(ds_name, model), path):  # every query, else the sample
        if p.exists():
            with gzip.open(p, "rt") as f:
                return json.load(f)
    import numpy as np

    ds = load_beir(EVAL_ROOT / ds_name)
    settings = Settings(data_dir=REPO / "bench" / "out" / "fusion" / model / ds_name)
    settings.embedding.model = model
    t0 = time.perf_counter()
    engine = index_dataset(ds, settings, legs=["sparse", "dense", "graph"] if graph else ["sparse", "dense"])
    print(f"{ds_name}: indexed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    try:
        chunks = [c for batch in engine.store.iter_chunks() for c in batch]
        ids = [c.chunk_id for c in chunks]
        to_doc = {c.chunk_id: c.source for c in chunks}
        dense = engine.leg("dense")
        vecs = dense.cache.embed_passages(dense.embedder, [c.index_text() for c in chunks])  # type: ignore[attr-defined]
        vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        qids = [q for q in ds.queries if q in ds.qrels]
        if max_queries and len(qids) > max_queries:  # a fixed sample: embedding queries is slow on CPU
            qids = random.Random(0).sample(sorted(qids), max_queries)
        texts = [ds.queries[q] for q in qids]
        qv = np.concatenate(
            [dense.embedder.embed_queries(texts[i : i + 64]) for i in range(0, len(texts), 64)]  # type: ignore[attr-defined]
        ).astype(np.float32)
        qv = qv / np.linalg.norm(qv, axis=1, keepdims=True)
        print(f"{ds_name}: {len(qids)} queries embedded at {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        sparse = engine.leg("sparse")
        graph_leg = engine.leg("graph") if graph else None
        pos = {c: i for i, c in enumerate(ids)}
        out: dict[str, dict] = {}
        for qi, qid in enumerate(qids):
            cos = vecs @ qv[qi]
            bmx = np.zeros(len(ids))
            for c, s in sparse.search(texts[qi], len(ids)).items():
                bmx[pos[c]] = s
            top_d = np.argsort(-cos, kind="stable")[:DEPTH]
            top_s = [(c, s) for c, s in ranked({ids[i]: float(bmx[i]) for i in np.flatnonzero(bmx)})[:DEPTH]]
            g = ranked(graph_leg.search(texts[qi], DEPTH)) if graph_leg is not None else []
            rec: dict = {
                "sparse": [[c, round(s, 6)] for c, s in top_s],
                "dense": [[ids[i], round(float(cos[i]), 6)] for i in top_d],
                "graph": [[c, round(s, 6)] for c, s in g],
            }
            cand = {c for leg in ("sparse", "dense", "graph") for c, _ in rec[leg]}
            rec["cross"] = {c: [round(float(bmx[pos[c]]), 6), round(float(cos[pos[c]]), 6)] for c in cand}
            rec["corpus"] = {
                "sparse": [float(bmx.mean()), float(bmx.std())],
                "dense": [float(cos.mean()), float(cos.std())],
            }
            out[qid] = rec
        print(f"{ds_name}: runs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    finally:
        engine.close()
    runs = {"to_doc": to_doc, "qrels": ds.qrels, "queries": out}
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(runs, f)
    tmp.replace(path)
    return runs


def full_scores_path(ds_name: str, model: str) -> Path:
    return REPO / "bench" / "out" / "fusion" / model / ds_name / "full-scores.npz"


def full_scores(ds_name: str, model: str) -> dict:
    """Every query's BMX score and every chunk's vector, for families that search again (PRF).

    ``{"ids": chunk ids, "docs": corpus id per chunk, "vecs": unit vectors (chunks x dim),
    "qids", "qvecs": unit query vectors, "bmx": BMX score of every chunk (queries x chunks, 0 where
    no query token occurs)}``, cached in ``full_scores_path`` and built from the index that
    ``leg_runs`` left there (the vectors come from the embedding cache, only the queries are
    embedded). The queries are the ones with relevance judgements, sorted by id.
    """
    import numpy as np

    path = full_scores_path(ds_name, model)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    leg_runs(ds_name, model)  # the index must exist
    ds = load_beir(EVAL_ROOT / ds_name)
    settings = Settings(data_dir=path.parent)
    settings.embedding.model = model
    t0 = time.perf_counter()
    engine = index_dataset(ds, settings, legs=["sparse", "dense"])
    try:
        chunks = [c for batch in engine.store.iter_chunks() for c in batch]
        ids = [c.chunk_id for c in chunks]
        dense = engine.leg("dense")
        vecs = dense.cache.embed_passages(dense.embedder, [c.index_text() for c in chunks])  # type: ignore[attr-defined]
        vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
        qids = sorted(q for q in ds.queries if q in ds.qrels)
        texts = [ds.queries[q] for q in qids]
        qv = np.concatenate(
            [dense.embedder.embed_queries(texts[i : i + 64]) for i in range(0, len(texts), 64)]  # type: ignore[attr-defined]
        ).astype(np.float32)
        qv = qv / np.linalg.norm(qv, axis=1, keepdims=True)
        sparse = engine.leg("sparse")
        pos = {c: i for i, c in enumerate(ids)}
        bmx = np.zeros((len(qids), len(ids)))
        for qi, text in enumerate(texts):
            for c, s in sparse.search(text, len(ids)).items():
                bmx[qi, pos[c]] = s
    finally:
        engine.close()
    out = {
        "ids": np.array(ids),
        "docs": np.array([c.source for c in chunks]),
        "vecs": vecs,
        "qids": np.array(qids),
        "qvecs": qv,
        "bmx": bmx,
    }
    np.savez(path, **out)
    print(f"{ds_name}: full scores in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def score(order: list[tuple[str, float]], to_doc: dict[str, str]) -> list[str]:
    return list(dict.fromkeys(to_doc[c] for c, _ in order))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--out", type=Path, help="default: bench/results/fusion-<model>.md (one file per model)")
    args = ap.parse_args()
    if args.out is None:
        args.out = REPO / "bench" / "results" / f"fusion-{args.model}.md"
    if not EVAL_ROOT.exists():
        print(f"skipped: {EVAL_ROOT} not found")
        return

    variants: dict[str, dict] = {
        "sparse only": {"legs": ["sparse"]},
        "dense only": {"legs": ["dense"]},
        "rrf k=60 equal": {"method": "rrf", "w": {"sparse": 1.0, "dense": 1.0}},
        "rrf k=60 0.8/0.2": {"method": "rrf", "w": {"sparse": 0.8, "dense": 0.2}},
    }
    for ws in (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1):
        variants[f"weighted {ws:g}/{round(1 - ws, 2):g}"] = {
            "method": "weighted",
            "w": {"sparse": ws, "dense": round(1 - ws, 2)},
        }

    table: dict[str, dict[str, float]] = {v: {} for v in variants}
    for name in args.sets.split(","):
        legs, to_doc, qrels = leg_candidates(name, args.model)
        for vname, v in variants.items():
            run = {}
            for qid in legs["sparse"]:
                per_leg = {leg: legs[leg][qid] for leg in ("sparse", "dense")}
                if "legs" in v:
                    order = ranked(per_leg[v["legs"][0]])
                else:
                    order = fuse(per_leg, method=v["method"], weights=v["w"], rrf_k=60)
                run[qid] = score(order, to_doc)
            table[vname][name] = evaluate_run(run, qrels, ks=(10, 100))["ndcg@10"]

    sets = args.sets.split(",")
    lines = [
        f"# Fusion: nDCG@10 per variant (dense leg = {args.model})",
        "",
        f"`python bench/bench_fusion.py --model {args.model}`; sparse = BMX with the default tokenizer.",
        "",
        "| variant | " + " | ".join(sets) + " | mean |",
        "|---|" + "---:|" * (len(sets) + 1),
    ]
    for vname, row in table.items():
        vals = [row[s] for s in sets]
        lines.append(
            f"| {vname} | " + " | ".join(f"{x:.4f}" for x in vals) + f" | {sum(vals) / len(vals):.4f} |"
        )
    lines.append("")
    for s in sets:
        best = max(table, key=lambda v: table[v][s])
        single = max(table["sparse only"][s], table["dense only"][s])
        lines.append(f"- {s}: best {best} ({table[best][s]:.4f}); best single leg {single:.4f}")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists() and NOTES_MARKER in (old := args.out.read_text()):
        text += "\n" + old[old.index(NOTES_MARKER) :]
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
