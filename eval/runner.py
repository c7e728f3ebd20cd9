"""Retrieval benchmark on a BEIR-layout collection.

The corpus is indexed through the same chunking and retrieval code as a
user's folder: one document per corpus entry (title, blank line, text). When
chunking splits an entry, the entry's score is its best chunk's. Each mode is
timed per query (p50/p95) and scored with the metrics in :mod:`eval.metrics`.

:func:`evaluate` is the whole benchmark as one call (``rag eval`` and the
benchmark scripts use it); it returns the ``rag eval --json`` object::

    {"dataset", "n_queries", "n_corpus", "index_s",
     "modes":  {MODE: {"ndcg@10", "recall@10", "recall@100", "mrr@10", ...,
                       "answer_recall@1|5|10" (with gold answers),
                       "latency_ms_p50", "latency_ms_p95"}},
     "slices": {"zh": {MODE: {..., "n_queries"}}, "en": {...}}   (queries in both languages only)
     "generation": {...} or null,     (answers written by an LLM, when one is given)
     "config", "timings", "machine"}
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from eval.beir import BeirDataset
from eval.metrics import (
    answer_f1,
    answer_in_texts,
    answer_recall_at_k,
    evaluate_run,
    evaluate_run_per_query,
    exact_match,
)
from ingest.pipeline import chunk_document
from rag.engine import Engine, available_legs
from rag.errors import InputError
from rag.models import ExtractedDocument
from rag.retrieval.search import Hit, Mode
from rag.settings import Settings
from rag.store import DocumentRecord

if TYPE_CHECKING:
    from rag.llm import LLM

__all__ = [
    "ANSWER_KS",
    "DEPTH",
    "GenerationResult",
    "ModeResult",
    "cjk_share",
    "default_modes",
    "evaluate",
    "evaluate_generation",
    "index_dataset",
    "legs_used",
    "machine_info",
    "percentile",
    "query_language",
    "run_mode",
    "settings_snapshot",
    "summarize",
]

ProgressFn = Callable[[int, int, str], None]
DEPTH = 100  # chunks retrieved per query
ANSWER_KS = (1, 5, 10)  # cut-offs of answer recall
Language = Literal["zh", "en"]


def corpus_text(entry: dict[str, str]) -> str:
    title, text = entry.get("title", "").strip(), entry.get("text", "")
    if title and not text.lstrip().startswith(title):
        return f"{title}\n\n{text}"
    return text


def _eval_root(ds: BeirDataset) -> str:
    return f"beir://{ds.name}"


def index_dataset(
    ds: BeirDataset,
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    timings: dict[str, Any] | None = None,
    legs: Sequence[str] | None = None,
) -> Engine:
    """Write the corpus into a fresh chunk store under ``settings.data_dir`` and build the indexes.

    A data dir that already holds this collection (same name, same number of
    entries) is reused as it is; one that holds anything else is refused, so a
    benchmark never writes into a user's index. ``timings``, when given,
    receives ``store_s`` and ``sync_s`` (seconds per leg). ``legs``: the legs
    to build (default: every leg the settings configure).
    """
    t0 = time.perf_counter()
    engine = Engine.open(settings, create=True)
    try:
        store = engine.store
        if store.count_documents() == 0:
            _write_corpus(ds, engine, settings, progress)
        else:
            docs = store.documents()
            if any(d.root != _eval_root(ds) for d in docs) or len(docs) != len(ds.corpus):
                raise InputError(
                    f"data dir {settings.data_dir} already holds another index",
                    hint="leave out --data-dir (a temporary one is used) or name an empty folder",
                )
        t1 = time.perf_counter()
        synced = engine.sync(legs, progress=progress)
    except BaseException:
        engine.close()
        raise
    if timings is not None:
        timings["store_s"] = round(t1 - t0, 3)
        timings["sync_s"] = {leg: round(r.took_s, 3) for leg, r in synced.items()}
    return engine


def _write_corpus(ds: BeirDataset, engine: Engine, settings: Settings, progress: ProgressFn | None) -> None:
    with engine.store.transaction() as tx:
        for i, (cid, entry) in enumerate(ds.corpus.items()):
            text = corpus_text(entry)
            doc_id = hashlib.blake2b(cid.encode(), digest_size=8).hexdigest()
            doc = ExtractedDocument(text=text, format="text")
            chunks = chunk_document(doc, doc_id=doc_id, source=cid, chunking=settings.chunking)
            record = DocumentRecord.for_text(
                doc_id=doc_id,
                root=_eval_root(ds),
                source=cid,
                text=text,
                format="text",
                pipeline="eval",
                n_chunks=len(chunks),
            )
            tx.put_document(record, text, chunks)
            if progress and i % 200 == 0:
                progress(i, len(ds.corpus), "corpus")


# -- languages -------------------------------------------------------------------------------------

_CJK_LETTER = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f"
_CJK_LETTER_RE = re.compile(f"[{_CJK_LETTER}]")
_OTHER_WORD_RE = re.compile(f"[^\\W_{_CJK_LETTER}]+")
ZH_SHARE = 0.4


def cjk_share(text: str) -> float:
    """CJK letters over (CJK letters + other words): one Han character weighs as much as one Latin word.

    The unit is the chunker's (``ingest.chunking.measure``): a CJK letter and a
    word or number are one unit each. 0.0 for text with neither.
    """
    cjk = len(_CJK_LETTER_RE.findall(text))
    words = len(_OTHER_WORD_RE.findall(text))
    return cjk / (cjk + words) if cjk + words else 0.0


def query_language(text: str) -> Language:
    """``"zh"`` when at least 40% of the query's units are CJK letters, else ``"en"``.

    0.4 keeps Chinese questions full of English terms Chinese ("ollama ps 显示
    CPU": 2 of 5 units) and English questions quoting one Chinese word English
    ("how do I say 你好 in English": 2 of 8).
    """
    return "zh" if cjk_share(text) >= ZH_SHARE else "en"


# -- one mode --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (1..99), interpolated linearly between order statistics.

    Hyndman & Fan, "Sample quantiles in statistical packages" (1996), type 7:
    the default of R and numpy (``statistics.quantiles(method="inclusive")``).
    """
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1])


