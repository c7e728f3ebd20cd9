"""Choose the weak-evidence threshold of `rag ask` by measurement.

    python bench/bench_evidence.py                 # 500 queries a side, all four collections
    python bench/bench_evidence.py --n 200 --max-false-refusal 0.05

For each collection T in ../shared/eval (BEIR layout) the corpus is indexed
sparse-only (BMX, as `rag ask` always has it). *Answerable* questions are T's
own queries (the corpus holds their answer); *unanswerable* ones are queries of
another collection in the same language (covidqa <-> xquad_en, cmrc2018 <->
xquad_zh), whose answers T does not hold. For each question the top 6 hits
are retrieved and several candidate evidence measures are computed:

* ``evidence``: the measure `rag ask` uses, rag.answer.evidence_score: the best
  hit's BMX score over m * ln(1 + (N - 0.5) / 1.5), m = all query tokens;
* ``raw``: the best hit's BMX score;
* ``norm_known``: the same normalisation with m = query tokens the corpus knows
  (the BMX reference code's own);
* ``coverage``: share of query tokens present in the best chunk.

Reported: ROC AUC (answerable vs unanswerable) per measure and collection, and
for ``evidence`` the share of each side refused at a grid of thresholds. The
threshold is the largest on a 0.01 grid that refuses at most
``--max-false-refusal`` of the answerable questions in *every* collection.
Results: bench/results/evidence.md and evidence.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.beir import load_beir  # noqa: E402
from eval.runner import index_dataset  # noqa: E402
from rag.answer import evidence_score  # noqa: E402
from rag.retrieval.legs import SparseLeg  # noqa: E402
from rag.settings import Settings  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"
PAIRS = {
    "covidqa_chunks_en": "xquad_en",
    "xquad_en": "covidqa_chunks_en",
    "cmrc2018_dev_zh": "xquad_zh",
    "xquad_zh": "cmrc2018_dev_zh",
}
MEASURES = ("evidence", "raw", "norm_known", "coverage")
K = 6


def auc(pos: list[float], neg: list[float]) -> float:
    """ROC AUC as the Mann-Whitney U statistic: P(pos > neg) + P(pos = neg) / 2."""
    order = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j < len(order) and order[j][0] == order[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # average 1-based rank of the tie group
        rank_sum += mid * sum(1 for _, lab in order[i:j] if lab == 1)
        i = j
    n1, n0 = len(pos), len(neg)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def measures(engine: Any, leg: SparseLeg, question: str) -> dict[str, float]:
    tokens = leg.tokenizer(question)
    hits = engine.search(question, K, "sparse")
    n_docs = len(leg.index)
    if not hits:
        return dict.fromkeys(MEASURES, 0.0)
    best = max(hits, key=lambda h: h.scores.get("sparse") or 0.0)
    score = best.scores.get("sparse") or 0.0
    vocab = leg.index._vocab  # measurement only: how many tokens the corpus knows
    known = sum(1 for t in tokens if t in vocab)
    top_tokens = set(leg.tokenizer(hits[0].chunk.index_text()))
    z = math.log(1.0 + (n_docs - 0.5) / 1.5)
    return {
        "evidence": max(evidence_score(h.scores.get("sparse"), len(tokens), n_docs) for h in hits),
        "raw": score,
        "norm_known": score / (max(known, 1) * z),
        "coverage": sum(1 for t in tokens if t in top_tokens) / max(len(tokens), 1),
    }


def refused_share(values: list[float], t: float) -> float:
    return sum(1 for v in values if v < t) / len(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="questions per side and collection")
    ap.add_argument("--max-false-refusal", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=20240801)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    if not EVAL.is_dir():
        print(f"skipped: {EVAL} not found")
        return
    rng = random.Random(args.seed)
    data: dict[str, dict[str, list[dict[str, float]]]] = {}
    for target, other in PAIRS.items():
        if not (EVAL / target).is_dir() or not (EVAL / other).is_dir():
            print(f"skipped {target}: missing collection")
            continue
        ds, od = load_beir(EVAL / target), load_beir(EVAL / other)
        with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
            settings = Settings(data_dir=Path(tmp), embedding={"model": "none"})  # type: ignore[arg-type]
            t0 = time.perf_counter()
            engine = index_dataset(ds, settings)
            leg = engine.leg("sparse")
            assert isinstance(leg, SparseLeg)
            qa = rng.sample(sorted(ds.queries), min(args.n, len(ds.queries)))
            qu = rng.sample(sorted(od.queries), min(args.n, len(od.queries)))
            data[target] = {
                "answerable": [measures(engine, leg, ds.queries[q]) for q in qa],
                "unanswerable": [measures(engine, leg, od.queries[q]) for q in qu],
            }
            engine.close()
        print(f"{target}: {len(qa)} + {len(qu)} questions, {time.perf_counter() - t0:.1f} s", flush=True)
    if not data:
        return

    aucs = {
        m: {
            t: auc([x[m] for x in d["answerable"]], [x[m] for x in d["unanswerable"]])
            for t, d in data.items()
        }
        for m in MEASURES
    }
    for m in MEASURES:
        pooled_pos = [x[m] for d in data.values() for x in d["answerable"]]
        pooled_neg = [x[m] for d in data.values() for x in d["unanswerable"]]
        aucs[m]["pooled"] = auc(pooled_pos, pooled_neg)

    ev = {
        t: ([x["evidence"] for x in d["answerable"]], [x["evidence"] for x in d["unanswerable"]])
        for t, d in data.items()
    }
    grid = [round(0.01 * i, 2) for i in range(0, 61)]
    chosen = 0.0
    for t in grid:
        if all(refused_share(pos, t) <= args.max_false_refusal for pos, _ in ev.values()):
            chosen = t
    table = [
        {
            "threshold": t,
            **{f"{c}:answerable_refused": round(refused_share(pos, t), 4) for c, (pos, _) in ev.items()},
            **{f"{c}:unanswerable_refused": round(refused_share(neg, t), 4) for c, (_, neg) in ev.items()},
        }
        for t in grid
        if t in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4) or t == chosen
    ]

    def pct(values: list[float], q: float) -> float:
        s = sorted(values)
        return s[min(int(q * (len(s) - 1) + 0.5), len(s) - 1)]

    dist = {
        c: {
            "answerable_p02": round(pct(pos, 0.02), 3),
            "answerable_p05": round(pct(pos, 0.05), 3),
            "answerable_p50": round(pct(pos, 0.5), 3),
            "unanswerable_p50": round(pct(neg, 0.5), 3),
            "unanswerable_p95": round(pct(neg, 0.95), 3),
        }
        for c, (pos, neg) in ev.items()
    }
    result = {
        "config": {"n": args.n, "k": K, "seed": args.seed, "max_false_refusal": args.max_false_refusal},
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "auc": {m: {c: round(v, 4) for c, v in r.items()} for m, r in aucs.items()},
        "distribution": dist,
        "chosen_threshold": chosen,
        "at_chosen": {
            c: {
                "answerable_refused": refused_share(pos, chosen),
                "unanswerable_refused": refused_share(neg, chosen),
            }
            for c, (pos, neg) in ev.items()
        },
        "thresholds": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evidence.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "evidence.md").write_text(render(result))
    print(render(result))


def render(r: dict[str, Any]) -> str:
    cols = list(r["distribution"])
    lines = [
        "# Weak-evidence threshold for `rag ask`",
        "",
        "Produced by `python bench/bench_evidence.py` (see its docstring for the method). "
        f"{r['config']['n']} answerable and {r['config']['n']} unanswerable questions per collection, "
        "sparse-only index, top 6 hits.",
        "",
        "## Which measure separates answerable from unanswerable (ROC AUC)",
        "",
        "| measure | " + " | ".join(cols) + " | pooled |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for m, row in r["auc"].items():
        lines.append(f"| {m} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + f" | {row['pooled']:.3f} |")
    lines += [
        "",
        "## Evidence (normalised BMX) distribution",
        "",
        "| collection | answerable p2 | p5 | p50 | unanswerable p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c, d in r["distribution"].items():
        lines.append(
            f"| {c} | {d['answerable_p02']} | {d['answerable_p05']} | {d['answerable_p50']} | "
            f"{d['unanswerable_p50']} | {d['unanswerable_p95']} |"
        )
    lines += [
        "",
        "## Share refused at each threshold (answerable = wrongly refused, unanswerable = rightly refused)",
        "",
        "| threshold | " + " | ".join(f"{c} ans / unans" for c in cols) + " |",
        "|---:|" + "---:|" * len(cols),
    ]
    for row in r["thresholds"]:
        cells = [
            f"{row[f'{c}:answerable_refused']:.1%} / {row[f'{c}:unanswerable_refused']:.1%}" for c in cols
        ]
        mark = " **chosen**" if row["threshold"] == r["chosen_threshold"] else ""
        lines.append(f"| {row['threshold']:.2f}{mark} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Chosen: **{r['chosen_threshold']:.2f}**, the largest threshold (0.01 grid) that wrongly refuses at "
        f"most {r['config']['max_false_refusal']:.0%} of the answerable questions in every collection.",
        "It is `DEFAULT_MIN_EVIDENCE` in rag/answer.py; `RAG_ANSWER__MIN_EVIDENCE` overrides it (0 turns "
        "the check off).",
        "",
        "Caveats. The unanswerable questions are about other collections (a change of topic); a question "
        "on the same topic whose answer is missing scores higher and is left to the prompt's rule that the "
        "model must say the documents do not say. The queries of these collections reuse the passages' "
        "wording more than real questions do, so real answerable questions score lower; the threshold is "
        "set for few wrong refusals rather than many right ones. The measure is lexical: a question in "
        "another language than the notes (English question, Chinese notes, no shared terms) scores near "
        "0 even when the dense leg finds the passage; no dense-score threshold was calibrated.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
