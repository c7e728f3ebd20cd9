"""Ranking metrics for retrieval evaluation: nDCG@k, Recall@k, MRR@k.

All functions are pure and deterministic. Conventions follow trec_eval
(``ndcg_cut``, ``recall``, ``recip_rank``) so that figures are comparable with
published BEIR numbers:

* a document is relevant when its qrels grade is > 0; grades <= 0 and unjudged
  documents are non-relevant;
* nDCG (Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR
  techniques", ACM TOIS 20(4), 2002), in the trec_eval form::

      DCG@k  = sum_{i=1..k} rel_i / log2(i + 1)
      nDCG@k = DCG@k / IDCG@k

  with linear gain ``rel_i`` (the graded qrels value) and IDCG@k the DCG@k of
  the judged relevant documents sorted by grade, descending; 0 when the query
  has no relevant document;
* Recall@k = |relevant in top k| / |relevant|; 0 when nothing is relevant;
* MRR@k = 1 / rank of the first relevant document within the top k, else 0
  (trec_eval's ``recip_rank`` computed on the run cut at depth k).

A ranked list is read top-down; a document id repeated in it counts only at
its first position. A run given as ``{doc_id: score}`` is ranked by score
descending, ties broken by doc id ascending (trec_eval breaks ties by doc id
too, but descending; the order here is the project's own and is stable).

Answer metrics (for collections with gold answer strings):

* answer recall@k: 1 when any of the top-k retrieved passages contains a gold
  answer as a substring after :func:`normalize_for_match` (NFKC, case folding,
  whitespace runs collapsed), else 0 — the "top-k retrieval accuracy" of
  Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question
  Answering", EMNLP 2020, §5.1, with a lighter normalisation;
* exact match and F1 of a generated answer against the best gold answer, as in
  the SQuAD v1.1 evaluation script (Rajpurkar et al., EMNLP 2016): lower-case,
  punctuation and English articles removed, whitespace tokens; CJK text is
  split into single characters first, as MLQA's evaluation does for Chinese
  (Lewis et al., "MLQA", ACL 2020, ``mlqa_evaluation_v1.py``), so that F1 is
  a character-overlap score for Chinese.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from rag.errors import InputError

Ranking = Sequence[str] | Mapping[str, float]
Qrels = Mapping[str, Mapping[str, int]]

__all__ = [
    "answer_f1",
    "answer_in_texts",
    "answer_recall_at_k",
    "evaluate_run",
    "evaluate_run_per_query",
    "exact_match",
    "mrr_at_k",
    "ndcg_at_k",
    "normalize_for_match",
    "rank_scores",
    "recall_at_k",
]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"cut-off k must be a positive integer, got {k!r}")


def _top_k(ranked: Iterable[str], k: int) -> list[str]:
    """The first ``k`` distinct doc ids of ``ranked``, in order."""
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranked:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        out.append(doc_id)
        if len(out) == k:
            break
    return out


def rank_scores(scores: Mapping[str, float]) -> list[str]:
    """Doc ids ordered by score descending, then doc id ascending."""
    return [doc_id for doc_id, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear graded gain and log2(rank + 1) discount (Järvelin & Kekäläinen 2002)."""
    _check_k(k)
    ideal_gains = sorted((rel for rel in qrels.values() if rel > 0), reverse=True)[:k]
    if not ideal_gains:
        return 0.0
    idcg = sum(gain / math.log2(i + 2) for i, gain in enumerate(ideal_gains))
    dcg = 0.0
    for i, doc_id in enumerate(_top_k(ranked, k)):
        rel = qrels.get(doc_id, 0)
        if rel > 0:
            dcg += rel / math.log2(i + 2)
    return dcg / idcg


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Fraction of the relevant documents (grade > 0) found in the top k."""
    _check_k(k)
    n_relevant = sum(1 for rel in qrels.values() if rel > 0)
    if n_relevant == 0:
        return 0.0
    hits = sum(1 for doc_id in _top_k(ranked, k) if qrels.get(doc_id, 0) > 0)
    return hits / n_relevant


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k (0 if none)."""
    _check_k(k)
    for i, doc_id in enumerate(_top_k(ranked, k)):
        if qrels.get(doc_id, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def _as_ranked(ranking: Ranking) -> Sequence[str]:
    if isinstance(ranking, Mapping):
        return rank_scores(ranking)
    if isinstance(ranking, str):
        raise InputError("a ranking must be a sequence of doc ids or a {doc_id: score} mapping, not a string")
    return ranking


def _metric_names(ks: Iterable[int]) -> list[tuple[str, int]]:
    ks_sorted = sorted(set(ks))
    if not ks_sorted:
        raise InputError("ks must name at least one cut-off")
    for k in ks_sorted:
        _check_k(k)
    return [(name, k) for name in ("ndcg", "recall", "mrr") for k in ks_sorted]


_METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


def evaluate_run_per_query(
    run: Mapping[str, Ranking], qrels: Qrels, ks: Iterable[int] = (10, 100)
) -> dict[str, dict[str, float]]:
    """Per-query metrics ``{qid: {"ndcg@10": ..., ...}}``.

    Covers every query of ``qrels`` that has at least one relevant document; a
    query missing from ``run`` scores 0 on every metric (trec_eval ``-c``).
    Run entries for queries without relevant judgements are ignored.
    """
    names = _metric_names(ks)
    out: dict[str, dict[str, float]] = {}
    for qid in sorted(qrels):
        judged = qrels[qid]
        if not any(rel > 0 for rel in judged.values()):
            continue
        ranked = _as_ranked(run.get(qid, ()))
        out[qid] = {f"{name}@{k}": _METRICS[name](ranked, judged, k) for name, k in names}
    return out


def evaluate_run(run: Mapping[str, Ranking], qrels: Qrels, ks: Iterable[int] = (10, 100)) -> dict[str, float]:
    """Mean of each metric over the queries of ``qrels`` that have a relevant document.

    ``run`` maps a query id to its ranked doc ids or to ``{doc_id: score}``.
    Returns ``ndcg@k``, ``recall@k`` and ``mrr@k`` for each k in ``ks`` (the
    default gives ``ndcg@10``, ``recall@10``, ``recall@100``, ``mrr@10`` and
    their @100 siblings). Raises InputError when no query has a relevant document.
    """
    names = _metric_names(ks)
    per_query = evaluate_run_per_query(run, qrels, ks)
    if not per_query:
        raise InputError("qrels contain no query with a relevant document; nothing to evaluate")
    n = len(per_query)
    # math.fsum: the mean does not depend on summation order.
    return {f"{name}@{k}": math.fsum(m[f"{name}@{k}"] for m in per_query.values()) / n for name, k in names}


# ---------------------------------------------------------------------------------------- answers

_WS_RE = re.compile(r"\s+")


def normalize_for_match(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space and stripped."""
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def answer_in_texts(texts: Iterable[str], answers: Iterable[str]) -> bool:
    """Whether any text contains any (non-blank) answer, both normalised by :func:`normalize_for_match`."""
    golds = [a for a in (normalize_for_match(x) for x in answers) if a]
    if not golds:
        return False
    return any(gold in norm for norm in (normalize_for_match(t) for t in texts) for gold in golds)


def answer_recall_at_k(texts: Sequence[str], answers: Iterable[str], k: int) -> float:
    """1.0 when one of the first ``k`` passages contains a gold answer, else 0.0 (DPR's top-k accuracy)."""
    _check_k(k)
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of passages, not a string")
    return 1.0 if answer_in_texts(texts[:k], answers) else 0.0


_CJK_CHAR_RE = re.compile(
    "([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f])"
)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def _answer_tokens(text: str) -> list[str]:
    """SQuAD normalisation (lower, no punctuation, no articles) with CJK characters as single tokens."""
    text = unicodedata.normalize("NFKC", text).lower()
    # punctuation: every Unicode P* category character, as MLQA does (covers CJK punctuation)
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES_RE.sub(" ", text)
    text = _CJK_CHAR_RE.sub(r" \1 ", text)
    return text.split()


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer (SQuAD v1.1 EM), else 0.0."""
    pred = _answer_tokens(prediction)
    return 1.0 if any(pred == _answer_tokens(a) for a in answers) else 0.0


def answer_f1(prediction: str, answers: Iterable[str]) -> float:
    """Best token-overlap F1 over the gold answers (SQuAD v1.1; CJK characters as tokens)."""
    pred = _answer_tokens(prediction)
    best = 0.0
    for gold_text in answers:
        gold = _answer_tokens(gold_text)
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
