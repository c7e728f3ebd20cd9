"""eval.runner on tiny BEIR collections written under tmp_path (sparse leg only: fast)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from eval.beir import load_beir
from eval.metrics import evaluate_run
from eval.runner import default_modes, evaluate, index_dataset, run_mode, summarize
from rag.errors import InputError
from rag.llm import ChatMessage, LLMInfo
from rag.settings import Settings

# Six queries: q1..q5 each have one obviously matching document, q6 matches nothing at all.
TINY_CORPUS = [
    {"_id": "d1", "title": "Docker", "text": "用 docker run --gpus all 启动 ollama 容器，服务端口是 11434。"},
    {"_id": "d2", "title": "Python", "text": "Create a virtual environment with python -m venv .venv first."},
    {"_id": "d3", "title": "Git", "text": "git rebase rewrites commit history; git merge keeps it."},
    {"_id": "d4", "title": "缓存", "text": "Redis 是一个内存数据库，常用作缓存，默认端口 6379。"},
    {"_id": "d5", "title": "Kubernetes", "text": "kubectl get pods lists the pods of one namespace."},
]
TINY_QUERIES = {
    "q1": "怎么用 GPU 启动 ollama 容器",
    "q2": "how to create a python virtual environment",
    "q3": "rewrite git commit history",
    "q4": "内存数据库 缓存",
    "q5": "list kubernetes pods kubectl",
    "q6": "xyzzy plugh",
}
TINY_QRELS = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4", "q5": "d5", "q6": "d1"}


def write_beir(
    root: Path,
    corpus: Sequence[dict[str, str]],
    queries: dict[str, str],
    qrels: dict[str, str],
    answers: dict[str, list[str]] | None = None,
) -> Path:
    """A BEIR folder: one relevant document (grade 1) per query."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)

    def jsonl(rows: Sequence[Mapping[str, object]]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    (root / "corpus.jsonl").write_text(jsonl(list(corpus)), encoding="utf-8")
    (root / "queries.jsonl").write_text(
        jsonl([{"_id": q, "text": t} for q, t in queries.items()]), encoding="utf-8"
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items()), encoding="utf-8"
    )
    if answers is not None:
        (root / "answers.jsonl").write_text(
            jsonl([{"_id": q, "answers": a} for q, a in answers.items()]), encoding="utf-8"
        )
    return root


def tiny(root: Path) -> Path:
    return write_beir(root, TINY_CORPUS, TINY_QUERIES, TINY_QRELS)


# Answer recall golden case. qa: a1 ranks first (no answer), a2 second (holds "ZETA-42");
# qb: a3 first and holds the answer up to case and spacing; qc: the answer is nowhere; qd: no answers.
ANS_CORPUS = [
    {"_id": "a1", "title": "", "text": "alpha beta gamma delta"},
    {"_id": "a2", "title": "", "text": "alpha appears with the code ZETA-42 here"},
    {"_id": "a3", "title": "", "text": "python -m venv creates environments"},
]
ANS_QUERIES = {
    "qa": "alpha beta gamma delta",
    "qb": "python venv environments",
    "qc": "alpha code",
    "qd": "python",
}
ANS_QRELS = {"qa": "a1", "qb": "a3", "qc": "a2", "qd": "a3"}
ANS_ANSWERS = {"qa": ["zeta-42"], "qb": ["Python  -m VENV"], "qc": ["omega"]}


def answers_set(root: Path) -> Path:
    return write_beir(root, ANS_CORPUS, ANS_QUERIES, ANS_QRELS, ANS_ANSWERS)


@pytest.fixture
def sparse_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", embedding={"model": "none"})  # type: ignore[arg-type]


