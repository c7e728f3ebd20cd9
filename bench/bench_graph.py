"""Does the entity graph help retrieval? Hybrid with and without the graph leg, and extraction speed.

    python bench/bench_graph.py [--sets xquad_zh,...] [--weights 0,0.05,0.1,0.2] [--dense use]
                                [--dense-sets xquad_zh,xquad_en] [--out bench/results/graph.md]

For each BEIR collection in ../shared/eval (and a known-item collection that
`rag eval --generate` builds from samples/notes): index it once through
`eval.runner.index_dataset` (sparse + graph legs; with --dense, the dense leg
too, on --dense-sets only), then run `eval.runner.run_mode` in hybrid mode for
each graph fusion weight, the other weights at their defaults (min-max
weighted fusion, sparse 0.9, dense 0.1). Weight 0 is hybrid without the graph.
Also reports sparse and graph alone, and the extraction speed: rule extraction
alone in CPU time (chunks per CPU-second, one core) and the whole graph sync
(extraction + SQLite writes) in wall-clock time. Indexes live in a temporary
folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.beir import BeirDataset, load_beir  # noqa: E402
from eval.runner import index_dataset, machine_info, run_mode  # noqa: E402
from rag.engine import Engine  # noqa: E402
from rag.settings import Settings  # noqa: E402

EVAL_ROOT = REPO.parent / "shared" / "eval"
SETS = ["xquad_zh", "xquad_en", "cmrc2018_dev_zh", "covidqa_chunks_en"]
NOTES = REPO / "samples" / "notes"
METRICS = ("ndcg@10", "recall@10")


def extraction_speed(engine: Engine) -> dict[str, float]:
    """Rule extraction over every chunk (already warmed up), CPU seconds on one core."""
    from rag.graph import GraphLeg

    leg = engine.leg("graph")
    assert isinstance(leg, GraphLeg)
    texts = [c.index_text() for batch in engine.store.iter_chunks() for c in batch]
    leg.extractor.extract(texts[0])
    t0, w0 = time.process_time(), time.perf_counter()
    mentions = sum(len(leg.extractor.extract(t)) for t in texts)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    return {
        "chunks": len(texts),
        "extract_chunks_per_cpu_s": round(len(texts) / cpu),
        "extract_chunks_per_wall_s": round(len(texts) / wall),
        "mentions_per_chunk": round(mentions / len(texts), 1),
        "mean_chars_per_chunk": round(statistics.fmean(len(t) for t in texts)),
    }


def rebuild_speed(engine: Engine) -> int:
    """Chunks per CPU-second of a full rebuild of the graph (in this process)."""
    from rag.graph import GraphLeg

    leg = engine.leg("graph")
    assert isinstance(leg, GraphLeg)
    leg.graph.reset()
    leg.generation = None
    t0 = time.process_time()
    result = leg.sync(engine.store)
    return round(result.added / (time.process_time() - t0))


def bench_set(ds: BeirDataset, weights: list[float], dense: str | None, work: Path) -> dict[str, Any]:
    # the model at construction: fusion weights left unset follow it (rag.settings)
    settings = Settings(data_dir=work / ds.name, embedding={"model": dense or "none"})  # type: ignore[arg-type]
    legs = ["sparse", "graph"] + (["dense"] if dense else [])
    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    engine = index_dataset(ds, settings, timings=timings, legs=legs)
    print(f"{ds.name}: indexed in {time.perf_counter() - t0:.1f} s {timings['sync_s']}", file=sys.stderr)
    try:
        stats = engine.status()["legs"]["graph"]
        speed = extraction_speed(engine)
        speed["graph_sync_s"] = timings["sync_s"]["graph"]
        speed["sync_chunks_per_wall_s"] = round(stats["chunks"] / timings["sync_s"]["graph"])
        speed["sync_chunks_per_cpu_s"] = rebuild_speed(engine)
        rows: dict[str, dict[str, float]] = {}
        for mode in ["sparse", "graph", *(["dense"] if dense else [])]:
            rows[mode] = run_mode(engine, ds, mode, answer_ks=()).summary()  # type: ignore[arg-type]
        base: dict[str, dict[str, float]] = {}
        for w in weights:
            engine.settings.retrieval.weight_graph = w
            result = run_mode(engine, ds, "hybrid", answer_ks=())
            rows[f"hybrid graph={w:g}"] = row = result.summary()
            if w == 0:
                base = result.per_query
            else:  # queries whose nDCG@10 went up / down against hybrid without the graph
                row["queries_up"] = sum(
                    1 for q, m in result.per_query.items() if m["ndcg@10"] > base[q]["ndcg@10"] + 1e-9
                )
                row["queries_down"] = sum(
                    1 for q, m in result.per_query.items() if m["ndcg@10"] < base[q]["ndcg@10"] - 1e-9
                )
            print(
                f"  graph weight {w:g}: nDCG@10 {rows[f'hybrid graph={w:g}']['ndcg@10']:.4f}", file=sys.stderr
            )
    finally:
        engine.close()
    return {
        "dataset": ds.name,
        "n_queries": sum(1 for q in ds.queries if q in ds.qrels),
        "n_corpus": len(ds.corpus),
        "legs": legs,
        "fusion": {
            "method": settings.retrieval.fusion,
            "weight_sparse": settings.retrieval.weight_sparse,
            "weight_dense": settings.retrieval.weight_dense if dense else None,
        },
        "graph": {k: stats[k] for k in ("chunks", "entities", "edges")},
        "speed": speed,
        "modes": rows,
    }


def notes_collection(work: Path) -> Path:
    """A known-item collection generated from samples/notes (`rag eval --generate`)."""
    from eval.generate import generate_collection
    from ingest.pipeline import sync_paths

    settings = Settings(data_dir=work / "notes-index")
    settings.embedding.model = "none"
    out = work / "samples_notes_known_item"
    with Engine.open(settings, create=True) as engine:
        sync_paths([NOTES], settings, engine.store)
        generate_collection(engine.store, out, n_queries=200, seed=0)
    return out


def fusion_text(results: list[dict[str, Any]]) -> str:
    """How the hybrid rows fused the legs, from what the runs recorded."""
    plain: list[str] = []
    dense: list[str] = []
    for r in results:
        with_dense = "+" in r["dataset"]
        f = r.get("fusion") or {"weight_sparse": 0.9, "weight_dense": 0.1 if with_dense else None}
        text = f"sparse {f['weight_sparse']:g}" + (f", dense {f['weight_dense']:g}" if with_dense else "")
        target = dense if with_dense else plain
        if text not in target:
            target.append(text)
    out = "min-max weighted fusion, " + " / ".join(plain)
    if dense:
        out += " (rows marked +model: " + " / ".join(dense) + ")"
    return out


def sign_test(up: int, down: int) -> float:
    """Two-sided exact sign test (binomial, p = 1/2) on the queries that changed: the chance of a
    split at least this uneven if the graph helped and hurt equally often."""
    n = up + down
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2**n
    return min(1.0, 2 * tail)


def fmt_table(results: list[dict[str, Any]], weights: list[float]) -> list[str]:
    lines = [
        "| collection | mode | nDCG@10 | Recall@10 | Δ nDCG@10 vs hybrid without graph | queries up / down "
        "(sign test) | p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        base = r["modes"]["hybrid graph=0"]["ndcg@10"] if "hybrid graph=0" in r["modes"] else None
        for mode, m in r["modes"].items():
            delta = updown = ""
            if mode.startswith("hybrid") and base is not None and mode != "hybrid graph=0":
                delta = f"{m['ndcg@10'] - base:+.4f}"
                if "queries_up" in m:
                    p = sign_test(m["queries_up"], m["queries_down"])
                    updown = f"{m['queries_up']} / {m['queries_down']} (p={p:.2f})"
            lines.append(
                f"| {r['dataset']} | {mode} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {delta} "
                f"| {updown} | {m['latency_ms_p50']:.1f} |"
            )
    return lines


def recommend(results: list[dict[str, Any]], weights: list[float]) -> tuple[float, list[str], float]:
    """The weight whose mean nDCG@10 gain over the collections is largest, provided it never costs
    more than 0.002 on any collection (else 0); one line per weight; the smallest sign-test p of the
    chosen weight over the collections (1.0 for weight 0)."""
    notes: list[str] = []
    best, best_gain, best_p = 0.0, 0.0, 1.0
    for w in weights:
        if w == 0:
            continue
        rows = [r["modes"][f"hybrid graph={w:g}"] for r in results]
        gains = [
            row["ndcg@10"] - r["modes"]["hybrid graph=0"]["ndcg@10"]
            for row, r in zip(rows, results, strict=True)
        ]
        p = min(
            (sign_test(row["queries_up"], row["queries_down"]) for row in rows if "queries_up" in row),
            default=1.0,
        )
        mean, worst = statistics.fmean(gains), min(gains)
        notes.append(
            f"weight {w:g}: mean Δ nDCG@10 {mean:+.4f}, worst {worst:+.4f}, smallest sign-test p {p:.2f}"
        )
        if worst >= -0.002 and mean > best_gain:
            best, best_gain, best_p = w, mean, p
    return best, notes, best_p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--weights", default="0,0.05,0.1,0.2")
    ap.add_argument("--dense", default=None, help="also fuse this dense model (e.g. use) on --dense-sets")
    ap.add_argument("--dense-sets", default="xquad_zh,xquad_en")
    ap.add_argument("--no-notes", action="store_true", help="skip the samples/notes known-item collection")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "graph.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json")
    ap.add_argument(
        "--include",
        type=Path,
        help="a .json of an earlier run whose dense-leg rows (--dense) are carried into this report",
    )
    args = ap.parse_args()
    if args.render:
        md = render(json.loads(args.out.with_suffix(".json").read_text()))
        args.out.write_text(md)
        print(md)
        return
    weights = sorted({0.0, *(float(w) for w in args.weights.split(","))})
    from rag.graph import RuleExtractor

    RuleExtractor().extract(
        "预热 warm-up: jieba 词典, zhconv tables, GPU"
    )  # one-time loads out of the timings
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
        work = Path(tmp)
        datasets: list[tuple[BeirDataset, str | None]] = []
        if EVAL_ROOT.exists():
            for name in args.sets.split(","):
                dense = args.dense if args.dense and name in args.dense_sets.split(",") else None
                datasets.append((load_beir(EVAL_ROOT / name), None))
                if dense:
                    datasets.append((load_beir(EVAL_ROOT / name), dense))
        else:
            print(
                f"note: {EVAL_ROOT} not found; only the samples/notes collection is measured", file=sys.stderr
            )
        if not args.no_notes:
            datasets.append((load_beir(notes_collection(work)), None))
        for ds, dense in datasets:
            r = bench_set(ds, weights, dense, work / (dense or "sparse"))
            if dense:
                r["dataset"] = f"{ds.name} (+{dense})"
            results.append(r)
    total_s = time.perf_counter() - started
    best, notes, best_p = recommend([r for r in results if "+" not in r["dataset"]], weights)
    payload: dict[str, Any] = {
        "results": results,
        "weights": weights,
        "recommended_weight_graph": best,
        "recommended_min_sign_test_p": best_p,
        "notes": notes,
        "total_s": round(total_s, 1),
        "machine": machine_info(),
        "load_average": os.getloadavg(),
        "command": "python bench/bench_graph.py " + " ".join(sys.argv[1:]),
    }
    if args.include is not None:
        earlier = json.loads(args.include.read_text())
        carried = [r for r in earlier["results"] if "+" in r["dataset"]]
        payload["results"] += carried
        payload["included"] = {"command": earlier["command"], "total_s": earlier["total_s"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    md = render(payload)
    args.out.write_text(md)
    print(md)


def render(payload: dict[str, Any]) -> str:
    results, weights = payload["results"], payload["weights"]
    speed_lines = [
        "| collection | chunks | chars/chunk | mentions/chunk | extraction chunks/CPU-s | "
        "sync chunks/CPU-s | sync chunks/s wall (first build) | entities | edges |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "+" in r["dataset"]:
            continue
        s, g = r["speed"], r["graph"]
        speed_lines.append(
            f"| {r['dataset']} | {s['chunks']} | {s['mean_chars_per_chunk']} | {s['mentions_per_chunk']} | "
            f"{s['extract_chunks_per_cpu_s']} | {s.get('sync_chunks_per_cpu_s', '-')} | "
            f"{s['sync_chunks_per_wall_s']} | {g['entities']} | {g['edges']} |"
        )
    load = ", ".join(f"{x:.1f}" for x in payload["load_average"])
    md = [
        "# Entity graph: ablation and extraction speed",
        "",
        f"`{payload['command']}`: {payload['total_s'] / 60:.1f} min on {payload['machine']['cpu_count']} cores "
        f"shared with other jobs (load average at the end {load}).",
        *(
            [
                "",
                f"Rows marked (+use) come from `{payload['included']['command']}` "
                f"({payload['included']['total_s'] / 60:.1f} min, the USE dense leg embedding every query"
                " once per mode).",
            ]
            if payload.get("included")
            else []
        ),
        "",
        f"Hybrid = {fusion_text(results)}, plus the graph leg at the weight shown;"
        " `hybrid graph=0` is hybrid without the graph."
        " Corpus-entry level metrics, as `rag eval`; p50 = median query latency.",
        "",
        *fmt_table(results, weights),
        "",
        "## Extraction speed",
        "",
        "Rule extraction alone and a full graph rebuild (extraction + SQLite writes), in CPU seconds of"
        " one process; the first build in wall-clock seconds on the shared machine.",
        "",
        *speed_lines,
        "",
        "## Weight",
        "",
        *[f"- {n}" for n in payload["notes"]],
        "",
        f"**Recommended `retrieval.weight_graph`: {payload['recommended_weight_graph']:g}** (largest mean"
        " nDCG@10 gain over the collections without a dense leg, provided no collection loses more than"
        " 0.002; 0 when no weight qualifies).",
        *(
            [
                "",
                "No collection's change at this weight is statistically significant (smallest sign-test"
                f" p = {payload['recommended_min_sign_test_p']:.2f}): fusing the graph at this weight is"
                " safe on these collections, not a proven gain.",
            ]
            if payload.get("recommended_min_sign_test_p", 0.0) > 0.05
            and payload["recommended_weight_graph"] > 0
            else []
        ),
        "",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    main()
