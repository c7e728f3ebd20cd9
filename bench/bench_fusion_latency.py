"""Hybrid latency of two fusion settings at 100k chunks, in one process, on one index.

    python bench/bench_fusion_latency.py [--n 100000] [--queries 150] [--repeat 3]

Corpus and queries: the generated mixed zh/en notes and 2-4 word queries of
``bench_hybrid.py`` (one short chunk per note). BMX is built by ``Engine.sync``. The dense leg
is e5-small's: queries are embedded by the real e5-small encoder; the 100k passage vectors are
e5-like synthetic ones (the normalised sum of two random real e5-small passage vectors from the
evaluation collections plus Gaussian noise of their per-dimension spread, as the latency part of
``bench_hybrid.py``), in the default embedded Qdrant ``edge`` store with its HNSW graph. So the
vector search, the vector fetch by id and the BMX scoring cost what they cost at this size;
retrieval quality on this index means nothing (it is measured by ``bench_fusion_loco.py``).

Each query runs ``Retriever.search`` (k = 10, hybrid, query embedding included) under every
setting in turn, so that load changes on the shared machine hit all settings alike, in an order
rotated per query and pass (the first setting to run a query reads its postings cold); p50/p95 of
the first pass and of each query's best of ``--repeat`` passes. The index is cached under
bench/out/fusion-latency/<n>/ (``--rebuild`` drops it).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_fusion import full_scores_path  # noqa: E402
from bench_hybrid import COMMIT_EVERY, make_queries, short_note, store_note  # noqa: E402

from rag.engine import Engine  # noqa: E402
from rag.retrieval.search import Retriever  # noqa: E402
from rag.settings import RetrievalSettings, Settings  # noqa: E402

WORK = REPO / "bench" / "out" / "fusion-latency"
SETS = ["xquad_en", "xquad_zh", "cmrc2018_dev_zh", "covidqa_chunks_en", "rgb_int_zh"]


def settings_for(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        embedding={"model": "e5-small", "device": "cpu"},  # type: ignore[arg-type]
        graph={"enabled": False},  # type: ignore[arg-type]
    )


class QueriesBy:
    """``passages``' encoder, except that queries go through ``queries`` (another runtime)."""

    def __init__(self, queries: Any, passages: Any) -> None:
        self.queries, self.passages = queries, passages
        self.name, self.dim = passages.name, passages.dim

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.queries.embed_queries(texts)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self.passages.embed_passages(texts)


class SyntheticPassages:
    """e5-small for queries; e5-like synthetic vectors for passages (module docstring)."""

    def __init__(self, real_encoder: Any, real: np.ndarray, seed: int) -> None:
        self.inner = real_encoder
        self.name, self.dim = real_encoder.name, real_encoder.dim
        self.real = real
        self.spread = real.std(axis=0)
        self.seed = seed

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            h = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            rng = np.random.default_rng([self.seed, h])
            a, b = self.real[rng.integers(0, len(self.real), 2)]
            v = a + b + rng.standard_normal(self.dim).astype(np.float32) * self.spread
            out[i] = v / np.linalg.norm(v)
        return out


def real_vectors() -> np.ndarray:
    parts = []
    for name in SETS:
        path = full_scores_path(name, "e5-small")
        if path.exists():
            with np.load(path) as z:
                parts.append(z["vecs"])
    if not parts:
        raise SystemExit("no real e5-small vectors: run bench/bench_fusion_loco.py first")
    return np.concatenate(parts).astype(np.float32)


def build(data_dir: Path, n: int, seed: int, real: np.ndarray) -> dict[str, Any]:
    settings = settings_for(data_dir)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    engine = Engine.open(settings, create=True)
    n_docs = n_chunks = 0
    while n_chunks < n:
        with engine.store.transaction() as tx:
            for _ in range(COMMIT_EVERY):
                if n_chunks >= n:
                    break
                n_chunks += store_note(tx, settings, n_docs, short_note(rng, n_docs))[0]
                n_docs += 1
    store_s = time.perf_counter() - t0
    bmx_s = engine.sync(["sparse"])["sparse"].took_s
    leg = engine.leg("dense")
    leg.embedder = SyntheticPassages(leg.embedder, real, seed)  # type: ignore[attr-defined]
    dense_s = engine.sync(["dense"])["dense"].took_s
    t = time.perf_counter()
    leg.vectors.optimize()  # type: ignore[attr-defined]
    hnsw_s = time.perf_counter() - t
    chunks_n = engine.store.count_chunks()
    engine.close()
    return {
        "chunks": chunks_n,
        "store_s": round(store_s, 1),
        "bmx_s": round(bmx_s, 1),
        "dense_s": round(dense_s, 1),
        "hnsw_s": round(hnsw_s, 1),
    }