def test_evaluate_tiny_collection_golden(tmp_path: Path, sparse_settings: Settings) -> None:
    ds = load_beir(tiny(tmp_path / "tiny"))
    result = evaluate(ds, sparse_settings)
    assert result["dataset"] == "tiny" and result["n_queries"] == 6 and result["n_corpus"] == 5
    assert list(result["modes"]) == ["sparse"]  # no embedding model: the only leg
    sparse = result["modes"]["sparse"]
    # q1..q5 find their document first, q6 finds nothing
    for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert sparse[metric] == pytest.approx(5 / 6), metric
    assert 0 < sparse["latency_ms_p50"] <= sparse["latency_ms_p95"]
    # mixed languages: zh = q1, q4 (both found); en = q2, q3, q5, q6 (q6 not)
    zh, en = result["slices"]["zh"]["sparse"], result["slices"]["en"]["sparse"]
    assert list(result["slices"]) == ["zh", "en"]
    assert (zh["n_queries"], en["n_queries"]) == (2, 4)
    assert zh["ndcg@10"] == pytest.approx(1.0) and en["ndcg@10"] == pytest.approx(0.75)
    assert result["generation"] is None
    cfg = result["config"]
    assert cfg["modes"] == ["sparse"] and cfg["legs"] == ["sparse"] and cfg["ks"] == [10, 100]
    assert cfg["settings"]["embedding"]["model"] == "none"
    assert "api_key" not in json.dumps(cfg)
    assert set(result["timings"]) >= {"index_s", "store_s", "sync_s", "search_s", "total_s"}
    assert result["machine"]["cpu_count"] >= 1
    json.dumps(result)  # serialisable as it is


def test_run_mode_matches_metrics_on_its_run(tmp_path: Path, sparse_settings: Settings) -> None:
    ds = load_beir(tiny(tmp_path / "tiny"))
    with index_dataset(ds, sparse_settings) as engine:
        res = run_mode(engine, ds, "hybrid", ks=(1, 10))
    assert res.run["q1"][0] == "d1" and res.run["q6"] == []
    assert res.metrics == evaluate_run(res.run, ds.qrels, ks=(1, 10))
    assert set(res.latency_by_query) == set(ds.queries)
    assert summarize(res, ["q1", "q6"])["ndcg@1"] == pytest.approx(0.5)


def test_slices_only_when_languages_mix(tmp_path: Path, sparse_settings: Settings) -> None:
    en_only = {q: t for q, t in TINY_QUERIES.items() if q in ("q2", "q3", "q5")}
    ds = load_beir(write_beir(tmp_path / "en", TINY_CORPUS, en_only, {q: TINY_QRELS[q] for q in en_only}))
    assert "slices" not in evaluate(ds, sparse_settings, ["sparse"])
    ds_mixed = load_beir(tiny(tmp_path / "mixed"))
    sparse_settings.data_dir = tmp_path / "data2"
    assert "slices" not in evaluate(ds_mixed, sparse_settings, ["sparse"], slices=False)


def test_answer_recall_golden(tmp_path: Path, sparse_settings: Settings) -> None:
    ds = load_beir(answers_set(tmp_path / "ans"))
    result = evaluate(ds, sparse_settings, ["sparse"])
    m = result["modes"]["sparse"]
    # averaged over qa, qb, qc (qd has no answers): @1 only qb; @5 and @10 qa and qb
    assert m["answer_recall@1"] == pytest.approx(1 / 3)
    assert m["answer_recall@5"] == pytest.approx(2 / 3)
    assert m["answer_recall@10"] == pytest.approx(2 / 3)
    assert result["config"]["answer_ks"] == [1, 5, 10] and result["config"]["n_answers"] == 3


def test_no_answer_metrics_without_answers(tmp_path: Path, sparse_settings: Settings) -> None:
    result = evaluate(load_beir(tiny(tmp_path / "tiny")), sparse_settings, ["sparse"])
    assert not any(k.startswith("answer_recall") for k in result["modes"]["sparse"])


