"""Read a retrieval collection in the BEIR layout.

Layout (Thakur et al., "BEIR: A Heterogeneous Benchmark for Zero-shot
Evaluation of Information Retrieval Models", NeurIPS 2021 Datasets track)::

    corpus.jsonl        {"_id", "title", "text", ...}   one document a line
    queries.jsonl       {"_id", "text", ...}            one query a line
    qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score, first line a header
    answers.jsonl       {"_id": query id, "answers": [str, ...]}   optional

Only the queries named in the split's qrels are kept, as BEIR's own loader
does. Every problem with the files raises :class:`rag.errors.InputError`
naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import InputError, NotFoundError

__all__ = ["BeirDataset", "load_beir"]


@dataclass
class BeirDataset:
    """One BEIR collection: ``corpus[doc_id] = {"title", "text"}``, ``qrels[qid][doc_id] = grade``."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    answers: dict[str, list[str]] | None = None

    def document_text(self, doc_id: str) -> str:
        """Title and text of a document, joined by a newline (just the text when untitled)."""
        doc = self.corpus[doc_id]
        return f"{doc['title']}\n{doc['text']}" if doc["title"] else doc["text"]


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file."""
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _str_field(obj: dict[str, Any], key: str, path: Path, lineno: int, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "_id":
        return str(value)  # numeric ids appear in some BEIR sets
    if not isinstance(value, str):
        what = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise InputError(f'{path}:{lineno}: field "{key}" is {what}')
    return value


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise NotFoundError(f"{what} not found: {path}", hint="expected the BEIR layout (corpus.jsonl, ...)")
    return path


def _load_corpus(path: Path) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in _read_jsonl(path):
        doc_id = _str_field(obj, "_id", path, lineno)
        if doc_id in corpus:
            raise InputError(f'{path}:{lineno}: duplicate document id "{doc_id}"')
        corpus[doc_id] = {
            "title": _str_field(obj, "title", path, lineno, required=False),
            "text": _str_field(obj, "text", path, lineno),
        }
    return corpus


def _load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, obj in _read_jsonl(path):
        qid = _str_field(obj, "_id", path, lineno)
        if qid in queries:
            raise InputError(f'{path}:{lineno}: duplicate query id "{qid}"')
        queries[qid] = _str_field(obj, "text", path, lineno)
    return queries


def _load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 3:
            raise InputError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(fields)}")
        qid, doc_id, grade_text = (f.strip() for f in fields)
        try:
            grade = int(grade_text)
        except ValueError:
            if lineno == 1:  # the header line: query-id, corpus-id, score
                continue
            raise InputError(f'{path}:{lineno}: score "{grade_text}" is not an integer') from None
        if not qid or not doc_id:
            raise InputError(f"{path}:{lineno}: empty query or corpus id")
        qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def _load_answers(path: Path) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}
    for lineno, obj in _read_jsonl(path):
        qid = _str_field(obj, "_id", path, lineno)
        value = obj.get("answers")
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise InputError(f'{path}:{lineno}: field "answers" must be a list of strings')
        answers[qid] = list(value)
    return answers


def load_beir(path: Path, split: str = "test") -> BeirDataset:
    """Load the collection in directory ``path`` with the judgements of ``qrels/<split>.tsv``.

    Raises NotFoundError (an InputError) when the directory or a required file
    is missing, and InputError when a file is malformed or the qrels name a
    query that ``queries.jsonl`` lacks.
    """
    path = Path(path)
    if not path.is_dir():
        raise NotFoundError(f"dataset directory not found: {path}")
    corpus = _load_corpus(_require(path / "corpus.jsonl", "corpus file"))
    all_queries = _load_queries(_require(path / "queries.jsonl", "queries file"))
    qrels_path = _require(path / "qrels" / f"{split}.tsv", f'qrels for split "{split}"')
    qrels = _load_qrels(qrels_path)
    if not qrels:
        raise InputError(f"{qrels_path}: no judgements")
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise InputError(
            f"{qrels_path}: {len(missing)} query id(s) not in queries.jsonl, e.g. {missing[0]!r}"
        )
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    answers_path = path / "answers.jsonl"
    answers = _load_answers(answers_path) if answers_path.is_file() else None
    return BeirDataset(name=path.name, corpus=corpus, queries=queries, qrels=qrels, answers=answers)
