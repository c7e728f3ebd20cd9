"""Live folder sync: how long from a save to searchable, under a real `rag serve --watch`.

For each kind of change (new file, edit, an editor's atomic save, rename, move to
another folder, delete) the script saves, then polls ``POST /v1/search`` every
10 ms until the change shows (or is gone), ``--rounds`` times; then it writes a
burst of ``--burst`` files and times until every one is indexed. Results go to
``bench/results/watch.md`` (and ``watch-MODEL.json``).

    python bench/bench_watch.py                       # sparse + graph legs (model none)
    python bench/bench_watch.py --model e5-small      # with the dense leg (slow on CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serve_process import rag_env, start_server  # noqa: E402

POLL_S = 0.01


def word(n: int) -> str:
    return "wq" + "".join(chr(ord("a") + int(d)) for d in f"{n:05d}")


def timed(check: Callable[[], bool], timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("change not visible within the timeout")
        time.sleep(POLL_S)
    return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="none")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--debounce-ms", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "watch.md")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder, data = Path(tmp) / "notes", Path(tmp) / "data"
        (folder / "sub").mkdir(parents=True)
        (folder / "seed.md").write_text("# seed\n\nseed note\n", encoding="utf-8")
        env = rag_env(
            data,
            RAG_EMBEDDING__MODEL=args.model,
            RAG_INGEST__WATCH_DEBOUNCE_MS=str(args.debounce_ms),
            RAG_API__PUBLISH_INTERVAL_S="1.0",
            RAG_MODEL_DIR=os.environ.get("RAG_MODEL_DIR", str(Path(tmp) / "models")),
        )
        server = start_server(data, "--watch", str(folder), env=env, timeout=600)
        http = httpx.Client(base_url=server.url, timeout=60, trust_env=False)

        def sources(query: str) -> set[str]:
            """Sources of the hits that matched the query's word (a dense leg also returns the rest)."""
            hits = http.post("/v1/search", json={"query": query, "k": 20}).json()["hits"]
            return {h["source"] for h in hits if h["scores"]["sparse"] is not None}

        try:
            timed(lambda: "seed.md" in sources("seed"), timeout=600)
            kinds: dict[str, list[float]] = {
                k: [] for k in ("new", "edit", "atomic", "rename", "move", "delete")
            }
            n = 0
            for r in range(args.rounds):
                a, b = folder / f"r{r}.md", folder / f"r{r}-renamed.md"
                n += 1
                w = word(n)
                a.write_text(f"# r{r}\n\n{w}\n", encoding="utf-8")
                kinds["new"].append(timed(lambda w=w, r=r: sources(w) == {f"r{r}.md"}))
                n += 1
                w = word(n)
                a.write_text(f"# r{r}\n\n{w} edited\n", encoding="utf-8")
                kinds["edit"].append(timed(lambda w=w, r=r: sources(w) == {f"r{r}.md"}))
                n += 1
                w = word(n)
                tmpf = folder / f".r{r}.md.swp"
                tmpf.write_text(f"# r{r}\n\n{w} saved\n", encoding="utf-8")
                os.replace(tmpf, a)
                kinds["atomic"].append(timed(lambda w=w, r=r: sources(w) == {f"r{r}.md"}))
                a.rename(b)
                kinds["rename"].append(timed(lambda w=w, r=r: sources(w) == {f"r{r}-renamed.md"}))
                moved = folder / "sub" / b.name
                b.rename(moved)
                kinds["move"].append(timed(lambda w=w, r=r: sources(w) == {f"sub/r{r}-renamed.md"}))
                moved.unlink()
                kinds["delete"].append(timed(lambda w=w: sources(w) == set()))
            t0 = time.perf_counter()
            for i in range(args.burst):
                (folder / "burst").mkdir(exist_ok=True)
                (folder / "burst" / f"b{i:05d}.md").write_text(
                    f"# b{i}\n\nburst {word(90000 + i)}\n", encoding="utf-8"
                )
            written = time.perf_counter() - t0

            def all_indexed() -> bool:
                rows = http.get("/v1/documents", params={"limit": 10000}).json()["documents"]
                burst = [d for d in rows if d["source"].startswith("burst/")]
                return len(burst) == args.burst and all(d["status"] == "indexed" for d in burst)

            burst_s = written + timed(all_indexed, timeout=1800)
            last = word(90000 + args.burst - 1)
            assert sources(last) == {f"burst/b{args.burst - 1:05d}.md"}
        finally:
            code, _ = server.stop()
            http.close()

    result: dict[str, Any] = {
        "model": args.model,
        "rounds": args.rounds,
        "debounce_ms": args.debounce_ms,
        "kinds": {
            k: {
                "p50_s": round(statistics.median(v), 3),
                "p95_s": round(pct(v, 95), 3),
                "max_s": round(max(v), 3),
            }
            for k, v in kinds.items()
        },
        "burst": {"files": args.burst, "write_s": round(written, 2), "all_searchable_s": round(burst_s, 2)},
        "server_exit_code": code,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
    }
    args.out.with_name(f"{args.out.stem}-{args.model}.json").write_text(
        json.dumps(result, indent=2) + "\n", encoding="utf-8"
    )
    lines = [
        "# Live folder sync: save to searchable",
        "",
        f"`python bench/bench_watch.py --model {args.model}` — a real `rag serve --watch` process, "
        f"batches end 50 ms after the last event (at most {args.debounce_ms} ms), search polled every 10 ms over HTTP, {args.rounds} rounds per kind; "
        f"{result['machine']}.",
        "",
        "| change | p50 s | p95 s | max s |",
        "|---|---|---|---|",
    ]
    for k, v in result["kinds"].items():
        lines.append(f"| {k} | {v['p50_s']} | {v['p95_s']} | {v['max_s']} |")
    lines += [
        "",
        f"Burst: {args.burst} files written in {result['burst']['write_s']} s; all searchable "
        f"{result['burst']['all_searchable_s']} s after the first write.",
        "",
    ]
    text = "\n".join(lines)
    if args.out.exists() and args.model != "none":
        text = args.out.read_text(encoding="utf-8").rstrip() + "\n\n" + "\n".join(lines[2:])
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
