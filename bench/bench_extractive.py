"""How often the extractive answer (`rag ask --no-llm`) quotes a gold answer, against what retrieval allows.

    python bench/bench_extractive.py                    # 300 questions per collection
    python bench/bench_extractive.py --n 100 --collections xquad_en

For each collection of ../shared/eval with an answers.jsonl the corpus is indexed
sparse-only (BMX; no embedding model, no graph), and for a random sample of its
questions the top hits are retrieved as `rag ask` does. Reported per collection:

* ``ceiling``: share of questions whose top 3 hits' text contains a gold answer
  string (the extractive answer quotes the top 3 hits, so it cannot do better);
* ``answer``: share whose extractive answer text (the label line dropped)
  contains a gold answer string, for the answer path's selection
  (rag.answer.extractive_text, BMX idf weights) and for variants of it:
  ``flat`` (all terms weigh 1), ``no_prior`` (no top-hit prior), ``first_only``
  (only the best unit quoted), and ``baseline`` (the earlier selection: the
  three sentences sharing most distinct question tokens, over the square root of
  their token count);
* ``unit_ceiling``: share whose gold answer lies inside one quotable unit
  (rag.answer.answer_units) of the top 3 hits: what quoting whole units can
  reach when the gold string spans several sentences;
* ``ratio`` = answer / ceiling, and the mean length of the quoted text.

Containment is tested after NFKC normalisation (full/half width), case folding
and removing all whitespace (gold strings of covidqa carry the PDF's line
breaks). Results: bench/results/extractive.md and extractive.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import re
import sys
import tempfile
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rag.answer as ans  # noqa: E402
from eval.beir import load_beir  # noqa: E402
from eval.runner import index_dataset  # noqa: E402
from rag.answer import ContextBlock, corpus_view, detect_language, extractive_text, split_sentences  # noqa: E402
from rag.settings import Settings  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"
COLLECTIONS = ("xquad_en", "xquad_zh", "cmrc2018_dev_zh", "covidqa_chunks_en", "rgb_int_zh")
K = 6
DENSE_WEIGHT = 0.5
VARIANTS = ("answer", "previous", "no_window", "flat", "no_prior", "first_only", "baseline")
# The selection before hard-wrapped lines were joined and neighbouring sentences quoted.
PREVIOUS = {"WRAP_WIDTH": 10**9, "WINDOW_TOP": 0, "WINDOW_BEFORE": 0, "IDF_CAP": 1.0, "FRAGMENT_FACTOR": 1.0}


def fitted(qid: str) -> bool:
    """The half of a collection's questions the weights were tuned on (a stable hash of the id)."""
    return zlib.crc32(qid.encode()) % 2 == 0


