"""Benchmark the BMX index against baguetter's BMX and bm25s (BM25) on one synthetic corpus.

The corpus is generated (seeded): N documents of 50-150 tokens drawn from a
Zipfian (s = 1) vocabulary of 60k English-like words and 60k Chinese words of
1-3 characters, interleaved. 1,000 queries of 2-6 tokens are taken from random
documents (half from one document, half from two). Every engine gets the same
token lists and runs in its own child process (so peak RSS is its own), one
after the other:

* ``ours``: rag.sparse.bmx.BMXIndex;
* ``baguetter``: baguetter 0.1.1 BMXSparseIndex (imported without its package
  ``__init__``; see tests/test_bmx_oracle.py), which rebuilds on every add/remove;
* ``bm25s``: bm25s BM25 (k1 = 1.2, b = 0.75), which has no update API: an add or
  a delete is a re-index of the whole corpus.

Measured: build, queries/s (one query at a time, k = 10, after one warm-up
query; the best of three passes), add one document, delete one document, save (and its size on disk),
load, the first query after load, the RSS the built index adds to the corpus
held in memory, and the peak RSS of the whole run (corpus, updates, save and
a second, loaded copy included).

Run: ``python bench/bench_bmx.py [--n 100000] [--engines ours,baguetter,bm25s]
[--out bench/results/bmx.md]``. Writes the Markdown table and a JSON copy; notes
below the marker line in an existing report are kept.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.sparse.bmx import BMXIndex  # noqa: E402

ENGINES = ("ours", "baguetter", "bm25s")
N_UPDATES_OURS = 3000  # single-document adds (and deletes) timed for our index; includes delta merges


# ----------------------------------------------------------------------------- data


def make_corpus(n_docs: int, n_queries: int, seed: int) -> tuple[list[str], list[list[str]], list[list[str]]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    en = ["".join(rng.choice(letters, size=int(rng.integers(3, 11)))) for _ in range(60_000)]
    han = rng.integers(0x4E00, 0x9FA5, size=(60_000, 3))
    zh = ["".join(chr(int(c)) for c in row[: 1 + i % 3]) for i, row in enumerate(han)]
    words = list(dict.fromkeys(en + zh))
    rng.shuffle(words)
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    lengths = rng.integers(50, 151, size=n_docs + N_UPDATES_OURS)
    # tokens share the vocabulary's string objects, as a tokenizer's interned output would
    flat = list(map(words.__getitem__, rng.choice(len(words), size=int(lengths.sum()), p=p).tolist()))
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    docs = [flat[bounds[i] : bounds[i + 1]] for i in range(len(lengths))]
    queries: list[list[str]] = []
    for j in range(n_queries):
        size = int(rng.integers(2, 7))
        sources = [docs[int(rng.integers(0, n_docs))] for _ in range(1 + j % 2)]
        queries.append(
            [src[int(rng.integers(0, len(src)))] for src in sources for _ in range(size // len(sources))]
        )
    ids = [f"doc-{i:07d}" for i in range(len(docs))]
    return ids, docs, queries


def rss_now_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- engines


def load_baguetter(cache_dir: str) -> Any:
    spec = importlib.util.find_spec("baguetter")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("baguetter is not installed: pip install --no-deps baguetter==0.1.1")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, sub in (
        ("baguetter", ""),
        ("baguetter.indices", "indices"),
        ("baguetter.indices.sparse", "indices/sparse"),
    ):
        shell = types.ModuleType(name)
        shell.__path__ = [str(root / sub)]
        sys.modules.setdefault(name, shell)
    os.environ["BAGUETTER_BASE_PATH"] = os.environ["BAGUETTER_CACHE_DIR"] = cache_dir
    from baguetter.indices.sparse.bmx import BMXSparseIndex
    from baguetter.indices.sparse.text_preprocessor import TextPreprocessorConfig

    return BMXSparseIndex, TextPreprocessorConfig


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_engine(engine: str, n: int, n_queries: int, seed: int) -> dict[str, Any]:
    warnings.simplefilter("ignore")  # numba deprecation notices from the reference code
    ids, docs, queries = make_corpus(n, n_queries, seed)
    base_ids, base_docs = ids[:n], docs[:n]
    extra = list(zip(ids[n:], docs[n:], strict=True))
    rss_corpus = rss_now_mb()
    res: dict[str, Any] = {"engine": engine, "n_docs": n, "n_queries": len(queries)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-bmx-"))
    try:
        if engine == "ours":
            index = BMXIndex()
            res["build_s"], _ = timed(lambda: index.upsert(base_ids, base_docs))
            res["rss_built_mb"] = rss_now_mb()
            res["n_terms"] = len(index._terms)
            index.search(queries[0], 10)
            res["qps"] = best_qps(lambda: [index.search(q, 10) for q in queries], len(queries))
            adds = [timed(lambda i=i, d=d: index.upsert([i], [d]))[0] for i, d in extra]
            dels = [timed(lambda i=i: index.delete([i]))[0] for i, _ in extra]
            res["add_ms"] = _spread(adds)
            res["delete_ms"] = _spread(dels)
            res["compact_s"], _ = timed(index.compact)
            res["save_s"], _ = timed(lambda: index.save(tmp / "ours"))
            res["disk_mb"] = disk_mb(tmp / "ours")
            res["load_s"], loaded = timed(lambda: BMXIndex.load(tmp / "ours"))
            res["first_query_ms"] = timed(lambda: loaded.search(queries[1], 10))[0] * 1e3
        elif engine == "baguetter":
            bmx_cls, pre_cfg = load_baguetter(str(tmp / "cache"))

            def make() -> Any:
                return bmx_cls(preprocessor_or_config=pre_cfg(stopwords=set(), stemmer=None), n_workers=1)

            index = make()
            res["build_s"], _ = timed(lambda: index.add_many(base_ids, base_docs))
            res["rss_built_mb"] = rss_now_mb()
            res["n_terms"] = len(index.vocabulary)
            res["warmup_query_s"], _ = timed(lambda: index.search(queries[0], top_k=10))  # numba compile
            res["qps"] = best_qps(lambda: [index.search(q, top_k=10) for q in queries], len(queries))
            i, d = extra[0]
            res["add_ms"] = _spread([timed(lambda: index.add(i, d))[0]])
            res["delete_ms"] = _spread([timed(lambda: index.remove(i))[0]])
            path = str(tmp / "baguetter.npz")
            res["save_s"], _ = timed(lambda: index.save(path))
            res["disk_mb"] = disk_mb(Path(path))
            res["load_s"], loaded = timed(lambda: bmx_cls.load(path))
            res["first_query_ms"] = timed(lambda: loaded.search(queries[1], top_k=10))[0] * 1e3
        elif engine == "bm25s":
            import bm25s

            def build(corpus: list[list[str]]) -> Any:
                model = bm25s.BM25(k1=1.2, b=0.75)
                model.index(corpus, show_progress=False)
                return model

            res["build_s"], model = timed(lambda: build(base_docs))
            res["rss_built_mb"] = rss_now_mb()
            res["n_terms"] = len(model.vocab_dict)

            def query_all(m: Any) -> None:
                for q in queries:
                    m.retrieve([q], k=10, show_progress=False, n_threads=0)

            model.retrieve([queries[0]], k=10, show_progress=False)
            res["qps"] = best_qps(lambda: query_all(model), len(queries))
            res["qps_batched"] = best_qps(
                lambda: model.retrieve(queries, k=10, show_progress=False, n_threads=0), len(queries)
            )
            # no update API: adding or deleting one document re-indexes the corpus
            res["add_ms"] = _spread([timed(lambda: build([*base_docs, extra[0][1]]))[0]])
            res["delete_ms"] = _spread([timed(lambda: build(base_docs[1:]))[0]])
            res["save_s"], _ = timed(lambda: model.save(str(tmp / "bm25s"), show_progress=False))
            res["disk_mb"] = disk_mb(tmp / "bm25s")
            res["load_s"], loaded = timed(lambda: bm25s.BM25.load(str(tmp / "bm25s"), show_progress=False))
            res["first_query_ms"] = (
                timed(lambda: loaded.retrieve([queries[1]], k=10, show_progress=False))[0] * 1e3
            )
        else:
            raise SystemExit(f"unknown engine {engine!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["peak_rss_mb"] = peak_rss_mb()
    res["corpus_rss_mb"] = rss_corpus
    return res


def best_qps(run_all: Any, n_queries: int, passes: int = 3) -> float:
    """Queries per second of the fastest of ``passes`` runs (other jobs share the machine)."""
    return n_queries / min(timed(run_all)[0] for _ in range(passes))


def disk_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _spread(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in seconds)
    return {
        "n": len(ms),
        "median": statistics.median(ms),
        "mean": statistics.fmean(ms),
        "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "max": ms[-1],
    }


# ----------------------------------------------------------------------------- report


def _fmt_ms(v: dict[str, float]) -> str:
    if v["n"] == 1:
        return f"{v['median']:,.0f} ms" if v["median"] >= 10 else f"{v['median']:.2f} ms"
    return f"{v['median']:.2f} ms (mean {v['mean']:.2f}, p99 {v['p99']:.1f}, max {v['max']:,.0f})"


def to_markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    n = results[0]["n_docs"]
    lines = [
        "# BMX index benchmark",
        "",
        f"Command: `python bench/bench_bmx.py --n {n}` on {platform.machine()} with {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__} ({time.strftime('%Y-%m-%d')}).",
        f"Corpus: {n:,} synthetic documents, 50-150 tokens each, Zipfian (s = 1) over 60k English-like "
        f"and 60k Chinese words; {results[0]['n_queries']} queries of 2-6 tokens (queries/s: best of 3 "
        f"passes); k = 10; seed {args.seed}. "
        "Each engine ran in its own process; other jobs shared the machine, so absolute times are noisy.",
        "",
        "| engine | build | queries/s | add one doc | delete one doc | save (size) | load "
        "| 1st query after load | RSS of the built index | peak RSS, whole run |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    names = {"ours": "BMXIndex (ours)", "baguetter": "baguetter 0.1.1 BMX", "bm25s": "bm25s BM25"}
    for r in results:
        qps = f"{r['qps']:,.0f}" + (f" ({r['qps_batched']:,.0f} batched)" if "qps_batched" in r else "")
        lines.append(
            f"| {names[r['engine']]} | {r['build_s']:.1f} s | {qps} | {_fmt_ms(r['add_ms'])} "
            f"| {_fmt_ms(r['delete_ms'])} | {r['save_s']:.2f} s ({r['disk_mb']:,.0f} MB) "
            f"| {r['load_s']:.2f} s "
            f"| {r['first_query_ms']:.1f} ms | {r['rss_built_mb'] - r['corpus_rss_mb']:,.0f} MB "
            f"| {r['peak_rss_mb']:,.0f} MB |"
        )
    lines.append("")
    ours = next((r for r in results if r["engine"] == "ours"), None)
    if ours:
        lines.append(
            f"Ours: {ours['add_ms']['n']} single adds then as many single deletes, timed one by one (the "
            f"mean includes the delta merges into the main segment); a full compaction afterwards took "
            f"{ours['compact_s']:.2f} s. Vocabulary: {ours['n_terms']:,} terms."
        )
    bag = next((r for r in results if r["engine"] == "baguetter"), None)
    if bag:
        lines.append(
            f"baguetter: first query (numba compile) {bag['warmup_query_s']:.1f} s, excluded from queries/s; "
            "its add/remove rebuild the whole index; save is a pickled, compressed `.npz`."
        )
    lines.append("bm25s: no update API, so add/delete is a re-index; save/load without mmap.")
    if ours and bag:
        lines += [
            "",
            "## Wrap baguetter or own index?",
            "",
            f"Own index. In this run it built {bag['build_s'] / ours['build_s']:.0f}x faster than baguetter, "
            f"answered {ours['qps'] / bag['qps']:.1f}x as many queries per second, added one document "
            f"{bag['add_ms']['median'] / ours['add_ms']['mean']:,.0f}x faster (against our mean, merges "
            "included) and deleted one "
            f"{bag['delete_ms']['median'] / ours['delete_ms']['mean']:,.0f}x faster, "
            f"saved {bag['save_s'] / ours['save_s']:.0f}x and loaded {bag['load_s'] / ours['load_s']:.0f}x "
            "faster. A wrapper would inherit baguetter's full rebuild on every add/remove, its pickled "
            "save (which also drops alpha, beta and normalize_scores), its zero-score hits for queries "
            "without a known token, and numba/scikit-learn/nltk as run-time dependencies.",
        ]
    lines.append("")
    return "\n".join(lines)


NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


def write_report(md: str, out: Path) -> None:
    """Write ``md``, keeping any hand-written notes below NOTES_MARKER in an existing report."""
    notes = ""
    if out.is_file():
        old = out.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + ("\n" + notes if notes else ""), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="number of documents")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bmx.md")
    parser.add_argument("--from-json", type=Path, help="only re-render the report from a saved JSON")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # child mode: run one engine, print JSON
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args.engine, args.n, args.queries, args.seed)))
        return
    if args.from_json:
        write_report(to_markdown(json.loads(args.from_json.read_text(encoding="utf-8")), args), args.out)
        return
    results = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--engine", engine, "--n", str(args.n)]
        cmd += ["--queries", str(args.queries), "--seed", str(args.seed)]
        print(f"running {engine} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{engine} failed")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
    md = to_markdown(results, args)
    print(md)
    write_report(md, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
