"""End-to-end hybrid retrieval at 100k chunks: index build per leg, query latency, memory, cold start.

    python bench/bench_hybrid.py                      # 100k chunks, USE dense leg, e5-small latency part
    python bench/bench_hybrid.py --n 5000 --no-e5     # quick check
    python bench/bench_hybrid.py --rebuild            # drop the cached index and build again

Corpus. Generated and seeded, with the mixed Chinese/English sentence
generator of ``bench_answer.py`` (Zipfian word choice, commands, 35% English
sentences): one short markdown note per chunk (title, heading, 2-5 sentences,
about 100 units), notes added until the chunker has produced ``--n`` chunks.
Short chunks keep embedding 100k passages on two CPU cores within minutes;
user notes chunk at up to 350 units (``ChunkingSettings.size``). Queries are
2-4 words taken from random notes (``bench_answer.question``), 60% Chinese.

Build (phase ``build``, once; the data dir is cached under
``bench/out/hybrid/<model>-<n>/`` and reused until ``--rebuild``). Everything goes
through the project's code: ``chunk_document`` and ``ChunkStore.put_document``
(store write), ``Engine.sync`` for the BMX leg, then for the dense leg (the
default embedded Qdrant ``edge`` store), and the HNSW graph that
``EdgeVectorStore.optimize`` builds when the writer closes. The dense sync is
split into model time (the embedder's ``embed_passages``), the embedding cache
and the vector inserts.

Serve (phase ``serve``, a fresh process per model, so peak RSS is that of a
process that opens the index and answers queries): ``Engine.search`` with k = 10
in modes hybrid (query embedding included), sparse and dense, one query at a
time, p50/p95 over ``--queries`` queries; the embedder's ``embed_queries`` on
single queries alone; peak RSS from ``getrusage``.

Cold (``rag search QUERY --data-dir D --json`` in a fresh process, from process
start to the printed result, median of ``--cold-runs``; the OS page cache is
warm, as it is for a user who searched a minute ago).

e5-small (the default model) embeds ~10 passages/s on these cores, so 100k
passages are out of reach here. Its part is a *latency-only* measurement in
the same data dir: a second dense collection of the e5 dimension holding real
e5-small vectors for ``--e5-real`` chunks and, for every other chunk, a
synthetic vector (the normalised sum of two random real e5 vectors plus
Gaussian noise of their per-dimension spread, so the data has e5's mean
direction and principal axes). Hybrid and dense latency, query embedding cost,
memory and cold start are then measured with the real e5-small query encoder.
Retrieval quality on that collection means nothing; quality is measured by
``rag eval`` on real collections (bench/results/eval.md).

Results: bench/results/hybrid.json and the tables of bench/results/hybrid.md
(text below the notes marker is kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_answer import EN_WORDS, ZH_WORDS, question, sentence, zipf_choice  # noqa: E402

from ingest.pipeline import chunk_document  # noqa: E402
from rag.engine import Engine  # noqa: E402
from rag.models import ExtractedDocument  # noqa: E402
from rag.retrieval.legs import DenseLeg  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.store import DocumentRecord  # noqa: E402

WORK = REPO / "bench" / "out" / "hybrid"
RESULTS = REPO / "bench" / "results"
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"
TARGETS = {"hybrid_p50_ms": 50.0, "hybrid_p95_ms": 150.0, "cold_s": 3.0, "rss_mib": 1536.0}
MODES = ("hybrid", "sparse", "dense")
COMMIT_EVERY = 1000  # documents per store transaction


# -- data ------------------------------------------------------------------------------------------


def short_note(rng: random.Random, i: int) -> str:
    """A markdown note of one short chunk: title, heading, 2-5 mixed zh/en sentences."""
    title = f"# {zipf_choice(rng, ZH_WORDS)}{zipf_choice(rng, ZH_WORDS)} {zipf_choice(rng, EN_WORDS)} {i}"
    body = "".join(sentence(rng) for _ in range(rng.randint(2, 5)))
    return f"{title}\n\n## {zipf_choice(rng, ZH_WORDS)}\n\n{body}\n"


def make_queries(texts: Sequence[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [question(rng, texts[rng.randrange(len(texts))]) for _ in range(n)]


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_mib(path: Path) -> float:
    """Disk space actually allocated (mmap files are sparse)."""
    if not path.exists():
        return 0.0
    if path.is_file():
        return path.stat().st_blocks * 512 / 2**20
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 2**20


def pcts(ms: Sequence[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}


def store_note(tx: Any, settings: Settings, i: int, text: str) -> tuple[int, float]:
    """Chunk generated note ``i`` and write it in the store transaction ``tx``: its number of
    chunks and the seconds spent chunking it."""
    doc_id = hashlib.blake2b(f"note-{i}".encode(), digest_size=8).hexdigest()
    source = f"notes/{i // 1000:03d}/{i:06d}.md"
    t0 = time.perf_counter()
    chunks = chunk_document(
        ExtractedDocument(text=text, format="markdown"),
        doc_id=doc_id,
        source=source,
        chunking=settings.chunking,
    )
    took = time.perf_counter() - t0
    record = DocumentRecord.for_text(
        doc_id=doc_id,
        root="/bench",
        source=source,
        text=text,
        format="markdown",
        pipeline="bench",
        n_chunks=len(chunks),
    )
    tx.put_document(record, text, chunks)
    return len(chunks), took


def settings_for(data_dir: Path, model: str) -> Settings:
    # the model is given at construction: the fusion weights not set explicitly follow it then
    return Settings(
        data_dir=data_dir,
        embedding={"model": model, "device": "cpu"},  # type: ignore[arg-type]
        graph={"enabled": False},  # type: ignore[arg-type]  # hybrid = BMX + dense here
    )


class TimedCache:
    """Wraps a dense leg's embedding cache: total time in the cache, model time inside it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache_s = 0.0
        self.model_s = 0.0
        self.passages = 0

    def embed_passages(self, embedder: Any, texts: Sequence[str]) -> np.ndarray:
        timed = self

        class _Timed:
            name, dim = embedder.name, embedder.dim

            def embed_passages(self, batch: Sequence[str]) -> np.ndarray:
                t0 = time.perf_counter()
                out = embedder.embed_passages(batch)
                timed.model_s += time.perf_counter() - t0
                timed.passages += len(batch)
                return out

            def embed_queries(self, batch: Sequence[str]) -> np.ndarray:
                return embedder.embed_queries(batch)

        t0 = time.perf_counter()
        out = self.inner.embed_passages(_Timed(), texts)
        self.cache_s += time.perf_counter() - t0
        return out


