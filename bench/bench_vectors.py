"""Benchmark the vector stores at 100k chunks: build, single writes, query latency, recall, reopen, memory.

    python bench/bench_vectors.py                    # edge + local, 100k x 384-d, embedding-like
    python bench/bench_vectors.py --data isotropic --backends edge
    python bench/bench_vectors.py --n 20000 --no-write

Results go to bench/results/vectors-<data>.json; the tables of
bench/results/vectors.md are regenerated from those files (its conclusions,
below a marker line, are kept).

Each measurement phase runs in a fresh subprocess so that peak RSS belongs to
that phase alone: ``build`` (generate, upsert, close) and ``serve`` (reopen,
queries, single upserts/deletes, close).

Data. ``embedding`` (default) imitates sentence embeddings: a shared mean
direction of norm 0.44 plus a power-law spectrum (variance of the i-th
principal axis proportional to 1/i) under a random rotation. That is the shape
measured on all-MiniLM-L6-v2 embeddings of 1 500 covidqa passages (mean norm
0.44, log-log spectrum slope -1.03, participation ratio 50). ``isotropic`` is
uniform on the sphere: no structure at all, the worst case for HNSW.
Queries are fresh samples from the same distribution; recall@10 is measured
against exact numpy search.

qdrant-client local mode commits every point to SQLite separately (one fsync
each, ~27 ms on this disk), so its 100k build runs on tmpfs (/dev/shm) and is
then copied to disk; its single-upsert time is measured on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLLECTION = "chunks"
MEAN_NORM = 0.44  # measured, see module docstring
SPACE_SEED = 1234  # the mean direction and rotation shared by data and queries


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_vectors(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit vectors of the chosen distribution (float32)."""
    rng = np.random.default_rng(seed)
    if kind == "isotropic":
        out = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        space = np.random.default_rng(SPACE_SEED)
        mean = space.standard_normal(dim)
        mean *= MEAN_NORM / np.linalg.norm(mean)
        rotation, _ = np.linalg.qr(space.standard_normal((dim, dim)))
        spectrum = 1.0 / np.arange(1, dim + 1)
        spectrum *= (1 - MEAN_NORM**2) / spectrum.sum()
        scale = np.sqrt(spectrum).astype(np.float32)
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 10_000):
            z = rng.standard_normal((min(10_000, n - start), dim), dtype=np.float32) * scale
            out[start : start + len(z)] = z @ rotation.T.astype(np.float32) + mean.astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def chunk_ids(n: int, offset: int = 0) -> list[str]:
    """16-hex-digit ids that look like hashes (a multiplicative scramble of the index)."""
    return [f"{((i + offset) * 0x9E3779B97F4A7C15) % 2**64:016x}" for i in range(n)]


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def open_store(backend: str, root: Path, dim: int, **options: Any) -> Any:
    from rag.vectors import EdgeVectorStore, open_local

    if backend == "edge":
        return EdgeVectorStore(root, COLLECTION, dim, **options)
    return open_local(root, COLLECTION, dim)


