"""BMX in Qdrant (rag/sparse/qdrant_bmx.py) against the in-process BMX index, on the eval collections.

For each BEIR collection under ``../shared/eval`` (skipped when absent): every
document (title + text, not chunked) is tokenized with the default tokenizer
and added, in batches of ``--batch`` documents, to both
``rag.sparse.bmx.BMXIndex`` and ``rag.sparse.qdrant_bmx.QdrantBMX`` over
qdrant-client local mode (``:memory:``; the same calls as a Qdrant server,
searched by brute force). Impacts are therefore written with the ``avgdl`` of
their batch's time, as an incremental ingest would write them.

``--queries`` queries per collection are sampled (seeded) from those with
qrels. For each candidate depth and candidate vector (``impact``, ``tf``, and
``impact`` again after :meth:`QdrantBMX.reweight`), the top 10 from Qdrant are
compared with the in-process top 10: identical lists, mean and minimum
overlap, the largest score difference over the documents both return, and
nDCG@10 against the qrels for both. Local-mode latency is reported but is not
what a server does (brute force over Python objects).

Run: ``python bench/bench_qdrant_bmx.py [--sets xquad_zh,...] [--queries 200]
[--depths 10,20,30,50,100,200] [--out bench/results/qdrant_bmx.md]``. Writes the
Markdown tables and a JSON copy beside them; notes below the marker line in an
existing report are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.beir import load_beir  # noqa: E402
from eval.metrics import ndcg_at_k  # noqa: E402
from rag.sparse.bmx import BMXIndex  # noqa: E402
from rag.sparse.qdrant_bmx import QdrantBMX  # noqa: E402
from rag.sparse.tokenize import Tokenizer  # noqa: E402

EVAL_ROOT = Path(os.environ.get("RAG_EVAL_ROOT", REPO.parent / "shared" / "eval"))
SETS = ["xquad_zh", "cmrc2018_dev_zh", "xquad_en", "covidqa_chunks_en"]
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"
K = 10


def compare(
    ref: list[tuple[str, float]], got: list[tuple[str, float]], qrels: dict[str, int]
) -> dict[str, float]:
    """Agreement of one query's top k: identical list, overlap, max score diff, nDCG@10 of both."""
    ref_ids = [d for d, _ in ref]
    got_ids = [d for d, _ in got]
    ref_scores = dict(ref)
    common = [(d, s) for d, s in got if d in ref_scores]
    return {
        "identical": float(ref_ids == got_ids),
        "overlap": len(set(ref_ids) & set(got_ids)) / len(ref_ids) if ref_ids else 1.0,
        "max_diff": max((abs(ref_scores[d] - s) for d, s in common if not math.isnan(s)), default=0.0),
        "ndcg_ref": ndcg_at_k(ref_ids, qrels, K),
        "ndcg_got": ndcg_at_k(got_ids, qrels, K),
    }


