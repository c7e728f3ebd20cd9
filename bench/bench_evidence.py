"""Choose the refusal thresholds of `rag ask` by measurement.

    python bench/bench_evidence.py                 # 300 questions a side, five collections
    python bench/bench_evidence.py --n 200 --max-false-refusal 0.05

For each collection T in ../shared/eval (BEIR layout) the corpus is indexed
sparse-only (BMX, no embedding model, no graph). Three question sets:

* *answerable*: T's own queries (the corpus holds their answer);
* *other collection*: queries of another collection in the same language
  (covidqa <-> xquad_en, cmrc2018 <-> xquad_zh, rgb_int_zh -> cmrc2018), a change
  of topic;
* *absent term* (same topic): T's own queries with their most specific term
  replaced by one the corpus never contains. English: the question word with
  the highest BMX idf becomes a made-up word of the same shape (capitalised if it
  was); Chinese: the question's highest-idf character bigram becomes two common
  corpus characters whose bigram never occurs. "How many points did the
  Panthers defense surrender?" -> "How many points did the Vorlanex defense
  surrender?".

For each question the top 6 hits are retrieved as `rag ask` does and
rag.answer.measure_evidence gives the checks (normalised BMX evidence,
absent naming terms, coverage). rag.answer.check_evidence decides; the
thresholds are chosen on a grid: ``min_sparse`` the largest (0.01 steps) and
``max_absent`` the smallest (0.05 steps) that together refuse at most
``--max-false-refusal`` of the answerable questions in every collection,
preferring the pair that rightly refuses the most absent-term questions (then
other-collection ones). The extractive path (`rag ask --no-llm`,
rag.answer.answer with no model) is run on every question with the chosen
defaults: its refusals must equal the check's, and for the answerable questions
it answers, the share whose quote holds a gold answer is reported.

``--dense-dir ROOT`` measures the dense leg too: the collections are not indexed
again but opened from ROOT/<collection> (the e5-small indexes of
bench/bench_fusion.py, bench/out/fusion/e5-small), so the best hit's dense
cosine is among the checks. With the lexical thresholds chosen as above, the
dense rescue (``DENSE_RESCUE``: a cosine at or above it answers a question the
lexical checks refuse) is the lowest (0.005 steps) that turns no rightly
refused other-collection or absent-term question into an answer in any
collection, and the dense floor (``DENSE_FLOOR``: a cosine below it refuses)
the highest that keeps wrong refusals within ``--max-false-refusal`` in every
collection. Rows before (dense leg unused) and after are reported.
Results: bench/results/evidence.md and evidence.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from eval.beir import load_beir  # noqa: E402
from eval.runner import index_dataset  # noqa: E402
from rag.answer import (  # noqa: E402
    DEFAULT_MAX_ABSENT,
    DEFAULT_MIN_COVERAGE,
    DEFAULT_MIN_DENSE,
    DEFAULT_MIN_EVIDENCE,
    CorpusView,
    Evidence,
    answer,
    check_evidence,
    corpus_view,
    dense_thresholds,
    measure_evidence,
)
from rag.engine import Engine  # noqa: E402
from rag.settings import Settings  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"
PAIRS_ALL = {
    "covidqa_chunks_en": "xquad_en",
    "xquad_en": "covidqa_chunks_en",
    "cmrc2018_dev_zh": "xquad_zh",
    "xquad_zh": "cmrc2018_dev_zh",
    "rgb_int_zh": "cmrc2018_dev_zh",
}
PAIRS = PAIRS_ALL
SETS = ("answerable", "other", "absent")
K = 6
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9'-]*")
_HAN_RE = re.compile(r"[\u4e00-\u9fff]")


def nonce_word(rng: random.Random, like: str) -> str:
    syll = ["vor", "lan", "ex", "qui", "dra", "mel", "tho", "zan", "bri", "kul", "fen", "rox"]
    word = "".join(rng.choice(syll) for _ in range(3))
    return word.capitalize() if like[:1].isupper() else word


def absent_term_question(q: str, view: CorpusView, rng: random.Random, chars: list[str]) -> str | None:
    """``q`` with its most specific known term replaced by one the corpus lacks (None if it has none)."""
    assert view.df is not None
    df = view.df
    if len(_HAN_RE.findall(q)) > len(_WORD_RE.findall(q)):
        grams = [
            q[i : i + 2] for i in range(len(q) - 1) if _HAN_RE.fullmatch(q[i]) and _HAN_RE.fullmatch(q[i + 1])
        ]
        known = [g for g in grams if df(g) > 0]
        if not known:
            return None
        target = max(known, key=lambda g: (view.idf(g), g))
        for _ in range(200):
            new = rng.choice(chars) + rng.choice(chars)
            if df(new) == 0 and new not in q:
                return q.replace(target, new, 1)
        return None
    words = [w for w in _WORD_RE.findall(q) if view.tokenize(w)]
    known = [w for w in words if all(df(t) > 0 for t in view.tokenize(w))]
    if not known:
        return None
    target = max(known, key=lambda w: (max(view.idf(t) for t in view.tokenize(w)), w))
    for _ in range(50):
        new = nonce_word(rng, target)
        changed = re.sub(rf"(?<![\w-]){re.escape(target)}(?![\w-])", new, q, count=1)
        if changed != q and all(df(t) == 0 for t in view.tokenize(new)):
            return changed
    return None


def corpus_chars(texts: list[str]) -> list[str]:
    """The 1,500 commonest Han characters of a corpus (material for made-up Chinese terms)."""
    counts: dict[str, int] = {}
    for t in texts:
        for ch in _HAN_RE.findall(t):
            counts[ch] = counts.get(ch, 0) + 1
    return [c for c, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:1500]]


def norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).casefold())


Params = tuple[float, float, float]  # min_sparse, max_absent, min_coverage
Dense = tuple[float, float]  # min_dense (rescue), dense_floor
NO_DENSE: Dense = (DEFAULT_MIN_DENSE, 0.0)
EMBEDDER = "e5-small"  # the model of the --dense-dir indexes


def refused(ev: Evidence, p: Params, d: Dense = NO_DENSE) -> bool:
    why = check_evidence(
        ev, min_sparse=p[0], max_absent=p[1], min_coverage=p[2], min_dense=d[0], dense_floor=d[1]
    )
    return why is not None


def refused_vec(f: dict[str, np.ndarray], p: Params, d: Dense = NO_DENSE) -> np.ndarray:
    """:func:`check_evidence` over arrays of checks (``dense`` NaN where the leg did not run)."""
    if p[0] <= 0:
        return np.zeros_like(f["sparse"], dtype=bool)
    dense = f["dense"]
    has = ~np.isnan(dense)
    by_meaning = has & (np.nan_to_num(dense, nan=-1.0) >= d[0])
    floor = has & (np.nan_to_num(dense, nan=2.0) < d[1])
    absent = (
        f["has_absent"] & ~(by_meaning & f["all_absent"]) & ((f["share"] >= p[1]) | (f["coverage"] < p[2]))
    )
    return floor | absent | ((f["sparse"] < p[0]) & ~by_meaning)


def run_collection(
    target: str, other: str, n: int, seed: int, cache: Path | None, dense_root: Path | None = None
) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{target}")
    ds, od = load_beir(EVAL / target), load_beir(EVAL / other)
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        data_dir = (cache / target) if cache else Path(tmp)
        t0 = time.perf_counter()
        if dense_root is not None:  # the ready e5 index: sparse + dense legs
            settings = Settings(data_dir=dense_root / target, graph={"enabled": False})  # type: ignore[arg-type]
            settings.embedding.model = EMBEDDER
            engine = Engine.open(settings)
        else:
            settings = Settings(data_dir=data_dir, embedding={"model": "none"}, graph={"enabled": False})  # type: ignore[arg-type]
            engine = index_dataset(ds, settings, legs=["sparse"])
        view = corpus_view(engine)
        chars = corpus_chars([d.get("text", "") for d in ds.corpus.values()])
        qa = rng.sample(sorted(ds.queries), min(n, len(ds.queries)))
        qu = rng.sample(sorted(od.queries), min(n, len(od.queries)))
        questions: dict[str, list[tuple[str, list[str]]]] = {
            "answerable": [(ds.queries[q], (ds.answers or {}).get(q, [])) for q in qa],
            "other": [(od.queries[q], []) for q in qu],
            "absent": [],
        }
        for q in qa:
            changed = absent_term_question(ds.queries[q], view, rng, chars)
            if changed:
                questions["absent"].append((changed, []))
        out: dict[str, Any] = {"examples": [x[0] for x in questions["absent"][:3]]}
        timing = []
        for name, items in questions.items():
            evs = []
            path_refused = 0
            gold_ok = answered = 0
            for q, golds in items:
                hits = engine.search(q, K, "hybrid")
                t1 = time.perf_counter()
                evs.append(measure_evidence(q, hits, view))
                timing.append((time.perf_counter() - t1) * 1000)
                final = answer(engine, None, q)
                path_refused += final.refused
                if name == "answerable" and not final.refused:
                    answered += 1
                    body = norm("\n".join(final.text.splitlines()[1:]))
                    gold_ok += any(norm(g) in body for g in golds if g)
            out[name] = {
                "n": len(items),
                "features": [ev.as_dict() for ev in evs],
                "extractive_refused": path_refused / max(len(items), 1),
            }
            if name == "answerable":
                out[name]["extractive_gold_share_of_answered"] = gold_ok / max(answered, 1)
        out["check_ms_mean"] = sum(timing) / max(len(timing), 1)
        engine.close()
    print(
        f"{target}: {len(qa)} + {len(qu)} + {len(questions['absent'])} questions, {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return out


def as_ev(d: dict[str, Any]) -> Evidence:
    return Evidence(
        d["sparse"], tuple(d["absent"]), d["absent_share"], d["coverage"], d["dense"], d["graph"], d["named"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="questions per set and collection")
    ap.add_argument("--max-false-refusal", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=20240801)
    ap.add_argument("--cache", type=Path, default=None, help="keep the indexes here (reused on the next run)")
    ap.add_argument(
        "--dense-dir",
        type=Path,
        default=None,
        help="open the ready e5-small indexes ROOT/<collection> (e.g. bench/out/fusion/e5-small) "
        "and calibrate the dense leg",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    if not EVAL.is_dir():
        print(f"skipped: {EVAL} not found")
        return
    data: dict[str, dict[str, Any]] = {}
    for target, other in PAIRS.items():
        if not (EVAL / target).is_dir() or not (EVAL / other).is_dir():
            print(f"skipped {target}: missing collection")
            continue
        if args.dense_dir is not None and not (args.dense_dir / target).is_dir():
            print(f"skipped {target}: no index under {args.dense_dir}")
            continue
        data[target] = run_collection(target, other, args.n, args.seed, args.cache, args.dense_dir)
    if not data:
        return
    evs = {c: {s: [as_ev(f) for f in d[s]["features"]] for s in SETS} for c, d in data.items()}
    arrays = {
        c: {
            s: {
                "sparse": np.array([e.sparse for e in v[s]]),
                "share": np.array([e.absent_share for e in v[s]]),
                "coverage": np.array([e.coverage for e in v[s]]),
                "has_absent": np.array([bool(e.absent) for e in v[s]], dtype=bool),
                "all_absent": np.array([len(e.absent) >= e.named for e in v[s]], dtype=bool),
                "dense": np.array([np.nan if e.dense is None else e.dense for e in v[s]], dtype=float),
            }
            for s in SETS
        }
        for c, v in evs.items()
    }

    def shares(p: Params, d: Dense = NO_DENSE) -> dict[str, dict[str, float]]:
        return {
            c: {s: float(refused_vec(a[s], p, d).mean()) if len(a[s]["sparse"]) else 0.0 for s in SETS}
            for c, a in arrays.items()
        }

    grid = [
        (round(0.01 * i, 2), round(0.05 * j, 2), round(0.05 * k, 2))
        for i in range(0, 31)
        for j in [*range(2, 21), 100]
        for k in range(0, 15)
    ]
    best: tuple[float, float, Params] | None = None
    for p in grid:
        sh = shares(p)
        if any(x["answerable"] > args.max_false_refusal for x in sh.values()):
            continue
        absent = sum(x["absent"] for x in sh.values()) / len(sh)
        right_other = sum(x["other"] for x in sh.values()) / len(sh)
        if best is None or (round(absent, 4), round(right_other, 4)) > (round(best[0], 4), round(best[1], 4)):
            best = (absent, right_other, p)
    assert best is not None
    ch = best[2]
    chosen = {"min_sparse": ch[0], "max_absent": ch[1], "min_coverage": ch[2]}
    # the vectorised rule is check_evidence itself
    for c, v in evs.items():
        for s in SETS:
            assert [refused(e, ch) for e in v[s]] == refused_vec(arrays[c][s], ch).tolist()
    defaults: Params = (DEFAULT_MIN_EVIDENCE, DEFAULT_MAX_ABSENT, DEFAULT_MIN_COVERAGE)
    earlier = max(
        (
            p
            for p in grid
            if p[1] == 5.0
            and p[2] == 0.0
            and all(x["answerable"] <= args.max_false_refusal for x in shares(p).values())
        ),
        key=lambda p: p[0],
    )
    with_dense = args.dense_dir is not None
    dense_chosen: Dense = NO_DENSE
    dense_in_code: Dense = dense_thresholds(EMBEDDER)
    curve: list[dict[str, Any]] = []
    if with_dense:
        base = shares(ch)
        rescue = DEFAULT_MIN_DENSE
        for i in range(200, 140, -1):  # 1.00 down to 0.705: the lowest that loses no right refusal
            r = round(0.005 * i, 3)
            sh = shares(ch, (r, 0.0))
            curve.append({"min_dense": r, "refused": sh})
            if any(sh[c][s] < base[c][s] for c in sh for s in ("other", "absent")):
                break
            rescue = r
        floor = 0.0
        for i in range(1, 200):
            f = round(0.005 * i, 3)
            if any(x["answerable"] > args.max_false_refusal for x in shares(ch, (rescue, f)).values()):
                break
            floor = f
        dense_chosen = (rescue, floor)
        for c, v in evs.items():
            for s in SETS:
                for d in (dense_chosen, dense_in_code):
                    assert [refused(e, ch, d) for e in v[s]] == refused_vec(arrays[c][s], ch, d).tolist()
    rows = []
    for name, p in [
        ("BMX evidence only (the earlier check)", (0.2, 5.0, 0.0)),
        ("BMX evidence only, largest threshold within the limit", earlier),
        ("absent naming terms only", (1e-9, ch[1], ch[2])),
        ("**all checks, chosen**", ch),
        ("all checks, defaults in rag/answer.py", defaults),
    ]:
        rows.append({"check": name, "params": [*p, *NO_DENSE], "refused": shares(p)})
    if with_dense:
        for name, d in [
            ("dense rescue only", (dense_chosen[0], 0.0)),
            ("dense floor only", (DEFAULT_MIN_DENSE, dense_chosen[1])),
            ("**all checks and the dense leg, chosen**", dense_chosen),
            (f"all checks, dense defaults in rag/answer.py for {EMBEDDER}", dense_in_code),
        ]:
            rows.append({"check": name, "params": [*ch, *d], "refused": shares(ch, d)})
    result = {
        "config": {"n": args.n, "k": K, "seed": args.seed, "max_false_refusal": args.max_false_refusal},
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "chosen": chosen,
        "dense": None
        if not with_dense
        else {
            "dir": str(args.dense_dir),
            "model": EMBEDDER,
            "chosen": {"min_dense": dense_chosen[0], "dense_floor": dense_chosen[1]},
            "in_code": {"min_dense": dense_in_code[0], "dense_floor": dense_in_code[1]},
            "rescue_curve": curve,
            "best_cosine_quantiles": {
                c: {
                    s: [round(float(q), 4) for q in np.nanquantile(a[s]["dense"], [0.02, 0.5, 0.98])]
                    for s in SETS
                }
                for c, a in arrays.items()
            },
        },
        "defaults_in_code": {
            "min_sparse": DEFAULT_MIN_EVIDENCE,
            "max_absent": DEFAULT_MAX_ABSENT,
            "min_coverage": DEFAULT_MIN_COVERAGE,
        },
        "rows": rows,
        "extractive_path": {
            c: {
                "refused": {s: round(d[s]["extractive_refused"], 4) for s in SETS},
                "gold_share_of_answered": round(d["answerable"]["extractive_gold_share_of_answered"], 4),
            }
            for c, d in data.items()
        },
        "sizes": {c: {s: d[s]["n"] for s in SETS} for c, d in data.items()},
        "absent_examples": {c: d["examples"] for c, d in data.items()},
        "check_ms_mean": {c: round(d["check_ms_mean"], 3) for c, d in data.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evidence.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (args.out / "evidence.md").write_text(render(result))
    print(render(result))


def render(r: dict[str, Any]) -> str:
    cols = list(r["sizes"])
    dense = r.get("dense")
    dense_flag = f" --dense-dir {dense['dir']}" if dense else ""
    lines = [
        "# Refusals of `rag ask`: when the notes do not answer",
        "",
        f"Produced by `python bench/bench_evidence.py --n {r['config']['n']}{dense_flag}` (method in its docstring): per "
        "collection up to "
        f"{r['config']['n']} answerable questions, as many questions of another collection, and the answerable "
        "ones with their most specific term replaced by one the corpus lacks (*absent term*, same topic). "
        + (
            f"Sparse and dense ({dense['model']}) indexes of `{dense['dir']}`, top 6 hybrid hits."
            if dense
            else "Sparse-only index (BMX), top 6 hits."
        ),
        "",
        "| collection | answerable | other collection | absent term |",
        "|---|---:|---:|---:|",
    ]
    for c in cols:
        z = r["sizes"][c]
        lines.append(f"| {c} | {z['answerable']} | {z['other']} | {z['absent']} |")
    lines += [
        "",
        "Examples of absent-term questions: "
        + "; ".join(f"`{r['absent_examples'][c][0]}`" for c in cols if r["absent_examples"][c]),
        "",
        "## Share refused (answerable = wrongly refused; other, absent = rightly refused)",
        "",
        "| check | " + " | ".join(f"{c} ans / other / absent" for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for row in r["rows"]:
        ms, ma, mc, md, mf = row["params"]
        label = (
            f"{row['check']}: min_sparse {ms:.2f}, max_absent {'off' if ma > 1 else ma}, min_coverage {mc}"
        )
        if dense:
            label += f", min_dense {'off' if md > 1 else md}, dense_floor {'off' if mf <= 0 else mf}"
        cells = [
            f"{row['refused'][c]['answerable']:.1%} / {row['refused'][c]['other']:.1%} / "
            f"{row['refused'][c]['absent']:.1%}"
            for c in cols
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The extractive path (`rag ask --no-llm`) with the defaults",
        "",
        "| collection | refused: answerable / other / absent | answered answerable questions whose quote holds a gold "
        "answer | check ms |",
        "|---|---:|---:|---:|",
    ]
    for c in cols:
        e = r["extractive_path"][c]
        lines.append(
            f"| {c} | {e['refused']['answerable']:.1%} / {e['refused']['other']:.1%} / {e['refused']['absent']:.1%} "
            f"| {e['gold_share_of_answered']:.1%} | {r['check_ms_mean'][c]:.2f} |"
        )
    lines += [
        "",
        f"Chosen on the grid: min_sparse **{r['chosen']['min_sparse']}**, max_absent **{r['chosen']['max_absent']}**, "
        f"min_coverage **{r['chosen']['min_coverage']}** "
        f"(at most {r['config']['max_false_refusal']:.0%} of answerable questions refused in every collection, "
        "most absent-term questions refused). The defaults in rag/answer.py are `DEFAULT_MIN_EVIDENCE` = "
        f"{r['defaults_in_code']['min_sparse']}, `DEFAULT_MAX_ABSENT` = {r['defaults_in_code']['max_absent']} and "
        f"`DEFAULT_MIN_COVERAGE` = {r['defaults_in_code']['min_coverage']}; "
        "`RAG_ANSWER__MIN_EVIDENCE` overrides the first, and 0 turns the whole check off. The LLM path runs the "
        "same check before the model is asked, so its refusals before generation are these.",
        "",
        *(dense_lines(r, cols) if dense else []),
        "Caveats. A naming term is a Latin word in a Chinese question, a code-like token, a capitalised word after "
        "the first, or a stretch of a Chinese question between its question/function words; lower-case English "
        "words are not naming terms, so an English absent-term question whose replaced word was lower-case is "
        "caught only by the BMX evidence. Replacing a term does not always make a question unanswerable (a "
        "redundant word may be replaced), so the absent-term refusal rate is a lower bound of what is right. "
        "The queries of these collections reuse the passages' wording more than real questions do. "
        + (
            "The dense thresholds hold for e5-small only; another model keeps the lexical checks alone "
            "until it is measured. "
            if dense
            else "No dense leg was measured here (`--dense-dir` measures it). "
        )
        + "The graph leg's entities are question substrings the lexical checks already see, so it adds "
        "nothing here.",
        "",
    ]
    return "\n".join(lines)


def dense_lines(r: dict[str, Any], cols: list[str]) -> list[str]:
    """The dense leg's section: its thresholds and the best cosines it decides on."""
    d = r["dense"]
    ch, code = d["chosen"], d["in_code"]
    lines = [
        f"## The dense leg ({d['model']})",
        "",
        "Best dense cosine of the top hits, 2% / 50% / 98% quantiles:",
        "",
        "| collection | answerable | other collection | absent term |",
        "|---|---:|---:|---:|",
    ]
    for c in cols:
        q = d["best_cosine_quantiles"][c]
        lines.append(f"| {c} | " + " | ".join(" / ".join(f"{x:.3f}" for x in q[s]) for s in SETS) + " |")
    lines += [
        "",
        f"Chosen: dense rescue **{ch['min_dense']}** (the lowest cosine that answers no rightly refused "
        f"question in any collection), dense floor **{ch['dense_floor']}** (the highest that keeps wrong "
        f"refusals within {r['config']['max_false_refusal']:.0%} in every collection). In rag/answer.py "
        f"`DENSE_RESCUE['{d['model']}']` = {code['min_dense']} and `DENSE_FLOOR['{d['model']}']` = "
        f"{code['dense_floor']}. The rescue answers no wrongly refused answerable question here: the few "
        "the lexical checks refuse have ordinary cosines, so it changes nothing measured. The floor "
        "refuses off-topic questions whose best cosine is low, which happens in the English collections; "
        "e5's Chinese cosines all lie above it. The floor is the last step before a collection's wrong "
        "refusals pass the limit, so it sits just under the lowest cosines of answerable questions: notes "
        "whose questions are worded further from the text may need it lower.",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
