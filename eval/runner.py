"""Retrieval benchmark on a BEIR-layout collection.

The corpus is indexed through the same chunking and retrieval code as a
user's folder: one document per corpus entry (title, blank line, text). When
chunking splits an entry, the entry's score is its best chunk's. Each mode is
timed per query (p50/p95) and scored with the metrics in :mod:`eval.metrics`.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.beir import BeirDataset
from eval.metrics import evaluate_run
from ingest.pipeline import chunk_document
from rag.engine import Engine
from rag.models import ExtractedDocument
from rag.retrieval.search import Mode
from rag.settings import Settings
from rag.store import DocumentRecord

ProgressFn = Callable[[int, int, str], None]
DEPTH = 100  # chunks retrieved per query


def corpus_text(entry: dict[str, str]) -> str:
    title, text = entry.get("title", "").strip(), entry.get("text", "")
    if title and not text.lstrip().startswith(title):
        return f"{title}\n\n{text}"
    return text


def index_dataset(ds: BeirDataset, settings: Settings, *, progress: ProgressFn | None = None) -> Engine:
    """Write the corpus into a fresh chunk store under ``settings.data_dir`` and build the indexes."""
    engine = Engine.open(settings, create=True)
    store = engine.store
    if store.count_documents() == 0:
        with store.transaction() as tx:
            for i, (cid, entry) in enumerate(ds.corpus.items()):
                text = corpus_text(entry)
                doc_id = hashlib.blake2b(cid.encode(), digest_size=8).hexdigest()
                doc = ExtractedDocument(text=text, format="text")
                chunks = chunk_document(doc, doc_id=doc_id, source=cid, chunking=settings.chunking)
                record = DocumentRecord(
                    doc_id=doc_id,
                    path=f"beir://{ds.name}/{cid}",
                    root=f"beir://{ds.name}",
                    source=cid,
                    format="text",
                    size=len(text),
                    mtime_ns=0,
                    content_hash=hashlib.sha256(text.encode()).hexdigest(),
                    pipeline="eval",
                    n_pages=None,
                    n_chunks=len(chunks),
                )
                tx.put_document(record, text, chunks)
                if progress and i % 200 == 0:
                    progress(i, len(ds.corpus), "corpus")
    engine.sync(progress=progress)
    return engine


@dataclass
class ModeResult:
    metrics: dict[str, float]
    latencies_ms: list[float] = field(default_factory=list)
    run: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies_ms)
        out = dict(self.metrics)
        out["latency_ms_p50"] = round(_percentile(lat, 50), 2)
        out["latency_ms_p95"] = round(_percentile(lat, 95), 2)
        return out


def _percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1])


def run_mode(engine: Engine, ds: BeirDataset, mode: Mode, *, ks: Sequence[int] = (10, 100)) -> ModeResult:
    """Search every judged query in one mode; return metrics, latencies and the run."""
    retriever = engine.retriever(mode)
    depth = max(DEPTH, *ks)
    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    for qid, text in ds.queries.items():
        if qid not in ds.qrels:
            continue
        t0 = time.perf_counter()
        hits = retriever.search(text, depth, mode)
        latencies.append((time.perf_counter() - t0) * 1000)
        # hits come best first, so a corpus entry's first chunk is its best one
        run[qid] = list(dict.fromkeys(h.chunk.source for h in hits))
    metrics = evaluate_run(run, ds.qrels, ks=ks)
    return ModeResult(metrics=metrics, latencies_ms=latencies, run=run)


def evaluate(
    ds: BeirDataset,
    settings: Settings,
    modes: Sequence[Mode],
    *,
    ks: Sequence[int] = (10, 100),
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Index ``ds`` and evaluate each mode: the ``rag eval --json`` object."""
    t0 = time.perf_counter()
    engine = index_dataset(ds, settings, progress=progress)
    index_s = time.perf_counter() - t0
    try:
        results = {}
        for mode in modes:
            results[mode] = run_mode(engine, ds, mode, ks=ks).summary()
    finally:
        engine.close()
    return {
        "dataset": ds.name,
        "n_queries": sum(1 for q in ds.queries if q in ds.qrels),
        "n_corpus": len(ds.corpus),
        "index_s": round(index_s, 2),
        "modes": results,
    }
