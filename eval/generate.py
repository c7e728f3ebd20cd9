"""Build a known-item test collection (BEIR layout) from an ingested index, without an LLM.

Known-item search simulation (Azzopardi, de Rijke & Balog, "Building simulated
queries for known-item topics", SIGIR 2007): take text from one unit and use
it as a query whose only relevant unit is the one it came from. Here:

* **corpus ids** are the chunk ids of the index: one corpus entry per chunk
  (``title`` = the chunk's heading path and context, one a line, as the
  indexes see them; ``text`` = the chunk text; plus ``heading``, ``context``,
  ``source``, ``page`` and ``ordinal`` for people and scripts reading the file);
* **queries** are salient sentences: body sentences (no headings, code,
  tables or URLs) of 8-48 units (a CJK letter or a word each), ranked within
  each document by the mean inverse document frequency, over all chunks, of
  their lexical tokens, so that distinctive sentences come first;
* **sampling** is deterministic: documents are shuffled with ``seed``, then
  visited round-robin, each giving its next most salient sentence, until
  ``n_queries`` are found; a chunk gives at most one query;
* **qrels** name the chunk the sentence came from (grade 1) and nothing else.
  A sentence that appears anywhere else in the corpus (chunk overlap, copied
  text) is skipped, so the judgement is complete;
* the sentence is **removed** from its chunk's text in ``corpus.jsonl``, so the
  query is not a trivial string match: what is left is the context around it.
  Chunks with fewer than ``min_context_units`` left are not used.
* **context is never the query**: sentences come from a chunk's own text, their
  salience is counted over heading paths and texts only (so the same sentences
  are picked whether chunks carry context or not), and a sentence found in any
  chunk's context is not used.

Salience by IDF favours sentences with rare terms, which the lexical leg finds
easily; compare modes on such a collection with that in mind.

With a question writer (a function from a chunk to a question, e.g. backed by
an LLM), each picked chunk's query is the written question instead and the
chunk text is kept whole.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.chunking import measure
from rag.errors import InputError
from rag.models import Chunk
from rag.store import ChunkStore

__all__ = [
    "GENERATOR",
    "GeneratedQuery",
    "QuestionFn",
    "build_corpus",
    "candidate_sentences",
    "clean_sentence",
    "generate_collection",
    "select_queries",
]

GENERATOR = "rag eval --generate"
FORMAT_VERSION = 1
QuestionFn = Callable[[Chunk], str | None]


@dataclass(frozen=True, slots=True)
class GeneratedQuery:
    """Query ``qid``: ``text``, taken from ``chunk_id``'s text at ``[start:end]`` (0, 0 when written)."""

    qid: str
    chunk_id: str
    text: str
    start: int
    end: int


