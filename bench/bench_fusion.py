"""Choose fusion defaults by measurement: RRF vs min-max weighted fusion, weight sweep.

    python bench/bench_fusion.py [--sets xquad_zh,...] [--model e5-small] [--out bench/results/fusion-<model>.md]

Each collection is indexed once (sparse + dense, through `eval.runner.index_dataset`,
kept under bench/out/fusion/<model>/<set> so re-runs reuse the embeddings). Each
leg's top-100 candidates are computed once per query; the fusion variants are then
pure functions over those candidates (`rag.retrieval.fusion`), so every variant sees
exactly the same leg results. Scores are nDCG@10 at corpus-entry level (best chunk).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.beir import load_beir  # noqa: E402
from eval.metrics import evaluate_run  # noqa: E402
from eval.runner import index_dataset  # noqa: E402
from rag.retrieval.fusion import fuse, ranked  # noqa: E402
from rag.settings import Settings  # noqa: E402

EVAL_ROOT = REPO.parent / "shared" / "eval"
SETS = ["xquad_zh", "cmrc2018_dev_zh", "xquad_en", "covidqa_chunks_en"]
DEPTH = 100
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


def leg_candidates(ds_name: str, model: str) -> tuple[dict, dict, dict]:
    """{qid: {chunk_id: score}} per leg, plus chunk -> corpus id."""
    ds = load_beir(EVAL_ROOT / ds_name)
    settings = Settings(data_dir=REPO / "bench" / "out" / "fusion" / model / ds_name)
    settings.embedding.model = model
    t0 = time.perf_counter()
    engine = index_dataset(ds, settings)
    print(f"{ds_name}: indexed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    sparse, dense = engine.leg("sparse"), engine.leg("dense")
    legs: dict[str, dict[str, dict[str, float]]] = {"sparse": {}, "dense": {}}
    for qid, text in ds.queries.items():
        if qid in ds.qrels:
            legs["sparse"][qid] = sparse.search(text, DEPTH)
            legs["dense"][qid] = dense.search(text, DEPTH)
    to_doc = {}
    for batch in engine.store.iter_chunks():
        for c in batch:
            to_doc[c.chunk_id] = c.source
    engine.close()
    return legs, to_doc, ds.qrels


def score(order: list[tuple[str, float]], to_doc: dict[str, str]) -> list[str]:
    return list(dict.fromkeys(to_doc[c] for c, _ in order))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--out", type=Path, help="default: bench/results/fusion-<model>.md (one file per model)")
    args = ap.parse_args()
    if args.out is None:
        args.out = REPO / "bench" / "results" / f"fusion-{args.model}.md"
    if not EVAL_ROOT.exists():
        print(f"skipped: {EVAL_ROOT} not found")
        return

    variants: dict[str, dict] = {
        "sparse only": {"legs": ["sparse"]},
        "dense only": {"legs": ["dense"]},
        "rrf k=60 equal": {"method": "rrf", "w": {"sparse": 1.0, "dense": 1.0}},
        "rrf k=60 0.8/0.2": {"method": "rrf", "w": {"sparse": 0.8, "dense": 0.2}},
    }
    for ws in (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1):
        variants[f"weighted {ws:g}/{round(1 - ws, 2):g}"] = {
            "method": "weighted",
            "w": {"sparse": ws, "dense": round(1 - ws, 2)},
        }

    table: dict[str, dict[str, float]] = {v: {} for v in variants}
    for name in args.sets.split(","):
        legs, to_doc, qrels = leg_candidates(name, args.model)
        for vname, v in variants.items():
            run = {}
            for qid in legs["sparse"]:
                per_leg = {leg: legs[leg][qid] for leg in ("sparse", "dense")}
                if "legs" in v:
                    order = ranked(per_leg[v["legs"][0]])
                else:
                    order = fuse(per_leg, method=v["method"], weights=v["w"], rrf_k=60)
                run[qid] = score(order, to_doc)
            table[vname][name] = evaluate_run(run, qrels, ks=(10, 100))["ndcg@10"]

    sets = args.sets.split(",")
    lines = [
        f"# Fusion: nDCG@10 per variant (dense leg = {args.model})",
        "",
        f"`python bench/bench_fusion.py --model {args.model}`; sparse = BMX with the default tokenizer.",
        "",
        "| variant | " + " | ".join(sets) + " | mean |",
        "|---|" + "---:|" * (len(sets) + 1),
    ]
    for vname, row in table.items():
        vals = [row[s] for s in sets]
        lines.append(
            f"| {vname} | " + " | ".join(f"{x:.4f}" for x in vals) + f" | {sum(vals) / len(vals):.4f} |"
        )
    lines.append("")
    for s in sets:
        best = max(table, key=lambda v: table[v][s])
        single = max(table["sparse only"][s], table["dense only"][s])
        lines.append(f"- {s}: best {best} ({table[best][s]:.4f}); best single leg {single:.4f}")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists() and NOTES_MARKER in (old := args.out.read_text()):
        text += "\n" + old[old.index(NOTES_MARKER) :]
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
