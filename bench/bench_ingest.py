"""Ingest throughput: extraction + chunking (+ store writes) on generated corpora.

    python bench/bench_ingest.py [--pages 200] [--files 5000] [--out bench/results/ingest.md]

Phases, each in a fresh process so peak RSS is its own:
  pdf      extract + chunk a generated mixed zh/en PDF (pages/s)
  folder   full `sync_paths` of a generated folder of markdown files (files/s, MB/s), into a new store
  resync   re-run on the unchanged folder (the cost of a no-op sync)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPICS = [
    ("Docker", "用 `docker run --gpus all -p 11434:11434 ollama/ollama` 启动容器，模型放在命名卷里。"),
    ("Ollama", "`ollama ps` 显示模型是否在 GPU 上运行；num_ctx 太小会静默截断 prompt。"),
    ("Qdrant", "向量存在 Qdrant 的 collection 里，HNSW 索引让 100k 向量的查询只要几毫秒。"),
    ("Python", "先 `python3 -m venv .venv`，再安装 CPU 版 torch，避免下载几个 GB 的 CUDA 包。"),
    ("Git", "`git commit --amend` 修改上一次提交；大文件用 git lfs，不要直接提交 .gguf。"),
]
ENGLISH = [
    "The embedding cache is keyed by the content hash of each chunk.",
    "Hybrid retrieval fuses BMX lexical scores with dense cosine similarity.",
    "Set OLLAMA_KEEP_ALIVE=-1 to keep the model resident in GPU memory.",
    "A cold start loads the weights from disk, which takes several seconds.",
]


def make_markdown(rng: random.Random, i: int) -> str:
    title, line = TOPICS[i % len(TOPICS)]
    parts = [f"# {title} 笔记 {i}\n"]
    for s in range(rng.randint(2, 6)):
        parts.append(f"## {s + 1}. 小节 {rng.randint(1, 99)}\n")
        for _ in range(rng.randint(1, 4)):
            sentences = [rng.choice([line, *ENGLISH]) for _ in range(rng.randint(2, 8))]
            parts.append(" ".join(sentences) + "\n")
        if rng.random() < 0.4:
            parts.append("```bash\ndocker exec -it ollama ollama pull qwen2.5:7b-instruct\nollama ps\n```\n")
    return "\n".join(parts)


def make_folder(root: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    total = 0
    for i in range(n):
        sub = root / f"topic{i % 20:02d}" / f"y{2019 + i % 6}"
        sub.mkdir(parents=True, exist_ok=True)
        data = make_markdown(rng, i).encode("utf-8")
        (sub / f"note_{i:05d}.md").write_bytes(data)
        total += len(data)
    return total


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_pdf(pages: int, q: mp.Queue) -> None:
    from ingest.pipeline import chunk_document, extract
    from rag.settings import Settings
    from tests.factories_pdf import make_mixed_pdf

    settings = Settings(data_dir=Path(tempfile.mkdtemp()))
    data = make_mixed_pdf(pages, seed=1)
    t0 = time.perf_counter()
    doc = extract(data, "pdf", settings.ingest, name="bench.pdf")
    t1 = time.perf_counter()
    chunks = chunk_document(doc, doc_id="x", source="bench.pdf", chunking=settings.chunking)
    t2 = time.perf_counter()
    q.put(
        {
            "pages": pages,
            "extract_s": t1 - t0,
            "chunk_s": t2 - t1,
            "pages_per_s": pages / (t2 - t0),
            "chunks": len(chunks),
            "peak_rss_mib": _peak_mib(),
        }
    )


def phase_folder(folder: str, data_dir: str, q: mp.Queue) -> None:
    from ingest.pipeline import sync_paths
    from rag.settings import Settings
    from rag.store import ChunkStore

    settings = Settings(data_dir=Path(data_dir))
    t0 = time.perf_counter()
    with ChunkStore(settings.data_dir) as store:
        report = sync_paths([Path(folder)], settings, store)
    q.put({"took_s": time.perf_counter() - t0, "report": report.as_dict(), "peak_rss_mib": _peak_mib()})


def run_phase(target, *args) -> dict:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.md")
    args = ap.parse_args()

    pdf = run_phase(phase_pdf, args.pages)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "notes"
        nbytes = make_folder(folder, args.files)
        full = run_phase(phase_folder, str(folder), str(Path(tmp) / "data"))
        resync = run_phase(phase_folder, str(folder), str(Path(tmp) / "data"))

    mb = nbytes / 2**20
    rows = [
        (
            "PDF extract+chunk",
            f"{args.pages} pages",
            f"{pdf['pages_per_s']:.0f} pages/s",
            f"{pdf['peak_rss_mib']:.0f}",
        ),
        (
            "folder ingest (new store)",
            f"{args.files} md files, {mb:.1f} MB, {full['report']['chunks']} chunks",
            f"{args.files / full['took_s']:.0f} files/s, {mb / full['took_s']:.2f} MB/s",
            f"{full['peak_rss_mib']:.0f}",
        ),
        (
            "re-sync, nothing changed",
            f"{args.files} md files",
            f"{resync['took_s']:.2f} s ({args.files / resync['took_s']:.0f} files/s)",
            f"{resync['peak_rss_mib']:.0f}",
        ),
    ]
    table = "| phase | input | throughput | peak RSS MiB |\n|---|---|---|---|\n"
    table += "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    print(table)
    print(json.dumps({"pdf": pdf, "folder_s": full["took_s"], "resync_s": resync["took_s"]}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Ingest throughput\n\n`python bench/bench_ingest.py --pages "
        f"{args.pages} --files {args.files}` (2-core machine)\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