# -- sentences -------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_SKIP_LINE_RE = re.compile(r"^(?:\s{0,3}(?:#|\||<|---|\*\*\*|___|!\[|\[\^)|\s{4}|\t)")
_LINE_PREFIX_RE = re.compile(r"^\s*(?:>\s*)*(?:(?:[-*+]|\d{1,3}[.)])\s+)?(?:\[[ xX]\]\s+)?")
_SENTENCE_END_RE = re.compile(r"[。！？；]+[”’」』）)]*|[.!?;]+[\"'”’)]*(?=\s|$)")
_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_INLINE_MARK_RE = re.compile(r"[*_`~]{1,3}")
_TRAILING_PUNCT_RE = re.compile(r"[\s。！？；.!?;:：,，]+$")
_URL_RE = re.compile(r"https?://|www\.|\[REDACTED:", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")
_CJK_RE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def clean_sentence(raw: str) -> str:
    """A sentence as a query: markdown links and emphasis marks dropped, one line, no end punctuation."""
    text = _LINK_RE.sub(r"\1", raw)
    text = _INLINE_MARK_RE.sub("", text)
    text = _WS_RE.sub(" ", text).strip()
    return _TRAILING_PUNCT_RE.sub("", text)


def _letter_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(1 for c in chars if c.isalpha() or _CJK_RE.match(c)) / len(chars)


def candidate_sentences(
    text: str, *, min_units: int = 8, max_units: int = 48
) -> Iterator[tuple[int, int, str]]:
    """Body sentences of a chunk's text fit to be queries: ``(start, end, query)`` with ``text[start:end]``
    the raw sentence (end punctuation included) and ``query`` its cleaned form.

    Skipped: fenced and indented code, headings, tables, HTML, rules, images,
    sentences with URLs or redacted secrets, sentences whose cleaned form is
    outside ``[min_units, max_units]`` units or is under 60% letters.
    """
    in_fence = False
    pos = 0
    for line in text.splitlines(keepends=True):
        line_start, pos = pos, pos + len(line)
        if _FENCE_RE.match(line):
            in_fence = not in_fence
            continue
        if in_fence or not line.strip() or _SKIP_LINE_RE.match(line):
            continue
        body = line.rstrip("\r\n")
        offset = _LINE_PREFIX_RE.match(body).end()  # type: ignore[union-attr]  # the pattern matches ""
        cuts = [m.end() for m in _SENTENCE_END_RE.finditer(body, offset)]
        if not cuts or cuts[-1] < len(body.rstrip()):
            cuts.append(len(body.rstrip()))
        start = offset
        for end in cuts:
            while start < end and body[start].isspace():
                start += 1
            raw = body[start:end]
            start = end
            if not raw or _URL_RE.search(raw):
                continue
            query = clean_sentence(raw)
            if not min_units <= measure(query) <= max_units or _letter_share(query) < 0.6:
                continue
            yield line_start + (end - len(raw)), line_start + end, query


def _norm(text: str) -> str:
    return _WS_RE.sub(" ", text).strip().casefold()


# -- selection -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    score: float
    chunk: Chunk
    start: int
    end: int
    query: str


def _salience(
    chunks: Sequence[Chunk], tokenize: Callable[[str], list[str]], min_units: int, max_units: int
) -> list[_Candidate]:
    """Every candidate sentence with its mean IDF (``ln(N / df)`` over chunks, Sparck Jones 1972)."""
    df: dict[str, int] = {}
    for c in chunks:
        for tok in set(tokenize(c.index_text(with_context=False))):
            df[tok] = df.get(tok, 0) + 1
    n = len(chunks)
    out = []
    for c in chunks:
        for start, end, query in candidate_sentences(c.text, min_units=min_units, max_units=max_units):
            toks = set(tokenize(query))
            if len(toks) < 3:
                continue
            score = math.fsum(math.log(n / df.get(t, 1)) for t in toks) / len(toks)
            out.append(_Candidate(score, c, start, end, query))
    return out


def select_queries(
    chunks: Sequence[Chunk],
    *,
    n_queries: int = 200,
    seed: int = 0,
    min_units: int = 8,
    max_units: int = 48,
    min_context_units: int = 20,
    tokenize: Callable[[str], list[str]] | None = None,
) -> list[GeneratedQuery]:
    """Pick up to ``n_queries`` known-item queries from ``chunks`` (see the module docstring).

    Deterministic for the same chunks, ``seed`` and parameters: the order of
    ``chunks`` does not matter (they are sorted by source and position).
    """
    if n_queries < 1:
        raise InputError(f"n_queries must be >= 1, got {n_queries}")
    if tokenize is None:
        from rag.sparse.tokenize import Tokenizer

        tokenize = Tokenizer()
    ordered = sorted(chunks, key=lambda c: (c.source, c.ordinal, c.start, c.chunk_id))
    by_doc: dict[str, list[_Candidate]] = {}
    for cand in _salience(ordered, tokenize, min_units, max_units):
        by_doc.setdefault(cand.chunk.source, []).append(cand)
    for cands in by_doc.values():
        cands.sort(key=lambda c: (-c.score, c.chunk.ordinal, c.start))
    docs = sorted(by_doc)
    random.Random(seed).shuffle(docs)
    # every chunk's searchable text, normalised, in one string: a sentence found once in it is unique
    haystack = "\x00".join(_norm(c.index_text()) for c in ordered)
    used: set[str] = set()
    cursors = dict.fromkeys(docs, 0)
    picked: list[GeneratedQuery] = []
    while len(picked) < n_queries and cursors:
        for doc in list(cursors):
            cands = by_doc[doc]
            i = cursors[doc]
            while i < len(cands) and not _usable(cands[i], used, haystack, min_context_units):
                i += 1
            if i == len(cands):
                del cursors[doc]
                continue
            cand = cands[i]
            cursors[doc] = i + 1
            used.add(cand.chunk.chunk_id)
            picked.append(
                GeneratedQuery(
                    f"gen-{len(picked) + 1:05d}", cand.chunk.chunk_id, cand.query, cand.start, cand.end
                )
            )
            if len(picked) == n_queries:
                break
    return picked


def _usable(cand: _Candidate, used: set[str], haystack: str, min_context_units: int) -> bool:
    if cand.chunk.chunk_id in used:
        return False
    raw = _norm(cand.chunk.text[cand.start : cand.end])
    if haystack.count(raw) != 1:  # elsewhere too: an overlap or a copy, so the judgement would be wrong
        return False
    query = _norm(cand.query)
    if haystack.count(query) > (1 if query in _norm(cand.chunk.index_text()) else 0):
        return False
    rest = cand.chunk.text[: cand.start] + cand.chunk.text[cand.end :]
    return measure(rest) >= min_context_units


# -- files -----------------------------------------------------------------------------------------


def build_corpus(chunks: Iterable[Chunk], queries: Sequence[GeneratedQuery]) -> list[dict[str, Any]]:
    """One corpus entry per chunk, sorted by source and position; query sentences cut out of their chunk.

    ``title`` is what the indexes see before the text (heading path, then context, one a line)."""
    cut = {q.chunk_id: q for q in queries if q.end > q.start}
    rows = []
    for c in sorted(chunks, key=lambda c: (c.source, c.ordinal, c.start, c.chunk_id)):
        text = c.text
        q = cut.get(c.chunk_id)
        if q is not None:
            text = _cut(text, q.start, q.end)
        rows.append(
            {
                "_id": c.chunk_id,
                "title": "\n".join(p for p in (c.heading, c.context) if p),
                "text": text,
                "heading": c.heading,
                "context": c.context,
                "source": c.source,
                "page": c.page,
                "ordinal": c.ordinal,
            }
        )
    return rows


def _cut(text: str, start: int, end: int) -> str:
    """``text`` without ``[start:end]``, leaving one space where the sentence sat between two Latin ones."""
    left, right = text[:start], text[end:]
    if not left or left[-1].isspace():
        return (left + right.lstrip(" \t")).strip()
    if right[:1].isascii() and not right[:1].isspace() and left[-1].isascii():
        return (left + " " + right).strip()
    return (left + right).strip()


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _check_out_dir(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    try:
        meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        raise InputError(
            f"{out_dir} is not empty and was not made by `{GENERATOR}`",
            hint="name a new or empty folder; nothing was written",
        )


def generate_collection(
    store: ChunkStore,
    out_dir: Path,
    *,
    n_queries: int = 200,
    seed: int = 0,
    min_units: int = 8,
    max_units: int = 48,
    min_context_units: int = 20,
    question_fn: QuestionFn | None = None,
    question_model: str | None = None,
) -> dict[str, Any]:
    """Write ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv`` and ``meta.json`` into ``out_dir``.

    Returns the meta object. ``question_fn`` writes a question for a picked
    chunk (``None`` or blank = keep the sentence query); ``question_model``
    names it in the meta. Raises InputError when the index is empty, when no
    sentence qualifies, or when ``out_dir`` holds files this function did not write.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    t0 = time.perf_counter()
    chunks = [c for batch in store.iter_chunks() for c in batch]
    if not chunks:
        raise InputError(f"the index in {store.data_dir} has no chunks", hint="run `rag ingest FOLDER` first")
    queries = select_queries(
        chunks,
        n_queries=n_queries,
        seed=seed,
        min_units=min_units,
        max_units=max_units,
        min_context_units=min_context_units,
    )
    if not queries:
        raise InputError(
            "no sentence in the index qualifies as a query",
            hint=f"documents need body sentences of {min_units}-{max_units} units with context around them",
        )
    written = 0
    by_chunk = {c.chunk_id: c for c in chunks}
    if question_fn is not None:
        rewritten = []
        for q in queries:
            question = (question_fn(by_chunk[q.chunk_id]) or "").strip()
            if question:
                rewritten.append(GeneratedQuery(q.qid, q.chunk_id, " ".join(question.split()), 0, 0))
                written += 1
            else:
                rewritten.append(q)
        queries = rewritten
    corpus = build_corpus(chunks, queries)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qrels").mkdir(exist_ok=True)
    _write_jsonl(out_dir / "corpus.jsonl", corpus)
    _write_jsonl(out_dir / "queries.jsonl", ({"_id": q.qid, "text": q.text} for q in queries))
    (out_dir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q.qid}\t{q.chunk_id}\t1\n" for q in queries),
        encoding="utf-8",
    )
    meta: dict[str, Any] = {
        "name": out_dir.name,
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "kind": "known-item",
        "source_index": str(store.data_dir),
        "source_generation": store.generation(),
        "n_documents": len({c.doc_id for c in chunks}),
        "n_documents_with_queries": len({by_chunk[q.chunk_id].doc_id for q in queries}),
        "n_corpus": len(corpus),
        "n_queries": len(queries),
        "n_queries_requested": n_queries,
        "seed": seed,
        "corpus_ids": "chunk ids of the source index; one corpus entry per chunk "
        "(title = heading path and context, one a line; text = chunk text)",
        "queries": (
            f"a salient body sentence of {min_units}-{max_units} units per chunk (mean IDF over chunks), "
            "documents visited round-robin in a seeded order; the sentence is removed from its chunk's "
            f"text in corpus.jsonl; chunks keep at least {min_context_units} units of context"
        ),
        "questions_written": written,
        "question_model": question_model if written else None,
        "relevance": "each query's only relevant corpus entry is the chunk it was taken from (grade 1); "
        "sentences found anywhere else in the corpus are not used",
        "took_s": round(time.perf_counter() - t0, 3),
    }
    (out_dir / "meta.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return meta