def pct(ms: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--build-only", action="store_true", help="build the cached index and stop")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fusion-latency.json")
    ap.add_argument(
        "--previous-runtime",
        default="onnx",
        help="also time the previous release's setting: weighted 0.6/0.4 with queries embedded by this "
        "e5-small runtime (its CPU default then: onnx); 'none' skips it",
    )
    args = ap.parse_args()
    data_dir = WORK / str(args.n)
    real = real_vectors()
    out: dict[str, Any] = {"n": args.n, "load_start": os.getloadavg()}
    if args.rebuild and data_dir.exists():
        shutil.rmtree(data_dir)
    if not (data_dir / "done.json").exists():
        built = build(data_dir, args.n, args.seed, real)
        (data_dir / "done.json").write_text(json.dumps(built))
        print(f"built: {built}", file=sys.stderr, flush=True)
    out["build"] = json.loads((data_dir / "done.json").read_text())
    if args.build_only:
        return
    settings = settings_for(data_dir)
    engine = Engine.open(settings)
    legs = engine.legs_for("hybrid")
    texts = [c.index_text() for c in engine.store.get_chunks(sorted(engine.store.chunk_ids())[:20_000])]
    queries = make_queries(texts, args.queries, args.seed)
    base = settings.retrieval.model_dump()
    configs = {
        "today (weighted 0.6/0.4)": {**base, "fusion": "weighted", "weight_sparse": 0.6, "weight_dense": 0.4},
        "new default": base,
    }
    out["configs"] = configs
    retrievers = {
        name: Retriever(engine.store, legs, RetrievalSettings(**cfg)) for name, cfg in configs.items()
    }
    previous = f"previous release (weighted 0.6/0.4, {args.previous_runtime} queries)"
    if args.previous_runtime != "none":
        # the same index and legs; only the query encoder is the previous default's runtime
        from rag.embed import make_embedder

        old_dense = copy.copy(legs["dense"])
        old_dense.embedder = QueriesBy(  # type: ignore[attr-defined]
            make_embedder("e5-small", device="cpu", runtime=args.previous_runtime),
            legs["dense"].embedder,  # type: ignore[attr-defined]
        )
        old_cfg = configs["today (weighted 0.6/0.4)"]
        retrievers[previous] = Retriever(
            engine.store, {**legs, "dense": old_dense}, RetrievalSettings(**old_cfg)
        )
        out["configs"] = {**configs, previous: {**old_cfg, "query_runtime": args.previous_runtime}}
    for r in retrievers.values():
        r.search(queries[0], 10, "hybrid")  # warm
    times: dict[str, list[list[float]]] = {name: [[] for _ in queries] for name in retrievers}
    names = list(retrievers)
    for rep in range(args.repeat):
        for i, q in enumerate(queries):
            # the setting that runs a query first meets its postings and graph pages cold: rotate
            # the order per query and pass, so no setting always follows another on the same query
            shift = (i + rep) % len(names)
            for name in names[shift:] + names[:shift]:
                r = retrievers[name]
                t0 = time.perf_counter()
                r.search(q, 10, "hybrid")
                times[name][i].append((time.perf_counter() - t0) * 1000)
    engine.close()
    out["load_end"] = os.getloadavg()
    out["n_queries"] = len(queries)
    out["first_pass_ms"] = {name: pct([t[0] for t in per]) for name, per in times.items()}
    out["best_of_ms"] = {name: pct([min(t) for t in per]) for name, per in times.items()}
    a, b = configs
    out["ratio_p50_first"] = round(out["first_pass_ms"][b]["p50"] / out["first_pass_ms"][a]["p50"], 3)
    out["ratio_p50_best"] = round(out["best_of_ms"][b]["p50"] / out["best_of_ms"][a]["p50"], 3)
    out["median_ratio_per_query"] = round(
        statistics.median(min(tb) / min(ta) for ta, tb in zip(times[a], times[b], strict=True)), 3
    )
    if previous in times:
        out["ratio_p50_first_vs_previous"] = round(
            out["first_pass_ms"][b]["p50"] / out["first_pass_ms"][previous]["p50"], 3
        )
        out["ratio_p50_best_vs_previous"] = round(
            out["best_of_ms"][b]["p50"] / out["best_of_ms"][previous]["p50"], 3
        )
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