def dir_mib(path: Path) -> float:
    """Disk space actually allocated (mmap files are sparse)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 2**20


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


# -- phases (each in its own process) -------------------------------------------


def phase_build(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    vectors = make_vectors(args.data, args.n, args.dim, seed=1)
    queries = make_vectors(args.data, args.queries, args.dim, seed=2)
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", exact_top(vectors, queries, 10))
    ids = chunk_ids(args.n)
    build_root = Path(tempfile.mkdtemp(dir="/dev/shm")) if args.backend == "local" else work / "store"
    out: dict[str, Any] = {"rss_after_data_mib": rss_mib()}
    t0 = time.perf_counter()
    options = (
        {"hnsw_m": args.hnsw_m, "hnsw_ef_construct": args.hnsw_ef_construct} if args.backend == "edge" else {}
    )
    store = open_store(args.backend, build_root, args.dim, **options)
    for start in range(0, args.n, 4096):
        store.upsert(ids[start : start + 4096], vectors[start : start + 4096])
    t1 = time.perf_counter()
    store.close()  # edge: builds the HNSW graph and flushes
    t2 = time.perf_counter()
    out.update(upsert_s=t1 - t0, close_s=t2 - t1, build_s=t2 - t0, peak_rss_mib=peak_rss_mib())
    if args.backend == "local":
        shutil.copytree(build_root, work / "store")
        shutil.rmtree(build_root)
    out["disk_mib"] = dir_mib(work / "store")
    return out


def phase_serve(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    all_ids = chunk_ids(args.n)
    truth_ids = [{all_ids[j] for j in row} for row in truth]
    out: dict[str, Any] = {"rss_before_open_mib": rss_mib()}

    t0 = time.perf_counter()
    store = open_store(args.backend, work / "store", args.dim)
    out["reopen_s"] = time.perf_counter() - t0
    out["rss_after_open_mib"] = rss_mib()
    t0 = time.perf_counter()
    store.search(queries[0], 10)
    out["first_query_ms"] = (time.perf_counter() - t0) * 1000

    def measure(label: str, n_queries: int) -> None:
        lat, recall = [], []
        for q, want in zip(queries[:n_queries], truth_ids[:n_queries], strict=True):
            t = time.perf_counter()
            hits = store.search(q, 10)
            lat.append((time.perf_counter() - t) * 1000)
            recall.append(len({cid for cid, _ in hits} & want) / 10)
        out[label] = {**percentiles(lat), "recall@10": float(np.mean(recall))}

    n_q = len(queries) if args.backend == "edge" else min(len(queries), args.local_queries)
    if args.backend == "edge":
        default_ef = store.hnsw_ef
        for ef in (64, 128, 256, 512):
            store.hnsw_ef = ef
            measure(f"query_ef{ef}", n_q)
        store.hnsw_ef = default_ef
    else:
        measure("query_exact", n_q)
    t0 = time.perf_counter()
    store.search_many(queries[:n_q], 10)
    out["search_many_ms_per_query"] = (time.perf_counter() - t0) * 1000 / n_q
    t0 = time.perf_counter()
    n_ids = len(store.ids())
    out["ids_s"] = time.perf_counter() - t0
    out["count"] = store.count()
    assert n_ids == out["count"] == args.n

    fresh = make_vectors(args.data, args.single_writes, args.dim, seed=3)
    fresh_ids = chunk_ids(args.single_writes, offset=args.n)
    up, de = [], []
    for cid, vec in zip(fresh_ids, fresh, strict=True):
        t = time.perf_counter()
        store.upsert([cid], vec[None, :])
        up.append((time.perf_counter() - t) * 1000)
    measure("query_after_writes", min(n_q, 50))
    for cid in fresh_ids:
        t = time.perf_counter()
        store.delete([cid])
        de.append((time.perf_counter() - t) * 1000)
    out["upsert_one_ms"] = percentiles(up)
    out["delete_one_ms"] = percentiles(de)
    t0 = time.perf_counter()
    store.close()
    out["close_after_writes_s"] = time.perf_counter() - t0

    out["peak_rss_queries_mib"] = peak_rss_mib()  # before the incremental write session below
    if args.backend == "edge" and args.increment:
        # An incremental ingest: new points on top of the indexed ones, then close (indexes them).
        more = make_vectors(args.data, args.increment, args.dim, seed=4)
        more_ids = chunk_ids(args.increment, offset=2 * args.n)
        store = open_store(args.backend, work / "store", args.dim)
        t0 = time.perf_counter()
        for start in range(0, args.increment, 1024):
            store.upsert(more_ids[start : start + 1024], more[start : start + 1024])
        t1 = time.perf_counter()
        store.close()
        out["increment"] = {"n": args.increment, "upsert_s": t1 - t0, "close_s": time.perf_counter() - t1}
    out["peak_rss_mib"] = peak_rss_mib()
    return out


# -- driver -----------------------------------------------------------------------


def run_phase(phase: str, backend: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--backend",
        backend,
        "--workdir",
        str(workdir),
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
        "--queries",
        str(args.queries),
        "--local-queries",
        str(args.local_queries),
        "--single-writes",
        str(args.single_writes),
        "--increment",
        str(args.increment),
        "--data",
        args.data,
        "--hnsw-m",
        str(args.hnsw_m),
        "--hnsw-ef-construct",
        str(args.hnsw_ef_construct),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{phase}/{backend} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _pair(d: dict[str, float]) -> str:
    return f"{fmt(d['p50'], 2)} / {fmt(d['p95'], 2)}"


Getter = Any  # Callable[[build: dict, serve: dict], str]

ROWS: list[tuple[str, Getter]] = [
    ("build: upsert all (s)", lambda b, s: fmt(b["upsert_s"])),
    ("build: close = HNSW + flush (s)", lambda b, s: fmt(b["close_s"])),
    ("build: peak RSS (MiB, data array included)", lambda b, s: fmt(b["peak_rss_mib"], 0)),
    ("disk (MiB allocated)", lambda b, s: fmt(b["disk_mib"], 0)),
    ("reopen (s, warm page cache)", lambda b, s: fmt(s["reopen_s"], 2)),
    ("RSS after reopen (MiB)", lambda b, s: fmt(s["rss_after_open_mib"], 0)),
    ("first query (ms)", lambda b, s: fmt(s["first_query_ms"])),
    *[
        row
        for key, label in [("query_exact", "exact")]
        + [(f"query_ef{ef}", f"hnsw_ef={ef}") for ef in (64, 128, 256, 512)]
        for row in [
            (f"query p50 / p95 (ms), {label}", lambda b, s, k=key: _pair(s[k])),
            (f"recall@10, {label}", lambda b, s, k=key: fmt(s[k]["recall@10"], 3)),
        ]
    ],
    ("search_many (ms per query)", lambda b, s: fmt(s["search_many_ms_per_query"], 2)),
    ("upsert one p50 / p95 (ms)", lambda b, s: _pair(s["upsert_one_ms"])),
    ("delete one p50 / p95 (ms)", lambda b, s: _pair(s["delete_one_ms"])),
    ("query p50 (ms) after the single upserts", lambda b, s: fmt(s["query_after_writes"]["p50"], 2)),
    ("close after those writes (s)", lambda b, s: fmt(s["close_after_writes_s"], 2)),
    ("ids() (s)", lambda b, s: fmt(s["ids_s"], 2)),
    (
        "increment: upsert / close = index (s)",
        lambda b, s: (
            f"{s['increment']['n']:,} points: {fmt(s['increment']['upsert_s'])} / {fmt(s['increment']['close_s'])}"
        ),
    ),
    (
        "serve: peak RSS, queries and single writes (MiB)",
        lambda b, s: fmt(s["peak_rss_queries_mib"], 0),
    ),
    ("serve: peak RSS at the end (MiB; edge: after the increment)", lambda b, s: fmt(s["peak_rss_mib"], 0)),
]


NOTES_MARKER = "<!-- written by hand below; kept when the tables are regenerated -->"


def _cell(get: Getter, res: dict[str, Any]) -> str:
    try:
        return str(get(res["build"], res["serve"]))
    except KeyError:
        return "-"


def render_markdown(results_dir: Path) -> str:
    """bench/results/vectors.md from every vectors-<data>.json in ``results_dir``."""
    lines = [
        "# Vector store benchmark",
        "",
        "Generated by `bench/bench_vectors.py` from the JSON files beside it.",
        "",
    ]
    for path in sorted(results_dir.glob("vectors-*.json")):
        run = json.loads(path.read_text(encoding="utf-8"))
        results = run["results"]
        lines += [
            f"## {run['n']:,} x {run['dim']}-d, `{run['data']}` vectors",
            "",
            f"{run['queries']} queries, k = 10; {run['single_writes']} single upserts, then deletes. "
            "The machine was shared with other jobs (load average below; 2 cores): latencies are pessimistic.",
            "",
        ]
        for backend, res in results.items():
            env = res["env"]
            lines.append(
                f"- {backend}: `{res['command']}` on {env['date']}, {env['cpus']} CPUs, "
                f"Python {env['python']}, qdrant-edge-py {env['qdrant_edge']}, "
                f"qdrant-client {env['qdrant_client']}, load average {env['load_start']:.1f} -> {env['load_end']:.1f}"
            )
        lines += [
            "",
            "| | " + " | ".join(results) + " |",
            "|---|" + "---|" * len(results),
        ]
        for label, get in ROWS:
            cells = [_cell(get, res) for res in results.values()]
            if any(c != "-" for c in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    previous = results_dir / "vectors.md"
    if previous.exists():  # keep the hand-written conclusions below the marker
        text = previous.read_text(encoding="utf-8")
        if NOTES_MARKER in text:
            lines += [text[text.index(NOTES_MARKER) :].rstrip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--local-queries", type=int, default=30, help="queries for the brute-force local mode"
    )
    parser.add_argument("--single-writes", type=int, default=50)
    parser.add_argument("--increment", type=int, default=10_000, help="edge: points added to the built store")
    parser.add_argument("--data", choices=["embedding", "isotropic"], default="embedding")
    parser.add_argument("--backends", default="edge,local")
    parser.add_argument("--hnsw-m", type=int, default=16, help="edge graph degree")
    parser.add_argument("--hnsw-ef-construct", type=int, default=100, help="edge graph build beam")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--render", action="store_true", help="only regenerate vectors.md from the JSON files"
    )
    parser.add_argument("--phase", choices=["build", "serve"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        fn = phase_build if args.phase == "build" else phase_serve
        print(json.dumps(fn(args)))
        return
    if args.render:
        (args.results / "vectors.md").write_text(render_markdown(args.results), encoding="utf-8")
        return

    from importlib.metadata import version

    env: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "qdrant_edge": version("qdrant-edge-py"),
        "qdrant_client": version("qdrant-client"),
    }
    command = " ".join(["python bench/bench_vectors.py", *sys.argv[1:]])
    out = args.results / f"vectors-{args.data}.json"
    setup = {
        "n": args.n,
        "dim": args.dim,
        "data": args.data,
        "queries": args.queries,
        "single_writes": args.single_writes,
    }
    results: dict[str, dict[str, Any]] = {}
    if out.exists():  # keep other backends' results from a run with the same setup
        previous = json.loads(out.read_text(encoding="utf-8"))
        if {key: previous.get(key) for key in setup} == setup:
            results = previous["results"]
    for backend in args.backends.split(","):
        env["load_start"] = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix=f"bench-vectors-{backend}-") as tmp:
            build = run_phase("build", backend, Path(tmp), args)
            print(backend, "build", json.dumps(build), flush=True)
            serve = run_phase("serve", backend, Path(tmp), args)
            print(backend, "serve", json.dumps(serve), flush=True)
        env["load_end"] = os.getloadavg()[0]
        results[backend] = {"command": command, "env": dict(env), "build": build, "serve": serve}
    if not args.no_write:
        args.results.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**setup, "results": results}, indent=1) + "\n", encoding="utf-8")
        (args.results / "vectors.md").write_text(render_markdown(args.results), encoding="utf-8")
        print("wrote", out, "and", args.results / "vectors.md")


if __name__ == "__main__":
    main()