def test_data_dir_is_reused_for_the_same_collection(tmp_path: Path, sparse_settings: Settings) -> None:
    ds = load_beir(tiny(tmp_path / "tiny"))
    first = evaluate(ds, sparse_settings, ["sparse"])
    second = evaluate(ds, sparse_settings, ["sparse"])
    assert second["timings"]["sync_s"] == {"sparse": 0.0}  # nothing left to index
    drop = ("latency_ms_p50", "latency_ms_p95")
    assert {k: v for k, v in first["modes"]["sparse"].items() if k not in drop} == {
        k: v for k, v in second["modes"]["sparse"].items() if k not in drop
    }


def test_refuses_a_data_dir_holding_another_index(
    tmp_path: Path, sparse_settings: Settings, notes_dir: Path
) -> None:
    from ingest.pipeline import sync_paths
    from rag.store import ChunkStore

    with ChunkStore(sparse_settings.data_dir) as store:
        sync_paths([notes_dir], sparse_settings, store)
    with pytest.raises(InputError, match="already holds another index"):
        evaluate(load_beir(tiny(tmp_path / "tiny")), sparse_settings, ["sparse"])
    with ChunkStore(sparse_settings.data_dir) as store:  # the user's index is untouched
        assert sorted(d.source for d in store.documents()) == ["docker/gpu.md", "todo.txt"]


def test_default_modes_follow_the_available_legs(tmp_path: Path) -> None:
    from rag.engine import Engine

    with Engine.open(Settings(data_dir=tmp_path / "a", embedding={"model": "none"}), create=True) as e:  # type: ignore[arg-type]
        assert default_modes(e) == ["sparse"]
    with Engine.open(Settings(data_dir=tmp_path / "b", embedding={"model": "minilm"}), create=True) as e:  # type: ignore[arg-type]
        assert default_modes(e) == ["sparse", "dense", "hybrid"]


# -- generated answers with a deterministic fake model ---------------------------------------------

REPLIES = {
    "alpha beta gamma delta": "ZETA-42 [2]",  # exact; block 2 (a2) holds the answer
    "python venv environments": "Use python -m venv [1]",  # F1 6/7; block 1 (a3) holds the answer
    "alpha code": "The documents do not say.",  # a refusal: scores 0, cites nothing
}


class FakeLLM:
    """Replies by question: the known question found last in the prompt (after the documents)."""

    def __init__(self) -> None:
        self.calls = 0

    def info(self) -> LLMInfo:
        return {"backend": "fake", "model": "canned"}

    def context_length(self) -> int:
        return 8192

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        self.calls += 1
        content = messages[-1]["content"]
        question = max(REPLIES, key=content.rfind)
        assert question in content
        yield from REPLIES[question].split(" ")[:1]
        for word in REPLIES[question].split(" ")[1:]:
            yield " " + word

    def close(self) -> None:
        pass


def test_generated_answers_em_f1_and_citations(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        embedding={"model": "none"},  # type: ignore[arg-type]
        answer={"min_evidence": 0.0},  # type: ignore[arg-type]
    )
    ds = load_beir(answers_set(tmp_path / "ans"))
    llm = FakeLLM()
    gen = evaluate(ds, settings, ["sparse"], llm=llm)["generation"]
    assert llm.calls == 3  # the three queries with answers, not qd
    assert gen["llm"] == {"backend": "fake", "model": "canned"} and gen["n_queries"] == 3
    assert gen["exact_match"] == pytest.approx(1 / 3)
    assert gen["f1"] == pytest.approx((1 + 6 / 7 + 0) / 3)
    assert gen["citation_accuracy"] == pytest.approx(1.0) and gen["n_with_citations"] == 2
    assert gen["kinds"] == {"generated": 2, "refused": 1}
    capped = evaluate(ds, settings, ["sparse"], llm=FakeLLM(), max_generated=1)["generation"]
    assert capped["n_queries"] == 1 and capped["exact_match"] == pytest.approx(1.0)  # qa, first by id
    assert math.isfinite(capped["latency_ms_p95"])
