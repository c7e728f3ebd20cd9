"""Chunks that carry their context: retrieval with and without it, in one run.

Run from the repository root (sparse leg only; no model is loaded)::

    python bench/bench_pdf_context.py                      # reports + xquad_en, xquad_zh, cmrc2018_dev_zh, covidqa
    python bench/bench_pdf_context.py --collections xquad_en --n-queries 100   # a quick look
    python bench/bench_pdf_context.py --render             # rewrite the .md from the last .json

**Reports** (``--docs``, default ``../shared/eval/pdf_reports_en/docs``): every PDF is ingested
once, with context (``sync_paths``, default settings), and a known-item collection is generated
from that index with ``eval.generate.generate_collection`` (what ``rag eval --generate`` runs):
a salient body sentence per picked chunk is the query and is cut out of its chunk. Two corpora are
written from it, differing only in each entry's ``title``: *with* = heading path and context (what
the index sees), *without* = heading path only. Queries, qrels and texts are the same, so the two
arms are paired query by query. The context is never the query: sentences come from chunk text
only, are picked by salience counted without context, and a sentence found in any context is not
used. Each arm is indexed by ``eval.runner.index_dataset`` with chunks of 1024 units, so each corpus
entry stays one chunk, and searched with ``eval.runner.run_mode`` in sparse mode.

**Collections** (``--collections``, BEIR layout under ``--eval-dir``): each is evaluated twice by
the same runner with default chunking, ``chunking.context`` on and off (what ``rag eval`` does with
``RAG_CHUNKING__CONTEXT=true|false``). There an entry is ``title`` + blank line + ``text``, so
context can only reach an entry's later chunks (its title line, when the entry is split).

Reported per arm: nDCG@10, recall@10, recall@100, MRR@10, and for the reports *right report@1*
(the top hit comes from the PDF the query was taken from); per pair: the mean nDCG@10 difference
with a 95% paired bootstrap interval (2,000 resamples of the queries, seed 0) and how many queries
went up, down or stayed. Writes ``bench/results/pdf_context.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAG_EMBEDDING__MODEL", "none")

from eval.beir import BeirDataset, load_beir  # noqa: E402
from eval.generate import generate_collection  # noqa: E402
from eval.runner import ModeResult, index_dataset, run_mode  # noqa: E402
from ingest.pipeline import sync_paths  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.store import ChunkStore  # noqa: E402

EVAL_DIR = ROOT.parent / "shared" / "eval"
DEFAULT_DOCS = EVAL_DIR / "pdf_reports_en" / "docs"
DEFAULT_COLLECTIONS = ["xquad_en", "xquad_zh", "cmrc2018_dev_zh", "covidqa_chunks_en"]
JSON_OUT = ROOT / "bench" / "results" / "pdf_context.json"
MD_OUT = ROOT / "bench" / "results" / "pdf_context.md"
METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]


def _settings(data_dir: Path, *, context: bool, size: int | None = None) -> Settings:
    s = Settings(data_dir=data_dir)
    s.embedding.model = "none"
    s.graph.enabled = False
    s.chunking.context = context
    if size is not None:
        s.chunking.size = size
    return s


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def _paired(a: ModeResult, b: ModeResult, metric: str = "ndcg@10") -> dict[str, Any]:
    """``b`` minus ``a`` per query: mean, 95% paired bootstrap interval, up/down/same counts."""
    qids = sorted(set(a.per_query) & set(b.per_query))
    diffs = [b.per_query[q].get(metric, 0.0) - a.per_query[q].get(metric, 0.0) for q in qids]
    rng = random.Random(0)
    n = len(diffs)
    means = sorted(math.fsum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(2000)) if n else []
    return {
        "metric": metric,
        "n": n,
        "mean_diff": math.fsum(diffs) / n if n else 0.0,
        "ci95": [means[49], means[1949]] if means else [0.0, 0.0],
        "up": sum(1 for d in diffs if d > 1e-12),
        "down": sum(1 for d in diffs if d < -1e-12),
        "same": sum(1 for d in diffs if abs(d) <= 1e-12),
    }


def _arm(ds: Any, settings: Settings, *extra: Any) -> tuple[ModeResult, dict[str, Any]]:
    """Index ``ds`` and search its queries; ``extra``: more query sets (datasets with the same corpus)
    searched on the same index, their results in ``info["extra"]``."""
    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    engine = index_dataset(ds, settings, timings=timings, legs=["sparse"])
    try:
        chunks = [c for batch in engine.store.iter_chunks() for c in batch]
        result = run_mode(engine, ds, "sparse")
        more = [run_mode(engine, other, "sparse") for other in extra]
    finally:
        engine.close()
    info: dict[str, Any] = {
        "extra": more,
        "n_chunks": len(chunks),
        "chunks_with_context": sum(1 for c in chunks if c.context),
        "mean_context_chars": round(math.fsum(len(c.context) for c in chunks) / max(1, len(chunks)), 1),
        "took_s": round(time.perf_counter() - t0, 2),
        "metrics": {m: result.metrics[m] for m in METRICS},
    }
    return result, info


# --- the reports -----------------------------------------------------------------------------------


def bench_reports(docs: Path, work: Path, n_queries: int, seed: int) -> dict[str, Any]:
    settings = _settings(work / "ingest", context=True)
    t0 = time.perf_counter()
    with ChunkStore(settings.data_dir) as store:
        report = sync_paths([docs], settings, store)
        if report.failed:
            raise SystemExit(f"ingest failed: {report.failed}")
        ingest_s = time.perf_counter() - t0
        chunks = [c for batch in store.iter_chunks() for c in batch]
        pages = sum(d.n_pages or 0 for d in store.documents())
        with_dir = work / "known-item-with"
        meta = generate_collection(store, with_dir, n_queries=n_queries, seed=seed)
    # the same collection without context: titles are the heading paths alone
    without_dir = work / "known-item-without"
    shutil.copytree(with_dir, without_dir)
    rows = [json.loads(line) for line in (with_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    with (without_dir / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "title": row["heading"]}, ensure_ascii=False) + "\n")
    source_of = {row["_id"]: row["source"] for row in rows}
    has_context = {row["_id"]: bool(row["context"]) for row in rows}

    out: dict[str, Any] = {
        "docs": str(docs),
        "n_documents": report.documents,
        "n_pages": pages,
        "n_chunks": len(chunks),
        "chunks_with_context": sum(1 for c in chunks if c.context),
        "mean_context_chars": round(math.fsum(len(c.context) for c in chunks) / max(1, len(chunks)), 1),
        "ingest_s": round(ingest_s, 2),
        "n_queries": meta["n_queries"],
        "seed": seed,
        "arms": {},
    }
    results: dict[str, ModeResult] = {}
    named_results: dict[str, ModeResult] = {}
    for arm, path in (("without", without_dir), ("with", with_dir)):
        ds = load_beir(path)
        qrel_source = {q: source_of[next(iter(rel))] for q, rel in ds.qrels.items()}
        # the same queries, each led by the name of its report as its file gives it ("DHS 2020")
        named = BeirDataset(
            name=ds.name,
            corpus=ds.corpus,
            queries={q: f"{report_name(qrel_source[q])} {text}" for q, text in ds.queries.items()},
            qrels=ds.qrels,
        )
        results[arm], info = _arm(ds, _settings(work / f"index-{arm}", context=False, size=1024), named)
        named_results[arm] = info.pop("extra")[0]
        info["right_report@1"] = _right_report(results[arm], source_of, qrel_source)
        info["named"] = {
            "metrics": {m: named_results[arm].metrics[m] for m in METRICS},
            "right_report@1": _right_report(named_results[arm], source_of, qrel_source),
        }
        out["arms"][arm] = info
    out["paired"] = _paired(results["without"], results["with"])
    out["paired_named"] = _paired(named_results["without"], named_results["with"])
    out["report_names"] = sorted({report_name(src) for src in source_of.values()})
    # queries whose chunk has context (the others cannot change)
    ds = load_beir(with_dir)
    carried = [q for q, rel in ds.qrels.items() if has_context[next(iter(rel))]]
    out["queries_on_chunks_with_context"] = len(carried)
    return out


_CASE_DIGIT_RE = re.compile(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")


def report_name(source: str) -> str:
    """How a person names a report, from its file name: ``DHS2020.pdf`` -> ``DHS 2020``,
    ``2015-annual-performance-report.pdf`` -> ``2015 annual performance report``."""
    stem = Path(source).stem
    return " ".join(_CASE_DIGIT_RE.sub(" ", stem).replace("-", " ").replace("_", " ").split())


def _right_report(result: ModeResult, source_of: dict[str, str], qrel_source: dict[str, str]) -> float:
    """Share of queries whose top hit comes from the report the query was taken from."""
    right = [
        1.0 if ranked and source_of[ranked[0]] == qrel_source[q] else 0.0 for q, ranked in result.run.items()
    ]
    return math.fsum(right) / len(right) if right else 0.0


# --- the collections -------------------------------------------------------------------------------


def bench_collection(name: str, work: Path) -> dict[str, Any]:
    ds = load_beir(EVAL_DIR / name)
    out: dict[str, Any] = {
        "dataset": name,
        "n_queries": len(ds.qrels),
        "n_corpus": len(ds.corpus),
        "arms": {},
    }
    results: dict[str, ModeResult] = {}
    for arm, context in (("without", False), ("with", True)):
        results[arm], out["arms"][arm] = _arm(ds, _settings(work / f"{name}-{arm}", context=context))
        del out["arms"][arm]["extra"]
    out["paired"] = _paired(results["without"], results["with"])
    return out


# --- the collections as notes named by their titles ------------------------------------------------

_UNSAFE_NAME_RE = re.compile(r'[\\/:*?"<>|\x00-\x1f]+')


def bench_notes(name: str, work: Path) -> dict[str, Any]:
    """Each corpus entry as a markdown note ``<id>/<title>.md`` holding only the entry's text: the
    title is the file's name and nowhere in the note, as when someone names a note and writes no
    heading. Ingested by ``sync_paths`` with ``chunking.context`` off and on; a hit counts for the
    entry its folder names."""
    from eval.metrics import evaluate_run_per_query
    from rag.engine import Engine

    ds = load_beir(EVAL_DIR / name)
    folder = work / f"notes-{name}"
    for cid, entry in ds.corpus.items():
        title = _UNSAFE_NAME_RE.sub(" ", entry["title"]).strip()[:120] or "note"
        path = folder / _UNSAFE_NAME_RE.sub("_", cid) / f"{title}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["text"], encoding="utf-8")
    cid_of = {_UNSAFE_NAME_RE.sub("_", cid): cid for cid in ds.corpus}
    out: dict[str, Any] = {
        "dataset": name,
        "n_queries": len(ds.qrels),
        "n_corpus": len(ds.corpus),
        "arms": {},
    }
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for arm, context in (("without", False), ("with", True)):
        settings = _settings(work / f"notes-{name}-{arm}", context=context)
        t0 = time.perf_counter()
        with Engine.open(settings, create=True) as engine:
            sync_paths([folder], settings, engine.store)
            engine.store.acquire_writer_lock()
            try:
                engine.sync(["sparse"])
            finally:
                engine.store.release_writer_lock()
            chunks = [c for batch in engine.store.iter_chunks() for c in batch]
            retriever = engine.retriever("sparse")
            run = {}
            for qid, text in ds.queries.items():
                hits = retriever.search(text, 100, "sparse")
                run[qid] = list(dict.fromkeys(cid_of[h.chunk.source.split("/")[0]] for h in hits))
        per_query[arm] = evaluate_run_per_query(run, ds.qrels)
        out["arms"][arm] = {
            "n_chunks": len(chunks),
            "chunks_with_context": sum(1 for c in chunks if c.context),
            "took_s": round(time.perf_counter() - t0, 2),
            "metrics": {
                m: math.fsum(v[m] for v in per_query[arm].values()) / len(per_query[arm]) for m in METRICS
            },
        }
    a = ModeResult(metrics={}, per_query=per_query["without"])
    b = ModeResult(metrics={}, per_query=per_query["with"])
    out["paired"] = _paired(a, b)
    return out


# --- report ----------------------------------------------------------------------------------------


def _fmt_pair(p: dict[str, Any]) -> str:
    lo, hi = p["ci95"]
    return f"{p['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def render(data: dict[str, Any]) -> str:
    lines = [
        "# Chunks that carry their context: retrieval with and without",
        "",
        f"Measured with `{data['command']}` at commit `{data['commit']}` ({data['machine']}; "
        f"sparse leg only, no dense model, no graph). Load: `{data['uptime_start']}` at the start, "
        f"`{data['uptime_end']}` at the end; {data['took_s']:.0f} s in all.",
        "",
        "Context = the document title (PDF metadata when it names the document, else the first page's "
        "largest line; a markdown file's first `#` heading or its file name; a text's short first line), "
        "the page's running header (PDFs), and the header row of the table a chunk starts inside; each "
        "item kept only when it brings a word that the heading path, the chunk text and the items before "
        "it lack; at most 300 characters. It is indexed with the chunk (`Chunk.index_text()`), never "
        "shown: text and offsets are the same in both arms.",
        "",
    ]
    r = data.get("reports")
    if r:
        lines += [
            "## Real reports: known-item queries",
            "",
            f"{r['n_documents']} PDFs ({r['n_pages']} pages) ingested with context into {r['n_chunks']} chunks, "
            f"{r['chunks_with_context']} of them with a context (mean {r['mean_context_chars']} characters "
            f"over all chunks). `generate_collection` (what `rag eval --generate` runs, seed {r['seed']}) "
            f"picked {r['n_queries']} queries, {r['queries_on_chunks_with_context']} of them from chunks with a "
            "context. Both arms use the same queries, qrels and chunk texts (the query sentence cut out); "
            "*without* indexes heading path + text, *with* heading path + context + text.",
            "",
            "| arm | nDCG@10 | recall@10 | recall@100 | MRR@10 | right report@1 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for arm in ("without", "with"):
            a = r["arms"][arm]
            m = a["metrics"]
            lines.append(
                f"| {arm} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['recall@100']:.4f} | "
                f"{m['mrr@10']:.4f} | {a['right_report@1']:.4f} |"
            )
        p = r["paired"]
        lines += [
            "",
            f"nDCG@10 with − without: {_fmt_pair(p)} (95% paired bootstrap); per query: "
            f"{p['up']} up, {p['down']} down, {p['same']} the same.",
            "",
            "The same queries, each led by the name of its report as its file name gives it (how a person "
            "asks about one report among many: " + ", ".join(f"`{n}`" for n in r["report_names"]) + "). "
            "The name comes from the file name, which is not part of the context (every one of these PDFs "
            "has a title); its words reach the context only where the report's title or running header "
            "happens to use them.",
            "",
            "| arm | nDCG@10 | recall@10 | recall@100 | MRR@10 | right report@1 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for arm in ("without", "with"):
            a = r["arms"][arm]["named"]
            m = a["metrics"]
            lines.append(
                f"| {arm} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['recall@100']:.4f} | "
                f"{m['mrr@10']:.4f} | {a['right_report@1']:.4f} |"
            )
        p = r["paired_named"]
        lines += [
            "",
            f"nDCG@10 with − without: {_fmt_pair(p)}; per query: {p['up']} up, {p['down']} down, "
            f"{p['same']} the same.",
            "",
        ]
    cols = data.get("collections") or []
    if cols:
        lines += [
            "## BEIR collections (`rag eval`, default chunking, `chunking.context` off / on)",
            "",
            "| collection | queries | chunks | chunks with context | nDCG@10 without | nDCG@10 with | "
            "difference [95% CI] | up / down / same | recall@100 without / with |",
            "|---|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for c in cols:
            w, o = c["arms"]["without"], c["arms"]["with"]
            p = c["paired"]
            lines.append(
                f"| {c['dataset']} | {c['n_queries']} | {o['n_chunks']} | {o['chunks_with_context']} | "
                f"{w['metrics']['ndcg@10']:.4f} | {o['metrics']['ndcg@10']:.4f} | {_fmt_pair(p)} | "
                f"{p['up']} / {p['down']} / {p['same']} | "
                f"{w['metrics']['recall@100']:.4f} / {o['metrics']['recall@100']:.4f} |"
            )
        lines.append("")
    notes = data.get("notes") or []
    if notes:
        lines += [
            "## The same collections as notes named by their titles",
            "",
            "Each corpus entry written as a markdown note `<id>/<title>.md` holding only the entry's text "
            "(no heading): the title is the file's name and nowhere in the note, so with context on it "
            "reaches the index as the note's title (the file name, `_` and `-` read as spaces). Ingested "
            "by `sync_paths`, `chunking.context` off / on; a hit counts for the entry its folder names.",
            "",
            "| collection | chunks with context | nDCG@10 without | nDCG@10 with | difference [95% CI] | "
            "up / down / same | recall@100 without / with |",
            "|---|---:|---:|---:|---|---|---|",
        ]
        for c in notes:
            w, o = c["arms"]["without"], c["arms"]["with"]
            p = c["paired"]
            lines.append(
                f"| {c['dataset']} | {o['chunks_with_context']} of {o['n_chunks']} | "
                f"{w['metrics']['ndcg@10']:.4f} | {o['metrics']['ndcg@10']:.4f} | {_fmt_pair(p)} | "
                f"{p['up']} / {p['down']} / {p['same']} | "
                f"{w['metrics']['recall@100']:.4f} / {o['metrics']['recall@100']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    ap.add_argument("--n-queries", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--collections", default=",".join(DEFAULT_COLLECTIONS), help="comma-separated; '' for none"
    )
    ap.add_argument(
        "--notes", default=",".join(DEFAULT_COLLECTIONS), help="collections also run as titled notes"
    )
    ap.add_argument("--no-reports", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--render", action="store_true", help="rewrite the .md from the last .json")
    args = ap.parse_args()
    if args.render:
        MD_OUT.write_text(render(json.loads(JSON_OUT.read_text(encoding="utf-8"))), encoding="utf-8")
        return
    t0 = time.perf_counter()
    data: dict[str, Any] = {
        "command": "python bench/bench_pdf_context.py " + " ".join(sys.argv[1:]),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "uptime_start": _uptime(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-pdf-context-") as tmp:
        work = Path(tmp)
        if not args.no_reports:
            data["reports"] = bench_reports(args.docs, work, args.n_queries, args.seed)
            print(json.dumps(data["reports"], indent=1), flush=True)
        data["collections"] = []
        for name in [c for c in args.collections.split(",") if c]:
            res = bench_collection(name, work)
            data["collections"].append(res)
            print(json.dumps(res, indent=1), flush=True)
        data["notes"] = []
        for name in [c for c in args.notes.split(",") if c]:
            res = bench_notes(name, work)
            data["notes"].append(res)
            print(json.dumps(res, indent=1), flush=True)
    data["uptime_end"] = _uptime()
    data["took_s"] = time.perf_counter() - t0
    md = render(data)
    print(md)
    if not args.no_write:
        JSON_OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        MD_OUT.write_text(md, encoding="utf-8")


if __name__ == "__main__":
    main()
