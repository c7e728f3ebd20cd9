"""Compare lexical-tokenizer options by BM25 retrieval quality and speed.

For each collection in ../shared/eval (cmrc2018_dev_zh, xquad_zh, xquad_en,
covidqa_chunks_en) and each tokenizer variant, the corpus (title + text) is
tokenized, indexed with plain BM25 (bm25s, Lucene variant, k1=1.2, b=0.75) and
every query is run to depth 100; nDCG@10, Recall@100 and MRR@10 come from
eval.metrics. Speed is the corpus tokenization rate on this machine, best of 3 runs (jieba
initialisation excluded; it is measured separately in fresh processes, with
and without jieba's dictionary cache).

Run: ``python bench/bench_tokenize.py [--sets a,b] [--out bench/results/tokenizer.md]``.
Writes the Markdown table and a JSON copy of the figures next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset, load_beir  # noqa: E402
from eval.metrics import evaluate_run, evaluate_run_per_query  # noqa: E402
from rag.sparse.tokenize import Tokenizer  # noqa: E402

EVAL_DIR = ROOT.parent / "shared" / "eval"
ZH_SETS = ("cmrc2018_dev_zh", "xquad_zh")
EN_SETS = ("xquad_en", "covidqa_chunks_en")
REFERENCE = {"xquad_zh": 0.963, "cmrc2018_dev_zh": 0.984, "xquad_en": 0.965, "covidqa_chunks_en": 0.633}

# name -> Tokenizer options. Chinese variants run on every set (English text has no CJK runs,
# so they only differ there through the shared Latin path); English-only variants run on EN sets.
ZH_VARIANTS: dict[str, dict[str, Any]] = {
    "jieba (cut_for_search)": {"cjk": "jieba", "jieba_mode": "search"},
    "jieba (cut)": {"cjk": "jieba", "jieba_mode": "accurate"},
    "bigram": {"cjk": "bigram"},
    "jieba (cut_for_search)+bigram": {"cjk": "jieba+bigram", "jieba_mode": "search"},
    "jieba (cut)+bigram": {"cjk": "jieba+bigram", "jieba_mode": "accurate"},
    "unigram+bigram": {"cjk": "unigram+bigram"},
    "jieba (cut_for_search), no stopwords": {"cjk": "jieba", "jieba_mode": "search", "stopwords": False},
    "jieba (cut), no stopwords": {"cjk": "jieba", "jieba_mode": "accurate", "stopwords": False},
    "bigram, no stopwords": {"cjk": "bigram", "stopwords": False},
    "unigram+bigram, no stopwords": {"cjk": "unigram+bigram", "stopwords": False},
}
EN_VARIANTS: dict[str, dict[str, Any]] = {
    "stem, stopwords, code parts": {},
    "no code parts (code tokens whole only)": {"code_parts": False},
    "no stemming": {"stem": False},
    "no stopwords": {"stopwords": False},
}


def _bm25_run(
    ds: BeirDataset, tok: Tokenizer, depth: int = 100, repeats: int = 3
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    import bm25s

    doc_ids = list(ds.corpus)
    texts = [ds.document_text(d) for d in doc_ids]
    tok_s = float("inf")
    corpus_tokens: list[list[str]] = []
    for _ in range(max(1, repeats)):  # best of a few runs: the machine may be shared
        t0 = time.perf_counter()
        corpus_tokens = [tok(t) for t in texts]
        tok_s = min(tok_s, time.perf_counter() - t0)
    retriever = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    retriever.index(corpus_tokens, show_progress=False)
    qids = list(ds.queries)
    query_tokens = [tok(ds.queries[q]) for q in qids]
    k = min(depth, len(doc_ids))
    docs, scores = retriever.retrieve(query_tokens, k=k, show_progress=False)
    run: dict[str, dict[str, float]] = {}
    for qi, qid in enumerate(qids):
        run[qid] = {doc_ids[int(d)]: float(s) for d, s in zip(docs[qi], scores[qi], strict=True) if s > 0}
    n_chars = sum(len(t) for t in texts)
    n_tokens = sum(len(t) for t in corpus_tokens)
    stats = {
        "chars_per_s": n_chars / tok_s,
        "tokens_per_s": n_tokens / tok_s,
        "docs_per_s": len(texts) / tok_s,
        "terms_per_doc": n_tokens / len(texts),
        "vocab": float(len({t for doc in corpus_tokens for t in doc})),
    }
    return run, stats


def _paired_bootstrap(
    a: list[float], b: list[float], n: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a - b and its 95% percentile bootstrap interval over queries (Efron & Tibshirani 1993)."""
    import numpy as np

    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def _jieba_init_seconds(cached: bool) -> float:
    """Seconds from a fresh interpreter's first Chinese tokenization to its return."""
    code = (
        f"import time, sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from rag.sparse.tokenize import Tokenizer\n"
        "t = Tokenizer(cjk='jieba'); t0 = time.perf_counter(); t('中文分词')\n"
        "print(time.perf_counter() - t0)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not cached:
            env["TMPDIR"] = tmp  # jieba keeps its dictionary cache in the temp dir
        if cached:  # warm the cache first
            subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        cmd = [sys.executable, "-c", code]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(ZH_SETS + EN_SETS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tokenizer.md")
    args = parser.parse_args()
    if not EVAL_DIR.is_dir():
        print(f"skipped: {EVAL_DIR} not found")
        return
    sets = [s for s in args.sets.split(",") if s]

    default_fp = Tokenizer().fingerprint()
    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for name in sets:
        ds = load_beir(EVAL_DIR / name)
        variants = dict(ZH_VARIANTS)
        if name in EN_SETS:
            # English text has no CJK run: the cjk option must not change anything here.
            variants = {**EN_VARIANTS, "cjk=jieba": {"cjk": "jieba"}}
        per_query: dict[str, dict[str, float]] = {}
        set_rows: list[dict[str, Any]] = []
        for label, opts in variants.items():
            tok = Tokenizer(**opts)
            tok("预热 warm up")  # initialise jieba / stemmer outside the timing
            run, stats = _bm25_run(ds, tok)
            metrics = evaluate_run(run, ds.qrels, ks=(10, 100))
            per_query[label] = {q: m["ndcg@10"] for q, m in evaluate_run_per_query(run, ds.qrels).items()}
            fp = tok.fingerprint()
            row = {"set": name, "variant": label, "options": opts, "fingerprint": fp}
            row["is_default"] = fp == default_fp
            row.update(stats)
            row.update({m: metrics[m] for m in ("ndcg@10", "recall@100", "mrr@10")})
            set_rows.append(row)
            print(
                f"{name:18s} {label:38s} nDCG@10 {row['ndcg@10']:.4f} R@100 {row['recall@100']:.4f} "
                f"MRR@10 {row['mrr@10']:.4f} {stats['tokens_per_s']:>9,.0f} tok/s "
                f"{stats['chars_per_s']:>10,.0f} chars/s {stats['terms_per_doc']:6.0f} terms/doc",
                flush=True,
            )
        base = next((r for r in set_rows if r["is_default"]), None)
        for r in set_rows:
            if base is not None and r is not base:
                qids = sorted(per_query[base["variant"]])
                a = [per_query[r["variant"]][q] for q in qids]
                b = [per_query[base["variant"]][q] for q in qids]
                r["delta_ndcg@10"] = _paired_bootstrap(a, b)
        rows.extend(set_rows)

    init_cached = _jieba_init_seconds(cached=True)
    init_cold = _jieba_init_seconds(cached=False)
    print(f"jieba initialisation: {init_cached:.2f} s with its cache, {init_cold:.2f} s without")

    lines = [
        "# Tokenizer options: BM25 retrieval quality and speed",
        "",
        "Produced by `python bench/bench_tokenize.py`. Plain BM25 (bm25s, Lucene, k1=1.2, b=0.75) over",
        "title + text, depth 100; metrics from `eval.metrics`. Speed = corpus tokenization, best of 3 runs,",
        f"on this machine ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}),",
        "one process;",
        f"1-minute load average at the start: {load:.1f} (speed figures are only comparable within one run).",
        "",
        "Δ = nDCG@10 of the variant minus the default's (**bold** row, `Tokenizer()`), mean over queries",
        "with a 95% paired bootstrap interval; an interval that holds 0 means no measurable difference.",
        "",
        "| set | variant | nDCG@10 | Δ vs default [95% CI] | Recall@100 | MRR@10 | terms/doc | vocab "
        "| tokens/s | chars/s | ref. nDCG@10 |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        label = f"**{r['variant']}**" if r["is_default"] else r["variant"]
        delta = "—"
        if "delta_ndcg@10" in r:
            d, lo, hi = r["delta_ndcg@10"]
            delta = f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        ref = REFERENCE.get(r["set"], float("nan"))
        lines.append(
            f"| {r['set']} | {label} | {r['ndcg@10']:.4f} | {delta} | {r['recall@100']:.4f} "
            f"| {r['mrr@10']:.4f} | {r['terms_per_doc']:.0f} | {r['vocab']:,.0f} | {r['tokens_per_s']:,.0f} "
            f"| {r['chars_per_s']:,.0f} | {ref:.3f} |"
        )
    lines += [
        "",
        f"jieba initialisation (first Chinese text in a fresh process): {init_cached:.2f} s with jieba's",
        f"dictionary cache in the temp dir, {init_cold:.2f} s when the cache must be built.",
        "",
        "ref. nDCG@10 = reference BM25 figure in ../shared/eval/README.md (bm25s, jieba, stemmer).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    payload = {"rows": rows, "jieba_init_s": {"cached": init_cached, "cold": init_cold}}
    payload_text = json.dumps(payload, indent=1, ensure_ascii=False)
    args.out.with_suffix(".json").write_text(payload_text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