def run_set(name: str, n_queries: int, batch: int, depths: list[int], seed: int) -> dict[str, Any]:
    from qdrant_client import QdrantClient

    ds = load_beir(EVAL_ROOT / name)
    tok = Tokenizer()
    ids = list(ds.corpus)
    t0 = time.perf_counter()
    docs = [tok(ds.document_text(i)) for i in ids]
    tokenize_s = time.perf_counter() - t0
    ref = BMXIndex()
    qb = QdrantBMX(QdrantClient(location=":memory:"), f"bench-{name}")
    t0 = time.perf_counter()
    for s in range(0, len(ids), batch):
        ref.upsert(ids[s : s + batch], docs[s : s + batch])
    ref_build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        ref.save(Path(tmp))
        ref_bytes = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    n_postings = sum(len(set(d)) for d in docs)
    t0 = time.perf_counter()
    for s in range(0, len(ids), batch):
        qb.upsert(ids[s : s + batch], docs[s : s + batch])
    qdrant_build_s = time.perf_counter() - t0
    stats = qb.stats()
    assert stats.n_docs == len(ref), "document counts differ"

    qids = sorted(q for q in ds.qrels if q in ds.queries)
    sample = random.Random(seed).sample(qids, min(n_queries, len(qids)))
    queries = {q: tok(ds.queries[q]) for q in sample}
    reference = {q: ref.search(toks, K) for q, toks in queries.items()}

    rows: list[dict[str, Any]] = []
    latency: dict[str, float] = {}

    def measure(variant: str) -> None:
        """One candidate request per query at the largest depth; each depth re-ranks its prefix
        (the candidates come best first, so a prefix is what a shallower request returns)."""
        qb.candidate_vector = "tf" if variant == "tf" else "impact"
        # depth 0 = option (b): the sparse dot product's own top 10, no exact re-scoring
        per_depth: dict[int, list[dict[str, float]]] = {d: [] for d in [0, *depths]}
        times: list[float] = []
        for q, toks in queries.items():
            t = time.perf_counter()
            plan = qb.prepare(toks)
            pool = qb.fetch_candidates(plan, max(depths)) if plan is not None else []
            times.append((time.perf_counter() - t) * 1000)
            for depth in depths:
                got = qb.rank(plan, pool[: max(depth, K)], K) if plan is not None else []
                per_depth[depth].append(compare(reference[q], got, ds.qrels[q]))
            dot_only = [(c.chunk_id, float("nan")) for c in pool[:K]]
            per_depth[0].append(compare(reference[q], dot_only, ds.qrels[q]))
        for depth, per_query in per_depth.items():
            n = len(per_query)
            ndcg_ref = sum(r["ndcg_ref"] for r in per_query) / n
            ndcg_got = sum(r["ndcg_got"] for r in per_query) / n
            row = {
                "variant": variant,
                "depth": depth,
                "identical": sum(r["identical"] for r in per_query) / n,
                "overlap_mean": sum(r["overlap"] for r in per_query) / n,
                "overlap_min": min(r["overlap"] for r in per_query),
                "max_score_diff": max(r["max_diff"] for r in per_query),
                "ndcg_ref": ndcg_ref,
                "ndcg_qdrant": ndcg_got,
                "ndcg_diff": ndcg_got - ndcg_ref,
            }
            rows.append(row)
            print(
                f"{name:>18} {variant:>15} depth {depth:>4}: identical {row['identical']:.3f} "
                f"overlap {row['overlap_mean']:.4f} (min {row['overlap_min']:.2f}) "
                f"max diff {row['max_score_diff']:.1e} nDCG {ndcg_got:.4f} vs {ndcg_ref:.4f}",
                file=sys.stderr,
                flush=True,
            )
        latency[variant] = statistics.median(times)

    measure("impact")
    measure("tf")
    t0 = time.perf_counter()
    qb.reweight()
    reweight_s = time.perf_counter() - t0
    measure("impact+reweight")
    qb.close()
    return {
        "set": name,
        "documents": len(ids),
        "queries": len(queries),
        "avgdl": stats.avgdl,
        "postings_per_doc": n_postings / len(ids),
        "chars_per_doc": sum(len(ds.document_text(i)) for i in ids) / len(ids),
        "bmxindex_bytes_per_doc": ref_bytes / len(ids),
        "terms": stats.next_tid,
        "tokenize_s": tokenize_s,
        "ref_build_s": ref_build_s,
        "qdrant_build_s": qdrant_build_s,
        "reweight_s": reweight_s,
        "local_ms_p50": latency,
        "rows": rows,
    }


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# BMX in Qdrant: agreement with the in-process index",
        "",
        f"Command: `python bench/bench_qdrant_bmx.py --queries {args.queries} --batch {args.batch} "
        f"--depths {','.join(map(str, args.depths))}` on {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        f"Documents (title + text, not chunked) tokenized with the default tokenizer and added in batches "
        f"of {args.batch} to `BMXIndex` and to `QdrantBMX` over qdrant-client local mode (`:memory:`). "
        f"Queries: a seeded sample (seed {args.seed}) of those with qrels; k = {K}. "
        "`identical` = share of queries whose top 10 (ids and order) equal the in-process top 10; "
        "`overlap` = mean share of the in-process top 10 also returned (minimum in brackets); "
        "`max diff` = the largest score difference over documents both return; nDCG@10 against the qrels. "
        "One candidate request per query at the largest depth; a smaller depth re-ranks the prefix of that "
        "list (candidates come best first). `dot product only` = the candidate vector's own top 10 without "
        "re-scoring (a one-dot-product approximation). Local-mode latency is brute force over Python objects, "
        "not what a Qdrant server does.",
        "",
    ]
    for r in results:
        lines += [
            f"## {r['set']}",
            "",
            f"{r['documents']} documents of {r['chars_per_doc']:.0f} characters on average, {r['terms']} terms, "
            f"avgdl {r['avgdl']:.1f} tokens, {r['postings_per_doc']:.0f} distinct terms per document "
            f"(in-process index on disk: {r['bmxindex_bytes_per_doc'] / 1024:.1f} KiB per document); "
            f"{r['queries']} queries. Build: in-process {r['ref_build_s']:.1f} s, Qdrant local mode "
            f"{r['qdrant_build_s']:.1f} s (statistics updates included); reweight {r['reweight_s']:.1f} s.",
            "",
            "| candidates from | depth | identical top 10 | overlap (min) | max diff | nDCG@10 Qdrant | "
            "nDCG@10 in-process | difference |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["rows"]:
            depth = "dot product only" if row["depth"] == 0 else str(row["depth"])
            diff = "-" if row["depth"] == 0 else f"{row['max_score_diff']:.1e}"
            lines.append(
                f"| {row['variant']} | {depth} | {row['identical']:.3f} | "
                f"{row['overlap_mean']:.4f} ({row['overlap_min']:.1f}) | {diff} | "
                f"{row['ndcg_qdrant']:.4f} | {row['ndcg_ref']:.4f} | {row['ndcg_diff']:+.4f} |"
            )
        lat = ", ".join(f"{v} {ms:.0f} ms" for v, ms in r["local_ms_p50"].items())
        lines += ["", f"Local-mode p50 per query (statistics + {max(args.depths)} candidates): {lat}.", ""]
    return "\n".join(lines)


def write_report(md: str, out: Path) -> None:
    """Write ``md``, keeping any hand-written notes below NOTES_MARKER in an existing report."""
    notes = ""
    if out.exists():
        old = out.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + "\n" + (notes or NOTES_MARKER + "\n"), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated collection names")
    ap.add_argument("--queries", type=int, default=200, help="queries sampled per collection")
    ap.add_argument("--batch", type=int, default=256, help="documents per upsert")
    ap.add_argument(
        "--depths", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 30, 50, 100, 200]
    )
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "qdrant_bmx.md")
    args = ap.parse_args()
    if not EVAL_ROOT.is_dir():
        print(f"no eval collections at {EVAL_ROOT}; nothing to do", file=sys.stderr)
        return
    results = []
    started = time.perf_counter()
    for name in args.sets.split(","):
        if not (EVAL_ROOT / name).is_dir():
            print(f"skipping {name}: not found under {EVAL_ROOT}", file=sys.stderr)
            continue
        results.append(run_set(name, args.queries, args.batch, args.depths, args.seed))
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not results:
        return
    write_report(render(results, args), args.out)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
