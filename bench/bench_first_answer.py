"""First search hit during `rag ingest`, against the full ingest's wall time, this tree vs a previous one.

For each folder the script starts `rag ingest DIR --json` (default settings: BMX, e5-small
dense leg, entity graph) in a fresh data dir and, from a second process, runs
`rag search QUERY --mode sparse --json` again and again until it returns a hit. The first
hit's time (from the ingest's start, including the search process's own start-up) is
compared with the ingest's wall time (process start to exit). The same is done with the
code of a previous commit (``--prev``; both trees unpacked with `git archive`), same Python, same
folders, one after the other on the same machine. Searches use the sparse mode so that
the polling process never opens (and locks) the dense leg's vector store, which the
ingest needs; a hybrid search at that moment skips the locked dense leg anyway.

Folders: the README's ``samples/notes`` and a generated folder shaped like a real one
(five Chinese ML-infra notes, one large, about 290 KB in all; ``bench/note_text.py``).

    .venv/bin/python bench/bench_first_answer.py --prev 75f0a73 --out bench/results/first_answer.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.note_text import note_paragraphs  # noqa: E402

PHASES = ["start", "scan", "read", "chunk", "store", "bmx", "graph", "embed", "vectors"]


def make_real_like(root: Path) -> Path:
    """Five notes, ~290 KB: one large (~250 KB) and four small, paragraphs of note_text."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = [250_000, 12_000, 10_000, 9_000, 9_000]
    seed = 0
    for i, size in enumerate(sizes):
        parts: list[str] = [f"# 笔记 {i}\n"]
        total = 0
        while total < size:
            for p in note_paragraphs(20, seed=seed):
                parts.append(p)
                total += len(p.encode())
            seed += 1
        (root / f"note_{i}.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return root


def unpack(ref: str, into: Path) -> Path:
    data = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_one(tree: Path, folder: Path, data: Path, query: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("RAG_EMBEDDING__MODEL", None)
    ingest_cmd = [sys.executable, "-m", "cli.main", "ingest", str(folder), "--data-dir", str(data), "--json"]
    search_cmd = [sys.executable, "-m", "cli.main", "search", query, "--mode", "sparse"]
    search_cmd += ["--data-dir", str(data), "--json", "-k", "3"]
    t0 = time.perf_counter()
    ingest = subprocess.Popen(ingest_cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first_hit: float | None = None
    searches = 0
    while ingest.poll() is None and first_hit is None:
        proc = subprocess.run(search_cmd, cwd=tree, env=env, capture_output=True, timeout=300)
        searches += 1
        if proc.returncode == 0:
            try:
                hits = json.loads(proc.stdout)["hits"]
            except (ValueError, KeyError):
                hits = []
            if hits:
                first_hit = time.perf_counter() - t0
                break
        time.sleep(0.2)
    out, err = ingest.communicate()
    wall = time.perf_counter() - t0
    if ingest.returncode != 0:
        raise SystemExit(f"ingest failed in {tree}: {err.decode()[-2000:]}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    return {"wall_s": wall, "first_hit_s": first_hit, "searches": searches, "report": report}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prev", default="75f0a73", help="git ref of the previous code")
    ap.add_argument("--this", default="HEAD", help="git ref of the code measured against it")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/first_answer.md")
    args = ap.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prev = unpack(args.prev, tmp / "prev")
        this = unpack(args.this, tmp / "this")
        folders = {
            "samples/notes": (REPO / "samples/notes", "ollama 默认端口"),
            "5 notes, 290 KB": (make_real_like(tmp / "real_like"), "docker GPU 启动"),
        }
        size = sum(f.stat().st_size for f in folders["5 notes, 290 KB"][0].iterdir())
        for name, (folder, query) in folders.items():
            for label, tree in (("previous", prev), ("this", this)):
                r = run_one(tree, folder, tmp / f"data-{label}-{len(results)}", query)
                results[f"{name} | {label}"] = r
                print(name, label, json.dumps({k: v for k, v in r.items() if k != "report"}), flush=True)
                print("   ", json.dumps(r["report"].get("phases"), ensure_ascii=False), flush=True)
    load = os.getloadavg()
    lines = [
        "# First search hit during `rag ingest` vs the ingest's wall time",
        "",
        f"`.venv/bin/python bench/bench_first_answer.py --prev {args.prev} --this {args.this}`; {os.cpu_count()} CPU cores "
        f"(shared; load average {load[0]:.1f} at the end), one run each, previous code first. Default "
        "settings (BMX, e5-small dense leg, entity graph). Wall = process start to exit of `rag ingest`; "
        "first hit = from the ingest's start until a `rag search --mode sparse` started from another "
        "process returned a hit (each search pays its own process start-up, ~1 s).",
        f"The generated folder holds {size / 1000:.0f} KB.",
        "",
        "| folder | code | chunks | wall s | `took_s` printed | first hit s | first hit / wall |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, r in results.items():
        rep = r["report"]
        hit = r["first_hit_s"]
        lines.append(
            f"| {key} | {rep['chunks']} | {r['wall_s']:.1f} | {rep['took_s']:.2f} | "
            + (
                f"{hit:.1f} | {hit / r['wall_s']:.0%} |"
                if hit is not None
                else "none during the ingest | - |"
            )
        )
    lines += ["", "Phases of this code's runs (`rag ingest --json` `phases`, seconds):", ""]
    lines += [
        "| folder | " + " | ".join(PHASES) + " | sum | `took_s` |",
        "|---|" + "---:|" * (len(PHASES) + 2),
    ]
    for key, r in results.items():
        phases = r["report"].get("phases")
        if not phases or not key.endswith("this"):
            continue
        cells = [f"{phases.get(p, 0.0):.2f}" for p in PHASES]
        lines.append(
            f"| {key.split(' | ')[0]} | "
            + " | ".join(cells)
            + f" | {sum(phases.values()):.2f} | {r['report']['took_s']:.2f} |"
        )
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