@contextmanager
def patched(**values: Any) -> Iterator[None]:
    old = {k: getattr(ans, k) for k in values}
    for k, v in values.items():
        setattr(ans, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(ans, k, v)


def dense_rescored(embedder: Any, weight: float) -> Callable[..., list[ans.Extract]]:
    """score_units plus ``weight`` times the unit's cosine similarity to the question."""
    lexical = ans.score_units

    def score(
        question: str, blocks: Sequence[ContextBlock], tokenize: Any, weigh: Any = None
    ) -> list[ans.Extract]:
        out = lexical(question, blocks, tokenize, weigh)
        if not out:
            return out
        q = embedder.embed_queries([question])[0]
        v = embedder.embed_passages([e.text for e in out])
        res = [
            ans.Extract(e.block, e.unit, e.score + weight * max(float(x @ q), 0.0))
            for e, x in zip(out, v, strict=True)
        ]
        res.sort(key=lambda e: (-e.score, e.block.n, e.unit.start))
        return res

    return score


def norm(text: str) -> str:
    """NFKC, case-folded, with every whitespace character removed."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).casefold())


def contains_gold(text: str, golds: Sequence[str]) -> bool:
    t = norm(text)
    return any(g and g in t for g in (norm(x) for x in golds))


def body(answer_text: str) -> str:
    """The quoted part of an extractive answer: the label line dropped, citations removed."""
    lines = answer_text.splitlines()[1:]
    return re.sub(r"\[\d+\]", " ", "\n".join(lines))


def baseline_text(question: str, blocks: Sequence[ContextBlock], tokenize: Callable[[str], list[str]]) -> str:
    """The earlier selection, for comparison: best 3 sentences by distinct shared tokens / sqrt(len)."""
    wanted = set(tokenize(question))
    scored = []
    for block in blocks[:3]:
        for pos, (a, b) in enumerate(split_sentences(block.text)):
            s = block.text[a:b]
            if s.lstrip().startswith("#") or len(s.strip()) < 4:
                continue
            toks = tokenize(s)
            score = len(wanted.intersection(toks)) / math.sqrt(len(toks)) if toks else 0.0
            scored.append((score, block.n, pos, s))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    picked = [x for x in scored if x[0] > 0][:3] or scored[:1]
    return "\n".join(s for *_, s in picked)


def run_collection(
    name: str, n: int, rng: random.Random, cache: Path | None, dense: Any = None
) -> dict[str, Any]:
    ds = load_beir(EVAL / name)
    assert ds.answers is not None
    qids = sorted(q for q in ds.queries if ds.answers.get(q))
    sample = rng.sample(qids, min(n, len(qids)))
    with tempfile.TemporaryDirectory(prefix="bench-extractive-") as tmp:
        data_dir = (cache / name) if cache else Path(tmp)
        settings = Settings(data_dir=data_dir, embedding={"model": "none"}, graph={"enabled": False})  # type: ignore[arg-type]
        t0 = time.perf_counter()
        engine = index_dataset(ds, settings, legs=["sparse"])
        index_s = time.perf_counter() - t0
        view = corpus_view(engine)
        tok = view.tokenize
        variants = (*VARIANTS, "dense") if dense is not None else VARIANTS
        hits_ok = dict.fromkeys(variants, 0)
        chars = dict.fromkeys(variants, 0)
        halves = {"fitted": [0, 0], "held_out": [0, 0]}  # [ceiling, answer]
        ceiling = top1 = unit_ceiling = 0
        extract_ms = 0.0
        for qid in sample:
            q = ds.queries[qid]
            golds = ds.answers[qid]
            hits = engine.search(q, K, "sparse")
            blocks = [ContextBlock(i, h, h.chunk.text) for i, h in enumerate(hits, start=1)]
            in_top3 = contains_gold(" ".join(h.chunk.text for h in hits[:3]), golds)
            ceiling += in_top3
            top1 += bool(hits) and contains_gold(hits[0].chunk.text, golds)
            unit_ceiling += any(
                contains_gold(b.text[u.start : u.end], golds)
                for b in blocks[:3]
                for u in ans.answer_units(b.text)
            )
            lang = detect_language(q)
            t1 = time.perf_counter()
            texts = {"answer": body(extractive_text(q, blocks, tok, lang, view.idf)[0])}
            extract_ms += (time.perf_counter() - t1) * 1000
            half = halves["fitted" if fitted(qid) else "held_out"]
            half[0] += in_top3
            half[1] += contains_gold(texts["answer"], golds)
            with patched(**PREVIOUS):
                texts["previous"] = body(extractive_text(q, blocks, tok, lang, view.idf)[0])
            with patched(WINDOW_TOP=0, WINDOW_BEFORE=0):
                texts["no_window"] = body(extractive_text(q, blocks, tok, lang, view.idf)[0])
            if dense is not None:
                with patched(score_units=dense_rescored(dense, DENSE_WEIGHT)):
                    texts["dense"] = body(extractive_text(q, blocks, tok, lang, view.idf)[0])
            texts["flat"] = body(extractive_text(q, blocks, tok, lang, None)[0])
            prior = ans.RANK_PRIOR
            ans.RANK_PRIOR = (1.0,)
            texts["no_prior"] = body(extractive_text(q, blocks, tok, lang, view.idf)[0])
            ans.RANK_PRIOR = prior
            best = ans.pick_extracts(ans.score_units(q, blocks[:3], tok, view.idf), n=1)
            texts["first_only"] = best[0].text if best else ""
            texts["baseline"] = baseline_text(q, blocks, tok)
            for v, t in texts.items():
                hits_ok[v] += contains_gold(t, golds)
                chars[v] += len(t)
        engine.close()
    m = len(sample)
    out: dict[str, Any] = {
        "n": m,
        "index_s": round(index_s, 1),
        "ceiling_top3": round(ceiling / m, 4),
        "top1_contains": round(top1 / m, 4),
        "unit_ceiling": round(unit_ceiling / m, 4),
        "extract_ms_mean": round(extract_ms / m, 2),
    }
    for h, (c, a) in halves.items():
        out[h] = {"n_ceiling": c, "ratio": round(a / c, 4) if c else None}
    for v in variants:
        share = hits_ok[v] / m
        out[v] = {
            "share": round(share, 4),
            "ratio": round(share / (ceiling / m), 4) if ceiling else None,
            "mean_chars": round(chars[v] / m),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="questions per collection")
    ap.add_argument("--collections", nargs="*", default=list(COLLECTIONS))
    ap.add_argument("--seed", type=int, default=20240801)
    ap.add_argument("--cache", type=Path, default=None, help="keep the indexes here (reused on the next run)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument(
        "--dense", default=None, help="also re-score units with this embedding model (e.g. use); slow on CPU"
    )
    args = ap.parse_args()
    dense = None
    if args.dense:
        from rag.embed import make_embedder

        dense = make_embedder(args.dense)
    if not EVAL.is_dir():
        print(f"skipped: {EVAL} not found")
        return
    results: dict[str, Any] = {}
    for name in args.collections:
        if not (EVAL / name / "answers.jsonl").is_file():
            print(f"skipped {name}: no answers.jsonl")
            continue
        results[name] = run_collection(name, args.n, random.Random(f"{args.seed}-{name}"), args.cache, dense)
        print(name, json.dumps(results[name]), flush=True)
    if not results:
        return
    report = {
        "config": {"n": args.n, "k": K, "seed": args.seed, "index": "sparse only (BMX), no graph"},
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "collections": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "extractive.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "extractive.md").write_text(render(report))
    print(render(report))


def render(r: dict[str, Any]) -> str:
    cols = r["collections"]
    variants = [*VARIANTS, *(["dense"] if any("dense" in d for d in cols.values()) else [])]
    lines = [
        "# Extractive answers: gold-answer share against the retrieval ceiling",
        "",
        f"Produced by `python bench/bench_extractive.py --n {r['config']['n']}` (method in its docstring): "
        f"{r['config']['n']} random questions per collection (fewer where the collection has fewer), "
        "sparse-only index (BMX), top 6 hits, the extractive answer quotes units of the top 3.",
        "",
        "| collection | n | ceiling (top-3 hits hold a gold answer) | top-1 hit holds one | extractive answer holds one "
        "| ratio to ceiling | fitted half / held-out half | before: ratio / quoted chars "
        "| one unit holds one | quoted chars | ms/answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, d in cols.items():
        a = d["answer"]
        lines.append(
            f"| {c} | {d['n']} | {d['ceiling_top3']:.1%} | {d['top1_contains']:.1%} | {a['share']:.1%} | "
            f"**{a['ratio']:.2f}** | {d['fitted']['ratio']:.2f} / {d['held_out']['ratio']:.2f} | "
            f"{d['previous']['ratio']:.2f} / {d['previous']['mean_chars']} | "
            f"{d['unit_ceiling']:.1%} | {a['mean_chars']} | {d['extract_ms_mean']:.1f} |"
        )
    lines += [
        "",
        "## Variants (share holding a gold answer / ratio to ceiling / mean quoted characters)",
        "",
        "| collection | " + " | ".join(variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    for c, d in cols.items():
        cells = [
            f"{d[v]['share']:.1%} / {d[v]['ratio']:.2f} / {d[v]['mean_chars']}" if v in d else "–"
            for v in variants
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`answer` is what `rag ask --no-llm` does: hard-wrapped lines of a paragraph (PDF text) read as "
        "one paragraph; units scored by idf-weighted question terms (BMX idf capped at 4) with their "
        "heading context and a top-hit prior; a Latin-script prose fragment without a sentence end (a "
        "figure label) weighs 0.8; up to 3 units scoring at least half the best, each widened by the "
        "sentence after it (and the best one by the sentence before it) when shorter than 300 columns. "
        "`previous`: the selection before this change (no joining, no widening, idf capped at 1, no "
        "fragment weight), the *before* column above; `no_window`: without the widening; `flat`: every "
        "question term weighs 1; `no_prior`: no top-hit prior; `first_only`: only the best unit; "
        "`baseline`: the first selection (distinct shared tokens over sqrt(length), 3 sentences)"
        + (
            f"; `dense`: `answer` re-scored with {DENSE_WEIGHT} times the unit's cosine similarity to the "
            "question (`--dense MODEL`)."
            if "dense" in variants
            else "."
        ),
        "",
        "Fitted / held-out. The weights (idf cap, fragment weight, widening) were chosen on the questions "
        "whose id hashes even (`fitted` in the script) and checked on the others; the two columns split "
        "the sample so. Most of the gain is the widening: it quotes more text (the quoted-character "
        "columns), and the share it adds is partly that. The question-type cue for dates and numbers "
        "(何时/多少/when/how many: prefer units with digits) was measured and gained nothing beyond "
        "noise, so it is not used.",
        "",
        "Caveats. These collections are clean prose (Wikipedia, news, papers): they measure sentence choice, "
        "not the handling of commands, code blocks and labels in notes, which tests/test_extractive.py "
        "covers on a notes fixture. Their questions reuse the passages' wording, which favours lexical "
        "selection. covidqa's gold answers are long spans (often several sentences): the column "
        "'one unit holds one' is the reachable ceiling for quoting whole units. rgb_int_zh counts a "
        "question when any of its gold strings is quoted, and its halves hold about 30 answerable "
        "questions each. The index is sparse-only.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