@dataclass
class ModeResult:
    """One mode's run: mean metrics, per-query metrics and latencies, the ranked corpus ids."""

    metrics: dict[str, float]
    latencies_ms: list[float] = field(default_factory=list)
    run: dict[str, list[str]] = field(default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_by_query: dict[str, float] = field(default_factory=dict)
    search_s: float = 0.0

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies_ms)
        out = dict(self.metrics)
        out["latency_ms_p50"] = round(percentile(lat, 50), 2)
        out["latency_ms_p95"] = round(percentile(lat, 95), 2)
        return out


def run_mode(
    engine: Engine,
    ds: BeirDataset,
    mode: Mode,
    *,
    ks: Sequence[int] = (10, 100),
    answer_ks: Sequence[int] = ANSWER_KS,
) -> ModeResult:
    """Search every judged query in one mode; return metrics, latencies and the run.

    With gold answers (``ds.answers``) the metrics include ``answer_recall@k``
    for each k of ``answer_ks``: whether one of the top-k *chunks* holds a gold
    answer string, averaged over the queries that have answers.
    """
    retriever = engine.retriever(mode)
    depth = max(DEPTH, *ks, *answer_ks)
    answers = ds.answers or {}
    run: dict[str, list[str]] = {}
    latencies: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    t_all = time.perf_counter()
    for qid, text in ds.queries.items():
        if qid not in ds.qrels:
            continue
        t0 = time.perf_counter()
        hits = retriever.search(text, depth, mode)
        latencies[qid] = (time.perf_counter() - t0) * 1000
        # hits come best first, so a corpus entry's first chunk is its best one
        run[qid] = list(dict.fromkeys(h.chunk.source for h in hits))
        if answer_ks and answers.get(qid):
            texts[qid] = [h.chunk.text for h in hits[: max(answer_ks)]]
    search_s = time.perf_counter() - t_all
    metrics = evaluate_run(run, ds.qrels, ks=ks)
    per_query = evaluate_run_per_query(run, ds.qrels, ks=ks)
    if texts:
        for qid, top in texts.items():
            row = per_query.setdefault(qid, {})
            for k in sorted(set(answer_ks)):
                row[f"answer_recall@{k}"] = answer_recall_at_k(top, answers[qid], k)
        for k in sorted(set(answer_ks)):
            name = f"answer_recall@{k}"
            metrics[name] = math.fsum(per_query[q][name] for q in texts) / len(texts)
    return ModeResult(
        metrics=metrics,
        latencies_ms=[latencies[q] for q in run],
        run=run,
        per_query=per_query,
        latency_by_query=latencies,
        search_s=search_s,
    )