def dense(engine: Engine) -> DenseLeg:
    leg = engine.leg("dense")
    assert isinstance(leg, DenseLeg)
    return leg


# -- phases (each in its own process) --------------------------------------------------------------


def phase_build(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(args.data_dir)
    settings = settings_for(data_dir, args.model)
    rng = random.Random(args.seed)
    out: dict[str, Any] = {"n_target": args.n, "model": args.model}
    engine = Engine.open(settings, create=True)
    chunk_s = gen_s = 0.0
    n_docs = n_chunks = 0
    t_all = time.perf_counter()
    while n_chunks < args.n:
        with engine.store.transaction() as tx:
            for _ in range(COMMIT_EVERY):
                if n_chunks >= args.n:
                    break
                t0 = time.perf_counter()
                text = short_note(rng, n_docs)
                gen_s += time.perf_counter() - t0
                stored, took = store_note(tx, settings, n_docs, text)
                chunk_s += took
                n_docs += 1
                n_chunks += stored
    store_s = time.perf_counter() - t_all - gen_s  # generating the notes is not indexing
    n_stored = engine.store.count_chunks()
    out["store"] = {
        "s": round(store_s, 2),
        "chunking_s": round(chunk_s, 2),
        "write_s": round(store_s - chunk_s, 2),
        "generate_s": round(gen_s, 2),
        "documents": n_docs,
        "chunks": n_stored,
        "mean_chars_per_chunk": round(
            sum(len(c.index_text()) for b in engine.store.iter_chunks() for c in b) / n_stored, 1
        ),
    }
    print(f"store: {out['store']}", file=sys.stderr, flush=True)

    out["bmx"] = {"s": round(engine.sync(["sparse"])["sparse"].took_s, 2)}
    print(f"bmx: {out['bmx']}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    leg = dense(engine)
    load_s = time.perf_counter() - t0
    timed = TimedCache(leg.cache)
    leg.cache = timed  # type: ignore[assignment]
    last = [0.0]

    def progress(done: int, total: int, what: str) -> None:
        now = time.perf_counter()
        if now - last[0] > 60:
            last[0] = now
            print(f"  {what}: {done}/{total}", file=sys.stderr, flush=True)

    sync = engine.sync(["dense"], progress=progress)["dense"]
    t0 = time.perf_counter()
    leg.vectors.optimize()  # type: ignore[attr-defined]
    hnsw_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.close()
    close_s = time.perf_counter() - t0
    out["dense"] = {
        "embedder_load_s": round(load_s, 2),
        "sync_s": round(sync.took_s, 2),
        "embedding_s": round(timed.model_s, 2),
        "passages_per_s": round(timed.passages / timed.model_s, 1) if timed.model_s else None,
        "embedding_cache_s": round(timed.cache_s - timed.model_s, 2),
        "vector_insert_s": round(sync.took_s - timed.cache_s, 2),
        "hnsw_s": round(hnsw_s, 2),
        "close_s": round(close_s, 2),
    }
    out["total_s"] = round(out["store"]["s"] + out["bmx"]["s"] + load_s + sync.took_s + hnsw_s + close_s, 2)
    out["disk_mib"] = {
        "chunk_store": round(sum(dir_mib(p) for p in data_dir.glob("chunks.sqlite3*")), 1),
        "bmx": round(dir_mib(data_dir / "sparse"), 1),
        "vectors": round(sum(dir_mib(p) for p in (data_dir / "dense").glob("qdrant-*")), 1),
        "embedding_cache": round(sum(dir_mib(p) for p in (data_dir / "dense").glob("embedding-cache*")), 1),
    }
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return out


def phase_e5fill(args: argparse.Namespace) -> dict[str, Any]:
    """Fill an e5-small collection in the same data dir: real vectors for a subset, synthetic for the rest."""
    settings = settings_for(Path(args.data_dir), "e5-small")
    engine = Engine.open(settings)
    store = engine.store
    t0 = time.perf_counter()
    leg = dense(engine)
    out: dict[str, Any] = {"embedder_load_s": round(time.perf_counter() - t0, 2)}
    ids = sorted(store.chunk_ids())  # chunk ids are hashes: the first ones are a random subset
    real_ids, rest = ids[: args.e5_real], ids[args.e5_real :]
    texts = [c.index_text() for c in store.get_chunks(real_ids)]
    t0 = time.perf_counter()
    real = np.asarray(leg.cache.embed_passages(leg.embedder, texts), dtype=np.float32)
    embed_s = time.perf_counter() - t0
    out["real"] = {
        "n": len(real_ids),
        "embed_s": round(embed_s, 1),
        "passages_per_s": round(len(texts) / embed_s, 1),
    }
    print(f"e5 real: {out['real']}", file=sys.stderr, flush=True)
    leg.vectors.upsert(real_ids, real)
    rng = np.random.default_rng(args.seed)
    spread = real.std(axis=0)
    t0 = time.perf_counter()
    for start in range(0, len(rest), 10_000):
        batch = rest[start : start + 10_000]
        a = real[rng.integers(0, len(real), len(batch))]
        b = real[rng.integers(0, len(real), len(batch))]
        syn = a + b + rng.standard_normal((len(batch), real.shape[1])).astype(np.float32) * spread
        syn /= np.linalg.norm(syn, axis=1, keepdims=True)
        leg.vectors.upsert(batch, syn)
    insert_s = time.perf_counter() - t0
    sync = leg.sync(store)  # every chunk has a vector: records the store generation, adds nothing
    assert sync.added == 0 and sync.removed == 0, sync
    t0 = time.perf_counter()
    leg.vectors.optimize()  # type: ignore[attr-defined]
    hnsw_s = time.perf_counter() - t0
    count = leg.vectors.count()
    engine.close()
    mean_cos = float(np.mean(real[: min(500, len(real))] @ real[: min(500, len(real))].T))
    out["synthetic"] = {"n": len(rest), "insert_s": round(insert_s, 1), "hnsw_s": round(hnsw_s, 1)}
    out["count"] = count
    out["real_mean_pairwise_cosine"] = round(mean_cos, 3)
    return out


def phase_serve(args: argparse.Namespace) -> dict[str, Any]:
    queries: list[str] = json.loads(Path(args.queries_file).read_text(encoding="utf-8"))
    out: dict[str, Any] = {
        "model": args.model,
        "n_queries": len(queries),
        "rss_start_mib": round(rss_mib(), 1),
    }
    if args.model.startswith("e5"):  # what importing the model runtime costs, apart from loading the model
        t0 = time.perf_counter()
        import torch

        out["import_torch_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    engine = Engine.open(settings_for(Path(args.data_dir), args.model))
    engine.leg("sparse")
    t1 = time.perf_counter()
    leg = dense(engine)
    t2 = time.perf_counter()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
        out["torch_threads"] = args.torch_threads
    out["open_s"] = {"store_and_bmx": round(t1 - t0, 2), "dense_leg": round(t2 - t1, 2)}
    out["rss_after_open_mib"] = round(rss_mib(), 1)
    r = engine.settings.retrieval
    out["fusion"] = {"method": r.fusion, "sparse": r.weight_sparse, "dense": r.weight_dense}
    out["embedder_load_stats"] = getattr(leg.embedder, "load_stats", None)
    status = engine.status()
    out["index"] = {
        "chunks": status["chunks"],
        "bmx_chunks": status["legs"]["sparse"]["chunks"],
        "vectors": status["legs"]["dense"]["chunks"],
        "in_sync": all(v["in_sync"] for v in status["legs"].values()),
    }
    t0 = time.perf_counter()
    engine.search(queries[0], 10, "hybrid")
    out["first_query_ms"] = round((time.perf_counter() - t0) * 1000, 1)

    # Modes take turns query by query, so that a burst of other work on the machine hits all of them.
    tasks: dict[str, Any] = {"embed_query_ms": lambda q: leg.embedder.embed_queries([q])}
    for mode in MODES:
        tasks[mode] = lambda q, mode=mode: engine.search(q, 10, mode)
    runs: dict[str, list[list[float]]] = {name: [[] for _ in queries] for name in tasks}
    empty = dict.fromkeys(MODES, 0)
    for rep in range(args.repeat):
        for i, q in enumerate(queries):
            for name, fn in tasks.items():
                t0 = time.perf_counter()
                res = fn(q)
                runs[name][i].append((time.perf_counter() - t0) * 1000)
                if rep == 0 and name in empty and not len(res):
                    empty[name] += 1
    for name, per_query in runs.items():
        out[name] = pcts([r[0] for r in per_query])
        out[f"{name}_best"] = pcts([min(r) for r in per_query])
    out["queries_without_hits"] = empty
    engine.close()
    out["rss_end_mib"] = round(rss_mib(), 1)
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return out


PHASES = {"build": phase_build, "e5fill": phase_e5fill, "serve": phase_serve}


# -- driver ----------------------------------------------------------------------------------------


def run_phase(phase: str, args: argparse.Namespace, **extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--data-dir", str(args.data_dir)]
    cmd += [
        "--n",
        str(args.n),
        "--seed",
        str(args.seed),
        "--model",
        args.model,
        "--e5-real",
        str(args.e5_real),
        "--repeat",
        str(args.repeat),
    ]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", value]
    print(f"[{time.strftime('%H:%M:%S')}] phase {phase} {extra or ''}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def cold_search(data_dir: Path, model: str, mode: str, queries: Sequence[str]) -> dict[str, Any]:
    """``rag search`` in a fresh process per query: wall time from start to the printed result."""
    rag = Path(sys.executable).with_name("rag")
    env = {
        **os.environ,
        "RAG_EMBEDDING__MODEL": model,
        "RAG_EMBEDDING__DEVICE": "cpu",
        "RAG_GRAPH__ENABLED": "false",
    }
    walls, took = [], []
    for q in queries:
        cmd = [str(rag), "search", q, "--data-dir", str(data_dir), "--json", "--mode", mode]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"rag search failed: {proc.stderr.strip()}")
        result = json.loads(proc.stdout)
        assert result["hits"], f"no hits for {q!r}"
        took.append(result["took_ms"])
    return {
        "model": model,
        "mode": mode,
        "runs": len(walls),
        "wall_s_median": round(statistics.median(walls), 2),
        "wall_s_min": round(min(walls), 2),
        "wall_s_max": round(max(walls), 2),
        "took_ms_median": round(statistics.median(took), 1),
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="chunks in the index")
    ap.add_argument("--model", default="use", help="embedding model of the end-to-end run")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="passes over the queries (best-of figures)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-e5", action="store_true", help="skip the e5-small latency part")
    ap.add_argument("--e5-real", type=int, default=1000, help="chunks given real e5-small vectors")
    ap.add_argument("--rebuild", action="store_true", help="drop the cached index first")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--out", type=Path, default=RESULTS / "hybrid.md")
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--queries-file", help=argparse.SUPPRESS)
    ap.add_argument("--torch-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return

    args.data_dir = args.work / f"{args.model}-{args.n}"
    built = args.data_dir / "build.json"
    if args.rebuild or not built.exists():
        shutil.rmtree(args.data_dir, ignore_errors=True)  # a half-built index: start over (clean timings)
        args.data_dir.mkdir(parents=True)
        build = run_phase("build", args)
        built.write_text(json.dumps(build, indent=1))
    build = json.loads(built.read_text())
    result: dict[str, Any] = {"machine": machine(), "load_avg_start": os.getloadavg(), "build": build}

    with Engine.open(settings_for(args.data_dir, "none")) as engine:
        texts = [c.text for batch in engine.store.iter_chunks() for c in batch]
    queries = make_queries(texts, args.queries, args.seed + 1)
    del texts
    qfile = args.data_dir / "queries.json"
    qfile.write_text(json.dumps(queries, ensure_ascii=False))
    result["query_examples"] = queries[:5]

    result["serve"] = {args.model: run_phase("serve", args, queries_file=str(qfile))}
    cold_q = queries[-args.cold_runs :]
    result["cold"] = [
        cold_search(args.data_dir, args.model, "hybrid", cold_q),
        cold_search(args.data_dir, args.model, "sparse", cold_q),
    ]
    if not args.no_e5:
        filled = args.data_dir / "e5-fill.json"
        if args.rebuild or not filled.exists():
            filled.write_text(json.dumps(run_phase("e5fill", args), indent=1))
        result["e5_fill"] = json.loads(filled.read_text())
        e5args = argparse.Namespace(**{**vars(args), "model": "e5-small"})
        result["serve"]["e5-small"] = run_phase("serve", e5args, queries_file=str(qfile))
        # the same with one torch thread: single short queries gain little from a second thread
        result["serve"]["e5-small, 1 torch thread"] = run_phase(
            "serve", e5args, queries_file=str(qfile), torch_threads="1"
        )
        result["cold"].append(cold_search(args.data_dir, "e5-small", "hybrid", cold_q))
    result["load_avg_end"] = os.getloadavg()
    result["repeat"] = args.repeat
    result["command"] = "python bench/bench_hybrid.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--phase")
    )
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    write_report(render(result), args.out)
    print(render(result))


# -- report ----------------------------------------------------------------------------------------


def _ok(value: float, target: float) -> str:
    return "yes" if value <= target else "**no**"


def render(r: dict[str, Any]) -> str:
    b, m = r["build"], r["machine"]
    use = r["serve"][b["model"]]
    lines = [
        f"# Hybrid retrieval at {b['store']['chunks']:,} chunks (end to end)",
        "",
        f"`{r['command'].strip()}` (under `nice -n 10`). Machine: {m['cpu']}, {m['cpu_count']} cores "
        f"shared with other jobs (load average {r['load_avg_start'][0]:.1f} at the start, "
        f"{r['load_avg_end'][0]:.1f} at the end), {m['memory_gib']} GiB RAM, no GPU, Python {m['python']}.",
        "",
        f"Corpus: {b['store']['documents']:,} generated mixed zh/en markdown notes, one short chunk each "
        f"(mean {b['store']['mean_chars_per_chunk']:.0f} characters), {use['n_queries']} generated queries "
        f"(e.g. {', '.join(repr(q) for q in r['query_examples'][:3])}). Dense leg: `{b['model']}` in the "
        "embedded Qdrant `edge` store (HNSW m=16, ef_construct=100, search ef=256). Hybrid fuses BMX and "
        "dense by min-max weighted sum with the weights that follow the model "
        "(`rag.retrieval.fusion.default_dense_weight`: USE 0.9/0.1, e5-small 0.7/0.3), 100 candidates per leg.",
        "",
        "## Index build",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| chunk store: chunking + SQLite write | {b['store']['s']:.1f} "
        f"(chunking {b['store']['chunking_s']:.1f}, write {b['store']['write_s']:.1f}) |",
        f"| BMX leg (`Engine.sync`: tokenize, index, save) | {b['bmx']['s']:.1f} |",
        f"| dense: load `{b['model']}` | {b['dense']['embedder_load_s']:.1f} |",
        f"| dense: embedding ({b['dense']['passages_per_s']} passages/s) | {b['dense']['embedding_s']:.1f} |",
        f"| dense: embedding cache (SQLite) | {b['dense']['embedding_cache_s']:.1f} |",
        f"| dense: vector inserts (edge WAL) | {b['dense']['vector_insert_s']:.1f} |",
        f"| dense: HNSW build (`optimize`) | {b['dense']['hnsw_s']:.1f} |",
        f"| close (flush) | {b['dense']['close_s']:.1f} |",
        f"| **total** | **{b['total_s']:.1f}** |",
        "",
        "On disk (MiB): "
        + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in b["disk_mib"].items())
        + f". Peak RSS of the build: {b['peak_rss_mib']:.0f} MiB.",
        "",
        "## Queries (`Engine.search`, k = 10, one at a time, warm process)",
        "",
        f"p50 / p95 in ms over {use['n_queries']} queries: the first pass, and each query's best of "
        f"{r.get('repeat', 1)} passes (on a shared machine other processes only ever add time).",
        "",
        "| dense model | measure | hybrid | sparse | dense | query embedding alone |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, s in r["serve"].items():
        label = name if name == b["model"] else f"{name} (latency only, see below)"
        for measure, suffix in (("first pass", ""), (f"best of {r.get('repeat', 1)}", "_best")):
            cells = [s[key + suffix] for key in ("hybrid", "sparse", "dense", "embed_query_ms")]
            lines.append(
                f"| {label} | {measure} | "
                + " | ".join(f"{c['p50']:.1f} / {c['p95']:.1f}" for c in cells)
                + " |"
            )
    lines += [
        "",
        "| dense model | open: store + BMX s | open: dense leg (model load) s | first query ms "
        "| RSS after open MiB | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in r["serve"].items():
        lines.append(
            f"| {name} | {s['open_s']['store_and_bmx']:.2f} | {s['open_s']['dense_leg']:.2f} "
            f"| {s['first_query_ms']:.0f} | {s['rss_after_open_mib']:.0f} | {s['peak_rss_mib']:.0f} |"
        )
    for name, s in r["serve"].items():
        if "import_torch_s" in s and "torch_threads" not in s:
            stats = s.get("embedder_load_stats") or {}
            lines += [
                "",
                f"Opening the {name} dense leg: importing torch {s['import_torch_s']:.1f} s "
                "(measured first, in the same process; not in the table's open time), "
                f"loading the converted weights {stats.get('load_s', float('nan')):.1f} s.",
            ]
    lines += [
        "",
        "## Cold `rag search` (fresh process, start to printed JSON, warm page cache)",
        "",
        "| model | mode | median s | min / max s | in-process took_ms (median) |",
        "|---|---|---:|---:|---:|",
    ]
    for c in r["cold"]:
        lines.append(
            f"| {c['model']} | {c['mode']} | {c['wall_s_median']:.2f} | {c['wall_s_min']:.2f} / "
            f"{c['wall_s_max']:.2f} | {c['took_ms_median']:.0f} |"
        )
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    for name, s in r["serve"].items():
        cold = next((c for c in r["cold"] if c["model"] == name and c["mode"] == "hybrid"), None)
        lines += [
            f"| hybrid p50 <= 50 ms ({name}) | {s['hybrid']['p50']:.1f} | {_ok(s['hybrid']['p50'], 50)} |",
            f"| hybrid p95 <= 150 ms ({name}) | {s['hybrid']['p95']:.1f} | {_ok(s['hybrid']['p95'], 150)} |",
        ]
        if cold is not None:
            lines.append(
                f"| cold `rag search` <= 3 s ({name}) | {cold['wall_s_median']:.2f} | "
                f"{_ok(cold['wall_s_median'], 3)} |"
            )
        lines.append(
            f"| peak RSS <= 1.5 GiB ({name}) | {s['peak_rss_mib']:.0f} MiB | {_ok(s['peak_rss_mib'], 1536)} |"
        )
    if "e5_fill" in r:
        f = r["e5_fill"]
        lines += [
            "",
            "## e5-small: a latency-only measurement",
            "",
            f"The `chunks-e5-small` collection in the same data dir holds real e5-small vectors for "
            f"{f['real']['n']:,} chunks (embedded at {f['real']['passages_per_s']} passages/s, "
            f"{f['real']['embed_s']:.0f} s) and **synthetic** 384-d vectors for the other "
            f"{f['synthetic']['n']:,} (normalised sum of two random real vectors plus Gaussian noise of "
            f"their per-dimension spread; HNSW build {f['synthetic']['hnsw_s']:.0f} s). Queries are embedded "
            "by the real e5-small model, so query embedding, HNSW search at 100k, fusion, memory (torch and "
            "the model loaded) and cold start are real; the hits of the dense leg are not meaningful.",
        ]
    return "\n".join(lines) + "\n"


def write_report(md: str, out: Path) -> None:
    notes = ""
    if out.exists():
        old = out.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + ("\n" + notes if notes else "\n" + NOTES_MARKER + "\n"), encoding="utf-8")


if __name__ == "__main__":
    main()
