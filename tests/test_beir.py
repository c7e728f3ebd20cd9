"""Tests for eval.beir on tiny collections written under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.beir import BeirDataset, load_beir
from rag.errors import InputError, NotFoundError

SHARED_EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _make(
    root: Path,
    *,
    qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td1\t0\n",
    answers: bool = True,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Docker", "text": "用 docker run --gpus all 启动"},
            {"_id": "d2", "text": "端口 11434", "extra": 1},
            {"_id": "d3", "title": "", "text": "unjudged"},
        ],
    )
    _write_jsonl(
        root / "queries.jsonl",
        [{"_id": "q1", "text": "怎么启动?"}, {"_id": "q2", "text": "port?"}, {"_id": "q3", "text": "x"}],
    )
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    if answers:
        _write_jsonl(root / "answers.jsonl", [{"_id": "q1", "answers": ["docker run"]}])
    return root


def test_load_tiny_dataset(tmp_path: Path) -> None:
    ds = load_beir(_make(tmp_path / "tiny"))
    assert isinstance(ds, BeirDataset)
    assert ds.name == "tiny"
    assert ds.corpus == {
        "d1": {"title": "Docker", "text": "用 docker run --gpus all 启动"},
        "d2": {"title": "", "text": "端口 11434"},
        "d3": {"title": "", "text": "unjudged"},
    }
    # q3 has no judgements in this split and is left out
    assert ds.queries == {"q1": "怎么启动?", "q2": "port?"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}
    assert ds.answers == {"q1": ["docker run"]}
    assert ds.document_text("d1") == "Docker\n用 docker run --gpus all 启动"
    assert ds.document_text("d2") == "端口 11434"


def test_answers_optional_and_other_split(tmp_path: Path) -> None:
    root = _make(tmp_path / "s", answers=False)
    (root / "qrels" / "dev.tsv").write_text("q3\td3\t1\n", encoding="utf-8")  # no header line
    ds = load_beir(root, split="dev")
    assert ds.answers is None
    assert ds.queries == {"q3": "x"}
    assert ds.qrels == {"q3": {"d3": 1}}


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="directory"):
        load_beir(tmp_path / "nope")
    root = _make(tmp_path / "a")
    with pytest.raises(NotFoundError, match='split "train"'):
        load_beir(root, split="train")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(NotFoundError, match="corpus"):
        load_beir(root)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{broken\n', r"corpus.jsonl:2: not valid JSON"),
        ("corpus.jsonl", '{"_id": "d1"}\n', r'field "text" is missing'),
        ("corpus.jsonl", '{"_id": "d1", "text": 3}\n', r'field "text" is not a string'),
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', "duplicate document"),
        ("corpus.jsonl", '["d1", "a"]\n', "expected a JSON object"),
        ("queries.jsonl", '{"text": "no id"}\n', r'field "_id" is missing'),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\n", r"test.tsv:2: expected 3"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "not an integer"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\n", "no judgements"),
        ("qrels/test.tsv", "qX\td1\t1\n", "not in queries.jsonl"),
        ("answers.jsonl", '{"_id": "q1", "answers": "one"}\n', "list of strings"),
    ],
)
def test_malformed_files(tmp_path: Path, filename: str, content: str, message: str) -> None:
    root = _make(tmp_path / "bad")
    (root / filename).write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_beir(root)


def test_not_utf8(tmp_path: Path) -> None:
    root = _make(tmp_path / "enc")
    (root / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff\xfe"}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        load_beir(root)


def test_blank_lines_and_numeric_ids(tmp_path: Path) -> None:
    root = _make(tmp_path / "n")
    (root / "corpus.jsonl").write_text('\n{"_id": 7, "text": "seven"}\n\n', encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n\nq1\t7\t1\n", encoding="utf-8")
    ds = load_beir(root)
    assert ds.corpus == {"7": {"title": "", "text": "seven"}}
    assert ds.qrels == {"q1": {"7": 1}}


@pytest.mark.skipif(not (SHARED_EVAL / "xquad_zh").is_dir(), reason="shared eval data not present")
def test_shared_xquad_zh() -> None:
    ds = load_beir(SHARED_EVAL / "xquad_zh")
    assert len(ds.corpus) == 240
    assert len(ds.queries) == len(ds.qrels) == 1190
    assert ds.answers is not None and len(ds.answers) == 1190
