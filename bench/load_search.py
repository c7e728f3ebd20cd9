"""Load test of ``POST /v1/search`` on loopback while documents are ingested through the API.

    python bench/load_search.py                            # 10k chunks, sparse leg (RAG_EMBEDDING__MODEL=none)
    python bench/load_search.py --dense use                # hybrid with the USE dense leg
    python bench/load_search.py --chunks 2000 --duration 10 --clients 8

1. A synthetic notes corpus (``bench_answer.note``: mixed Chinese/English
   technical prose, one ~350-unit chunk per note) is indexed into a fresh data
   dir (not timed).
2. ``rag serve`` starts in its own process on 127.0.0.1.
3. ``--clients`` concurrent connections (asyncio, a minimal keep-alive
   HTTP/1.1 client, in this process) send searches
   (``bench_answer.question``, k=10, mode hybrid) back to back: first for ``--idle`` seconds with nothing else running, then for
   ``--duration`` seconds while a writer uploads batches of new notes
   (``POST /v1/documents``, ``--batch`` files each) and waits for each ingest
   job, one after the other, for the whole phase.
4. Reported per phase: searches/s, latency p50/p95/p99/max, errors (any
   non-200 or transport error), and for the ingest: documents ingested,
   publishes, and the longest time a publish held searches back.

Results: printed as JSON, and written to ``bench/results/api_load.md`` (``--out``)
with the command, the machine and its load average; ``--append`` adds a run to
the ones already there (their data is kept in a comment at the end of the file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_answer import build_index, note, question  # noqa: E402

from rag.engine import Engine  # noqa: E402
from rag.settings import Settings  # noqa: E402

DATA_MARK = "<!-- data (used by --append):"
NOTES_MARK = "<!-- notes: kept when the benchmark rewrites this file -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(int(q * (len(s) - 1) + 0.5), len(s) - 1)]


def summarize(latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {
        "searches": len(ms),
        "seconds": round(seconds, 1),
        "per_s": round(len(ms) / seconds, 1),
        "p50_ms": round(pct(ms, 0.5), 1),
        "p95_ms": round(pct(ms, 0.95), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "max_ms": round(max(ms), 1) if ms else None,
        "errors": errors,
    }


class RawClient:
    """A minimal HTTP/1.1 keep-alive client for JSON POSTs: the load generator shares the server's
    two cores, so it should spend as little CPU per request as it can (httpx spends ~1.5 ms)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            status = int((await self.reader.readline()).split()[1])
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status, await self.reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            await self.close()
            raise

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def load(url: str, queries: list[str], clients: int, seconds: float, mode: str) -> dict[str, Any]:
    """``clients`` connections sending back-to-back searches for ``seconds``."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def one(worker: int) -> None:
        rng = random.Random(worker)
        client = RawClient(host, int(port))
        checked = 0
        try:
            while time.perf_counter() < deadline:
                body = json.dumps({"query": rng.choice(queries), "k": 10, "mode": mode}).encode()
                t0 = time.perf_counter()
                try:
                    status, reply = await client.post("/v1/search", body)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if status != 200:
                    errors.append(f"HTTP {status}: {reply[:200]!r}")
                    continue
                if checked % 50 == 0 and not isinstance(json.loads(reply).get("hits"), list):
                    errors.append("a reply without hits")
                    continue
                checked += 1
                latencies.append(time.perf_counter() - t0)
        finally:
            await client.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    out = summarize(latencies, len(errors), time.perf_counter() - t_start)
    out["error_samples"] = sorted(set(errors))[:5]
    return out


class Writer(threading.Thread):
    """Uploads batches of new notes one job after another until told to stop."""

    def __init__(self, url: str, folder: Path, first: int, batch: int, seed: int) -> None:
        super().__init__(name="ingest-writer", daemon=True)
        self.url, self.folder, self.next, self.batch = url, folder, first, batch
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.jobs: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while not self.stop_event.is_set():
                files = []
                for _ in range(self.batch):
                    name = f"upload-{self.next:06d}.md"
                    files.append(
                        ("files", (name, note(self.rng, self.next).encode("utf-8"), "text/markdown"))
                    )
                    self.next += 1
                res = http.post("/v1/documents", files=files)
                if res.status_code != 202:
                    self.errors.append(f"upload HTTP {res.status_code}: {res.text[:200]}")
                    time.sleep(0.5)
                    continue
                job_id = res.json()["job"]["id"]
                while True:
                    job = http.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] in ("done", "failed"):
                        break
                    time.sleep(0.1)
                self.jobs.append(job)


def ingest_summary(jobs: list[dict[str, Any]], errors: list[str]) -> dict[str, Any]:
    done = [j for j in jobs if j["status"] == "done"]
    busy = sum((j["finished_at"] - j["started_at"]) for j in done)
    added = sum(j["result"]["added"] for j in done)
    return {
        "jobs": len(jobs),
        "failed_jobs": len(jobs) - len(done),
        "documents": added,
        "docs_per_s": round(added / busy, 1) if busy else None,
        "publishes": sum(j["result"]["publishes"] for j in done),
        "max_locked_ms": max((j["result"]["max_locked_ms"] for j in done), default=None),
        "errors": errors[:5],
    }


def start_server(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cli.main", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("rag serve exited: " + (proc.stderr.read().decode() if proc.stderr else ""))
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("rag serve did not become healthy")


def render(r: dict[str, Any]) -> str:
    lines = [
        "# HTTP search under load, during an ingest",
        "",
        "`POST /v1/search` (k=10, mode hybrid) from concurrent clients on loopback, against `rag serve`",
        "(one process, one engine), first idle, then while notes are uploaded through `POST /v1/documents`",
        "and ingested in the background. Produced by `bench/load_search.py`.",
        "",
        f"Machine: {r['machine']}. Its 2 cores are shared with other work (the load average before each",
        "run is in the table) and the clients run on the same cores as the server.",
        "",
        "| legs | chunks | phase | clients | searches/s | p50 ms | p95 ms | p99 ms | max ms | errors | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for phase in ("idle", "ingest"):
            p = run[phase]
            lines.append(
                f"| {run['legs']} | {run['chunks']} | {phase} | {run['clients']} | {p['per_s']} | {p['p50_ms']} "
                f"| {p['p95_ms']} | {p['p99_ms']} | {p['max_ms']} | {p['errors']} | {run['load_avg_start']} |"
            )
    lines += ["", "Ingest during the load phase:", ""]
    lines += ["| legs | jobs | documents | docs/s | publishes | longest hold of searches (ms) | failed |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        i = run["ingest_jobs"]
        lines.append(
            f"| {run['legs']} | {i['jobs']} | {i['documents']} | {i['docs_per_s']} | {i['publishes']} "
            f"| {i['max_locked_ms']} | {i['failed_jobs']} |"
        )
    lines += ["", "Commands:", ""]
    lines += [f"    {c}" for c in r["commands"]]
    lines.append("")
    return "\n".join(lines)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    texts = [note(rng, i) for i in range(args.chunks)]
    queries = [question(rng, rng.choice(texts)) for _ in range(500)]
    with tempfile.TemporaryDirectory(prefix="bench-api-load-") as tmp:
        data_dir = Path(tmp) / "data"
        overrides: dict[str, Any] = {"embedding": {"model": args.dense}, "graph": {"enabled": args.graph}}
        t0 = time.perf_counter()
        if args.index_dir is not None and (args.index_dir / "chunks.sqlite3").exists():
            shutil.copytree(args.index_dir, data_dir)  # the run adds documents: work on a copy
            engine = Engine.open(Settings(data_dir=data_dir, **overrides))
        else:
            engine, _ = build_index(Settings(data_dir=args.index_dir or data_dir, **overrides), texts)
            if args.index_dir is not None:
                engine.close()
                shutil.copytree(args.index_dir, data_dir)
                engine = Engine.open(Settings(data_dir=data_dir, **overrides))
        legs = engine.available_legs()
        chunks = engine.store.count_chunks()
        engine.close()
        build_s = time.perf_counter() - t0
        print(f"index of {chunks} chunks ({'+'.join(legs)}) ready in {build_s:.0f} s", file=sys.stderr)

        port = free_port()
        env = {
            **os.environ,
            "RAG_EMBEDDING__MODEL": args.dense,
            "RAG_GRAPH__ENABLED": "true" if args.graph else "false",
            "RAG_LLM__BACKEND": "none",
            "RAG_API__PUBLISH_INTERVAL_S": str(args.publish_interval),
        }
        server = start_server(data_dir, port, env)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(load(url, queries, args.clients, 2.0, args.mode))  # warm-up
            idle = asyncio.run(load(url, queries, args.clients, args.idle, args.mode))
            print(f"idle: {json.dumps(idle)}", file=sys.stderr)
            writer = Writer(url, Path(tmp), args.chunks, args.batch, args.seed + 1)
            writer.start()
            busy = asyncio.run(load(url, queries, args.clients, args.duration, args.mode))
            writer.stop_event.set()
            writer.join(300)
            print(f"ingest: {json.dumps(busy)}", file=sys.stderr)
            health = httpx.get(f"{url}/health", timeout=10).json()
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(30)
            if server.poll() is None:
                server.kill()
    return {
        "legs": "+".join(legs),
        "clients": args.clients,
        "chunks": chunks,
        "index_s": round(build_s, 1),
        "idle": idle,
        "ingest": busy,
        "ingest_jobs": ingest_summary(writer.jobs, writer.errors),
        "chunks_after": health["index"]["chunks"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--dense", default="none", help="embedding model of the dense leg ('none' = sparse only)")
    ap.add_argument("--graph", action="store_true", help="also build and serve the entity graph leg")
    ap.add_argument("--mode", default="hybrid", choices=["hybrid", "sparse", "dense", "graph"])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of load with nothing else running")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load while ingesting")
    ap.add_argument("--batch", type=int, default=50, help="files per upload")
    ap.add_argument("--publish-interval", type=float, default=2.0, help="RAG_API__PUBLISH_INTERVAL_S")
    ap.add_argument(
        "--index-dir", type=Path, help="build the corpus index here once and reuse it (copied per run)"
    )
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api_load.md")
    ap.add_argument("--append", action="store_true", help="add this run to the runs already in --out's JSON")
    args = ap.parse_args()

    command = " ".join(["python bench/load_search.py", shlex.join(sys.argv[1:])]).strip()
    load_avg = round(os.getloadavg()[0], 2)
    run = run_one(args)
    run["load_avg_start"] = load_avg
    previous: dict[str, Any] = {}
    if args.append and args.out.exists():
        text = args.out.read_text()
        if DATA_MARK in text:
            previous = json.loads(text.split(DATA_MARK, 1)[1].rsplit("-->", 1)[0])
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "runs": [*previous.get("runs", []), run],
        "commands": [*previous.get("commands", []), command],
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    notes = f"{NOTES_MARK}\n"
    if args.out.exists() and NOTES_MARK in (old := args.out.read_text()):
        notes = NOTES_MARK + old.split(NOTES_MARK, 1)[1].split(DATA_MARK, 1)[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(result, ensure_ascii=False)
    args.out.write_text(f"{render(result)}\n{notes.rstrip()}\n\n{DATA_MARK}\n{data}\n-->\n")


if __name__ == "__main__":
    main()