def summarize(result: ModeResult, qids: Iterable[str]) -> dict[str, float]:
    """Mean metrics and latency percentiles over the queries ``qids`` (a slice of the run).

    Each metric is averaged over the queries of the slice that have it (answer
    recall only exists for queries with gold answers); ``n_queries`` counts the
    slice's searched queries.
    """
    wanted = [q for q in qids if q in result.latency_by_query]
    sums: dict[str, list[float]] = {}
    for q in wanted:
        for name, value in result.per_query.get(q, {}).items():
            sums.setdefault(name, []).append(value)
    out: dict[str, float] = {name: math.fsum(v) / len(v) for name, v in sums.items()}
    lat = sorted(result.latency_by_query[q] for q in wanted)
    out["latency_ms_p50"] = round(percentile(lat, 50), 2)
    out["latency_ms_p95"] = round(percentile(lat, 95), 2)
    out["n_queries"] = len(wanted)
    return out


def default_modes(engine: Engine) -> list[str]:
    """Every leg the engine can build that hybrid search fuses (a positive fusion weight), plus
    ``hybrid`` when there are at least two. A leg with weight 0 (the graph leg by default) is
    evaluated only when named, e.g. ``--modes sparse,graph,hybrid``."""
    return _default_modes(engine.settings)


def _fused_legs(settings: Settings) -> list[str]:
    r = settings.retrieval
    weight = {"sparse": r.weight_sparse, "dense": r.weight_dense, "graph": r.weight_graph}
    return [leg for leg in available_legs(settings) if weight.get(leg, 1.0) > 0]


def _default_modes(settings: Settings) -> list[str]:
    legs = _fused_legs(settings)
    return [*legs, "hybrid"] if len(legs) > 1 else legs


def legs_used(modes: Sequence[str], settings: Settings) -> list[str]:
    """The legs that searching in ``modes`` needs: a leg's own mode, or for ``hybrid`` the legs it fuses."""
    names: list[str] = []
    for mode in modes:
        names.extend(_fused_legs(settings) if mode == "hybrid" else [mode])
    return list(dict.fromkeys(names))


# -- generated answers -----------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """Answers written by a language model for the queries with gold answers."""

    llm: dict[str, str]
    n_queries: int = 0
    exact_match: float = 0.0
    f1: float = 0.0
    citation_accuracy: float | None = None
    n_cited: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "mode": "hybrid",
            "llm": self.llm,
            "n_queries": self.n_queries,
            "exact_match": self.exact_match,
            "f1": self.f1,
            "citation_accuracy": self.citation_accuracy,
            "n_with_citations": self.n_cited,
            "kinds": dict(sorted(self.kinds.items())),
            "latency_ms_p50": round(percentile(lat, 50), 2),
            "latency_ms_p95": round(percentile(lat, 95), 2),
        }


_CITATION_RE = re.compile(r"[\[【]\s*\d{1,3}(?:\s*[,，、;；\-–]\s*\d{1,3})*\s*[\]】]")


def evaluate_generation(
    engine: Engine, ds: BeirDataset, llm: LLM, *, max_queries: int = 200
) -> GenerationResult:
    """Ask ``llm`` (through :func:`rag.answer.answer`, hybrid retrieval) the queries with gold answers.

    Scores each answer's text, citation marks ``[n]`` removed, by exact match
    and F1 against the gold answers (:func:`eval.metrics.exact_match`,
    :func:`eval.metrics.answer_f1`; a refusal scores 0) and its citations by *citation accuracy*: the share of the cited
    chunks that contain a gold answer, averaged over the answers that cite
    anything. At most ``max_queries`` queries, the first by query id.
    """
    from rag.answer import answer

    golds = ds.answers or {}
    qids = sorted(q for q in ds.queries if q in ds.qrels and golds.get(q))[:max_queries]
    info = llm.info()
    res = GenerationResult(llm={"backend": info["backend"], "model": info["model"]})
    ems: list[float] = []
    f1s: list[float] = []
    cites: list[float] = []
    for qid in qids:
        t0 = time.perf_counter()
        ans = answer(engine, llm, ds.queries[qid])
        res.latencies_ms.append((time.perf_counter() - t0) * 1000)
        res.kinds[ans.kind] = res.kinds.get(ans.kind, 0) + 1
        text = _CITATION_RE.sub(" ", ans.text) if ans.kind == "generated" else ""
        ems.append(exact_match(text, golds[qid]))
        f1s.append(answer_f1(text, golds[qid]))
        cites.append(_citation_accuracy(ans.citations, ans.hits, golds[qid], engine))
    res.n_queries = len(qids)
    if qids:
        res.exact_match = math.fsum(ems) / len(ems)
        res.f1 = math.fsum(f1s) / len(f1s)
    scored = [c for c in cites if not math.isnan(c)]
    res.n_cited = len(scored)
    res.citation_accuracy = math.fsum(scored) / len(scored) if scored else None
    return res


