"""First search hit during `rag ingest`, against the full ingest's wall time, this tree vs a previous one.

For each folder the script starts `rag ingest DIR --json` (default settings: BMX, e5-small
dense leg, entity graph) in a fresh data dir while a second process (already started, as
the web page or `rag chat` would be) opens the index read-only and searches every 0.2 s
until it gets a hit. The first hit's time from the ingest's start is compared with the
ingest's wall time (process start to exit). A `rag search` process after the ingest
shows what one more process start costs on the machine. The same is done with the
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


POLLER = """
import sys, time
from pathlib import Path
from rag.engine import Engine
from rag.errors import RagError
from rag.settings import Settings

data, query = Path(sys.argv[1]), sys.argv[2]
print("ready", time.time(), flush=True)
while True:
    try:
        with Engine.open(Settings(data_dir=data)) as engine:
            hits = engine.search(query, k=3, mode="sparse")
        if hits:
            print("hit", time.time(), hits[0].chunk.source, flush=True)
            break
    except RagError:
        pass
    time.sleep(0.2)
"""


def run_one(
    tree: Path, folder: Path, data: Path, query: str, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("RAG_EMBEDDING__MODEL", None)
    env.pop("RAG_EMBEDDING__RUNTIME", None)
    env.update(extra_env or {})
    ingest_cmd = [sys.executable, "-m", "cli.main", "ingest", str(folder), "--data-dir", str(data), "--json"]
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER, str(data), query], cwd=tree, env=env, stdout=subprocess.PIPE, text=True
    )
    assert poller.stdout is not None
    poller.stdout.readline()  # imported: polls from now on
    load_before = os.getloadavg()[0]
    t0 = time.time()
    ingest = subprocess.Popen(ingest_cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = poller.stdout.readline().split()
    first_hit = float(line[1]) - t0 if line and line[0] == "hit" else None
    out, err = ingest.communicate()
    wall = time.time() - t0
    poller.kill()
    poller.wait()
    if ingest.returncode != 0:
        raise SystemExit(f"ingest failed in {tree}: {err.decode()[-2000:]}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    # a `rag search` process right after the ingest: what one search costs on this machine
    search_cmd = [sys.executable, "-m", "cli.main", "search", query, "--mode", "sparse"]
    t = time.time()
    subprocess.run([*search_cmd, "--data-dir", str(data), "--json"], cwd=tree, env=env, capture_output=True)
    return {
        "wall_s": wall,
        "first_hit_s": first_hit,
        "cli_search_s": time.time() - t,
        "load": [load_before, os.getloadavg()[0]],
        "report": report,
    }


def partial_dense(out: Path, sets: list[str]) -> None:
    """nDCG@10 of hybrid search while the dense leg covers part of the chunks, from the cached leg runs
    of ``bench/bench_fusion.py`` (e5-small): a random share of the chunks has a vector, the dense
    list keeps only those; "plain" fuses that list as it is, "filled" through
    :func:`rag.retrieval.legs.fill_uncovered` (what hybrid search does), beside BMX alone."""
    import random

    from bench.bench_fusion import leg_runs, score
    from eval.metrics import evaluate_run
    from rag.retrieval.fusion import fuse, ranked
    from rag.retrieval.legs import fill_uncovered
    from rag.settings import Settings

    r = Settings().retrieval
    methods = [r.fusion, "weighted", "rrf"] if r.fusion not in ("weighted", "rrf") else ["weighted", "rrf"]
    lines = [
        "",
        "## Hybrid search while the dense leg is partial",
        "",
        f"`.venv/bin/python bench/bench_first_answer.py --partial {','.join(sets)}`: nDCG@10 on the cached "
        "e5-small leg runs of `bench/bench_fusion.py`; at coverage c a random c of the chunks (seed 0) has "
        "a vector and the dense candidate list keeps only those. plain = fuse that list as is; filled = "
        "chunks without a vector borrow the dense score at their sparse rank (`fill_uncovered`, what "
        f"`rag search` does). Weights: sparse {r.weight_sparse:g}, dense {r.weight_dense:g} (configured "
        "for e5-small).",
        "",
        "| set | fusion | BMX alone | " + " | ".join(f"c={c:g} plain / filled" for c in COVERAGES) + " |",
        "|---|---|---:|" + "---:|" * len(COVERAGES),
    ]
    for name in sets:
        runs = leg_runs(name, "e5-small", graph=False)
        to_doc, qrels = runs["to_doc"], runs["qrels"]
        chunks = sorted(to_doc)
        sparse_run = {q: score(ranked(dict(rec["sparse"])), to_doc) for q, rec in runs["queries"].items()}
        base = evaluate_run(sparse_run, qrels)["ndcg@10"]
        for method in methods:
            cells = []
            for c in COVERAGES:
                embedded = set(random.Random(0).sample(chunks, round(c * len(chunks))))
                plain: dict[str, list[str]] = {}
                filled: dict[str, list[str]] = {}
                for q, rec in runs["queries"].items():
                    legs = {
                        "sparse": dict(rec["sparse"]),
                        "dense": {cid: s for cid, s in rec["dense"] if cid in embedded},
                    }
                    weights = {"sparse": r.weight_sparse, "dense": r.weight_dense}
                    kw = {"method": method, "weights": weights, "rrf_k": r.rrf_k}
                    plain[q] = score(fuse(legs, **kw), to_doc)  # type: ignore[arg-type]
                    fill = fill_uncovered(legs, embedded)
                    one = len(fill) == 1
                    filled[q] = score(ranked(fill["sparse"]) if one else fuse(fill, **kw), to_doc)  # type: ignore[arg-type]
                a, b = evaluate_run(plain, qrels)["ndcg@10"], evaluate_run(filled, qrels)["ndcg@10"]
                cells.append(f"{a:.3f} / {b:.3f}")
            lines.append(f"| {name} | {method} | {base:.3f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    with out.open("a", encoding="utf-8") as f:
        f.write(text)


COVERAGES = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help='runs to make, e.g. "5 notes, 290 KB | this" (separated by ;)')
    ap.add_argument("--partial", help="only the partial-dense fusion measure, on these cached sets")
    ap.add_argument("--prev", default="75f0a73", help="git ref of the previous code")
    ap.add_argument("--this", default="HEAD", help="git ref of the code measured against it")
    ap.add_argument(
        "--also-runtime", help="also run this code with these e5-small runtimes (e.g. onnx), after the others"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/first_answer.md")
    args = ap.parse_args()
    if args.partial:
        partial_dense(args.out, args.partial.split(","))
        return
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
            runs: list[tuple[str, Path, dict[str, str]]] = [("previous", prev, {}), ("this", this, {})]
            for runtime in filter(None, (args.also_runtime or "").split(",")):
                runs.append((f"this, runtime {runtime}", this, {"RAG_EMBEDDING__RUNTIME": runtime}))
            for label, tree, extra in runs:
                if args.only and f"{name} | {label}" not in args.only.split(";"):
                    continue
                r = run_one(tree, folder, tmp / f"data-{label}-{len(results)}", query, extra)
                results[f"{name} | {label}"] = r
                print(name, label, json.dumps({k: v for k, v in r.items() if k != "report"}), flush=True)
                print("   took_s", r["report"]["took_s"], flush=True)
                print("   ", json.dumps(r["report"].get("phases"), ensure_ascii=False), flush=True)
    load = os.getloadavg()
    lines = [
        "# First search hit during `rag ingest` vs the ingest's wall time",
        "",
        f"`.venv/bin/python bench/bench_first_answer.py --prev {args.prev} --this {args.this}`; {os.cpu_count()} CPU cores "
        f"(shared; load average {load[0]:.1f} at the end), one run each, previous code first. Default "
        "settings (BMX, e5-small dense leg, entity graph). Wall = process start to exit of `rag ingest`; "
        "first hit = from the ingest's start until another process, searching (sparse) every 0.2 s, got "
        "a hit; `rag search` s = one `rag search` process run after the ingest (process start-up included).",
        f"The generated folder holds {size / 1000:.0f} KB.",
        "",
        "| folder | code | chunks | wall s | `took_s` printed | first hit s | first hit / wall | `rag search` s "
        "| load before / after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
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
            + f" {r['cli_search_s']:.1f} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
        )
    lines += ["", "| folder | code | wall / previous wall |", "|---|---|---:|"]
    for key, r in results.items():
        name, label = key.split(" | ")
        prev_r = results.get(f"{name} | previous")
        if prev_r and label != "previous":
            lines.append(f"| {name} | {label} | {r['wall_s'] / prev_r['wall_s']:.2f} |")
    lines += ["", "Phases of this code's runs (`rag ingest --json` `phases`, seconds):", ""]
    lines += [
        "| run | " + " | ".join(PHASES) + " | sum | `took_s` |",
        "|---|" + "---:|" * (len(PHASES) + 2),
    ]
    for key, r in results.items():
        phases = r["report"].get("phases")
        if not phases or "previous" in key:
            continue
        cells = [f"{phases.get(p, 0.0):.2f}" for p in PHASES]
        lines.append(
            f"| {key.replace(' | ', ', ')} | "
            + " | ".join(cells)
            + f" | {sum(phases.values()):.2f} | {r['report']['took_s']:.2f} |"
        )
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