def _citation_accuracy(
    citations: Sequence[Any], hits: Sequence[Hit], golds: list[str], engine: Engine
) -> float:
    """Share of the cited chunks that hold a gold answer; NaN when nothing is cited."""
    ids = list(dict.fromkeys(c.chunk_id for c in citations))
    if not ids:
        return math.nan
    texts = {h.chunk.chunk_id: h.chunk.text for h in hits}
    missing = [i for i in ids if i not in texts]
    if missing:
        texts.update({c.chunk_id: c.text for c in engine.store.get_chunks(missing)})
    return sum(1.0 for i in ids if answer_in_texts([texts.get(i, "")], golds)) / len(ids)


# -- the whole benchmark ---------------------------------------------------------------------------


def settings_snapshot(settings: Settings) -> dict[str, Any]:
    """The settings that change retrieval results (no paths, no credentials)."""
    return {
        "chunking": settings.chunking.model_dump(),
        "sparse": settings.sparse.model_dump(),
        "embedding": settings.embedding.model_dump(),
        "retrieval": settings.retrieval.model_dump(),
        "vectors": {"backend": settings.vectors.backend},
        "graph": settings.graph.model_dump(mode="json", exclude={"aliases"}),
    }


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: OS, CPU count, Python, library version, GPU if torch is loaded."""
    from rag import __version__

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "rag_version": __version__,
    }
    torch = sys.modules.get("torch")  # only when a dense leg already loaded it
    if torch is not None:
        try:
            info["torch"] = str(torch.__version__)
            info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:  # a broken CUDA setup must not fail the report
            info["gpu"] = None
    return info


def _language_slices(ds: BeirDataset, qids: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for q in qids:
        groups.setdefault(query_language(ds.queries[q]), []).append(q)
    return groups


def evaluate(
    ds: BeirDataset,
    settings: Settings,
    modes: Sequence[Mode] | None = None,
    *,
    ks: Sequence[int] = (10, 100),
    answer_ks: Sequence[int] = ANSWER_KS,
    progress: ProgressFn | None = None,
    slices: bool = True,
    llm: LLM | None = None,
    max_generated: int = 200,
) -> dict[str, Any]:
    """Index ``ds`` and evaluate each mode: the ``rag eval --json`` object (see the module docstring).

    ``modes=None`` runs :func:`default_modes`. ``slices``: also report per
    query language when the queries mix Chinese and English. ``llm``: also
    generate answers for up to ``max_generated`` queries with gold answers and
    score them (``"generation"``).
    """
    t_start = time.perf_counter()
    timings: dict[str, Any] = {}
    mode_list: list[str] = list(modes) if modes is not None else _default_modes(settings)
    if not mode_list:
        raise InputError("no retrieval mode to evaluate")
    # generated answers search in hybrid mode, whatever modes are compared
    legs = legs_used([*mode_list, "hybrid"] if llm is not None and ds.answers else mode_list, settings)
    engine = index_dataset(ds, settings, progress=progress, timings=timings, legs=legs)
    index_s = time.perf_counter() - t_start
    try:
        runs: dict[str, ModeResult] = {}
        for mode in mode_list:
            runs[mode] = run_mode(engine, ds, mode, ks=ks, answer_ks=answer_ks)  # type: ignore[arg-type]
        generation = None
        if llm is not None and ds.answers:
            t0 = time.perf_counter()
            generation = evaluate_generation(engine, ds, llm, max_queries=max_generated).summary()
            timings["generation_s"] = round(time.perf_counter() - t0, 3)
    finally:
        engine.close()
    searched = sorted(next(iter(runs.values())).latency_by_query)
    result: dict[str, Any] = {
        "dataset": ds.name,
        "n_queries": sum(1 for q in ds.queries if q in ds.qrels),
        "n_corpus": len(ds.corpus),
        "index_s": round(index_s, 2),
        "modes": {mode: r.summary() for mode, r in runs.items()},
    }
    groups = _language_slices(ds, searched)
    if slices and len(groups) > 1:
        result["slices"] = {
            lang: {mode: summarize(r, groups[lang]) for mode, r in runs.items()}
            for lang in sorted(groups, key=lambda g: (g != "zh", g))
        }
    result["generation"] = generation
    timings["index_s"] = round(index_s, 3)
    timings["search_s"] = {mode: round(r.search_s, 3) for mode, r in runs.items()}
    timings["total_s"] = round(time.perf_counter() - t_start, 3)
    result["config"] = {
        "settings": settings_snapshot(settings),
        "modes": mode_list,
        "legs": legs,
        "ks": sorted(set(ks)),
        "answer_ks": sorted(set(answer_ks)) if ds.answers else [],
        "depth": max(DEPTH, *ks, *answer_ks),
        "n_answers": len(ds.answers or {}),
    }
    result["timings"] = timings
    result["machine"] = machine_info()
    return result
