"""The refusal check: every leg's evidence and whether the question's naming terms occur at all."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from rag.answer import (
    DEFAULT_MIN_DENSE,
    DEFAULT_MIN_EVIDENCE,
    DENSE_FLOOR,
    DENSE_RESCUE,
    REFUSAL,
    CorpusView,
    Evidence,
    answer,
    check_evidence,
    corpus_view,
    dense_thresholds,
    key_terms,
    measure_evidence,
)
from rag.engine import Engine
from rag.models import Chunk
from rag.retrieval.search import Hit
from rag.settings import Settings
from rag.sparse.tokenize import Tokenizer
from tests.answer_corpus import index_notes
from tests.ollama_stub import LLMStub
from tests.test_answer import MODEL, ollama
from tests.test_extractive import NOTES


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return index_notes(tmp_path_factory.mktemp("evidence"), NOTES)


@pytest.fixture
def engine(indexed: Settings) -> Iterator[Engine]:
    with Engine.open(indexed) as e:
        yield e


# -- pure functions ---------------------------------------------------------------------------------


def test_key_terms_are_names_code_and_chinese_content_stretches() -> None:
    tok = Tokenizer()
    assert [s for s, _ in key_terms("量子计算机的纠错码是什么？", tok)] == ["量子计算机", "纠错码"]
    assert [s for s, _ in key_terms("怎样用 docker 在 GPU 上启动 ollama？", tok)] == [
        "docker",
        "GPU",
        "ollama",
        "启动",
    ]
    # English: code-like tokens and capitalised names after the first word, not plain words
    assert [s for s, _ in key_terms("What is num_ctx in Ollama?", tok)] == ["num_ctx", "Ollama"]
    assert key_terms("how many points did the defense surrender", tok) == []
    surface, terms = key_terms("what is num_ctx", tok)[0]
    assert surface == "num_ctx" and terms[0] == "num_ctx"


def view_of(docs: list[str]) -> CorpusView:
    """A corpus view over ``docs`` without an index: document frequencies counted directly."""
    tok = Tokenizer()
    sets = [set(tok(d)) for d in docs]
    return CorpusView(tok, len(docs), lambda t: sum(1 for s in sets if t in s))


def hit(n: int, text: str, sparse: float | None = 5.0, dense: float | None = None) -> Hit:
    chunk = Chunk(f"c{n}", "d", "a.md", 0, text, 0, len(text), None, ())
    scores: dict[str, float | None] = {"sparse": sparse, "dense": dense, "graph": None, "fused": 1.0}
    return Hit(rank=n, chunk=chunk, score=1.0, scores=scores)


DOCS = [
    "num_heads: int, the number of attention heads",
    "docker run -d --gpus all --name ollama ollama/ollama",
    "pip 国内镜像 https://pypi.tuna.tsinghua.edu.cn/simple",
    "nvidia-smi 查看显卡",
]


def test_an_identifier_the_notes_never_contain_is_absent_even_if_its_parts_occur() -> None:
    view = view_of(DOCS)
    ev = measure_evidence("what is num_ctx", [hit(1, DOCS[0])], view)
    assert ev.absent == ("num_ctx",) and ev.named == 1
    assert ev.absent_share > 0.3  # num_ctx and ctx never occur: most of the question's weight
    assert check_evidence(ev) == "the documents never mention num_ctx"
    present = measure_evidence("what is num_heads", [hit(1, DOCS[0])], view)
    assert present.absent == () and present.coverage == pytest.approx(1.0)
    assert check_evidence(present) is None


def test_a_chinese_term_is_absent_when_most_of_its_bigrams_never_occur() -> None:
    view = view_of(DOCS)
    ev = measure_evidence("怎么用 docker 启动 vllm 镜像？", [hit(1, DOCS[1])], view)
    assert "vllm" in ev.absent and "docker" not in ev.absent
    assert "启动" in ev.absent  # neither 启动 nor its characters' bigram occur in DOCS
    ok = measure_evidence("pip 国内镜像地址", [hit(1, DOCS[2])], view)
    assert ok.absent == ()  # 国内镜像地址: 3 of its 5 bigrams occur (地址 is new, 像地 crosses words)


def test_check_evidence_thresholds_and_legs() -> None:
    weak = Evidence(sparse=0.1, absent=(), absent_share=0.0, coverage=0.9, dense=None, graph=None, named=2)
    assert check_evidence(weak) == "evidence 0.10 below 0.17"
    assert check_evidence(weak, min_sparse=0.05) is None
    assert check_evidence(weak, min_sparse=0.0) is None  # 0 turns the check off
    # the dense leg rescues weak lexical evidence only at or above its threshold
    close = Evidence(0.1, (), 0.0, 0.9, dense=0.83, graph=None, named=2)
    assert check_evidence(close, min_dense=0.8) is None
    assert check_evidence(close, min_dense=0.9) is not None
    # one absent naming term among present ones: refused, whatever the dense leg says
    partly = Evidence(0.9, ("vllm",), 0.25, 0.7, dense=0.95, graph=None, named=3)
    assert check_evidence(partly, min_dense=0.8) == "the documents never mention vllm"
    light = Evidence(0.9, ("vllm",), 0.1, 0.7, dense=None, graph=None, named=3)
    assert check_evidence(light) is None  # a light absent term with the rest well covered passes
    assert check_evidence(light, min_coverage=0.8) is not None
    # every naming term absent but close in meaning (a Chinese question on English notes): answered
    other_language = Evidence(0.9, ("默认端口",), 1.0, 0.0, dense=0.9, graph=None, named=1)
    assert check_evidence(other_language, min_dense=0.8) is None
    assert check_evidence(other_language) is not None  # no dense leg measured: refused


def test_the_dense_floor_refuses_what_nothing_resembles() -> None:
    strong = Evidence(0.9, (), 0.0, 0.9, dense=0.7, graph=None, named=1)
    assert check_evidence(strong) is None  # no floor by default
    assert check_evidence(strong, dense_floor=0.79) == "closest passage similarity 0.70 below 0.79"
    assert check_evidence(strong, dense_floor=0.6) is None
    no_leg = Evidence(0.9, (), 0.0, 0.9, dense=None, graph=None, named=1)
    assert check_evidence(no_leg, dense_floor=0.79) is None  # without a dense leg the floor never acts
    assert check_evidence(strong, min_sparse=0.0, dense_floor=0.79) is None  # 0 turns every check off


def test_dense_thresholds_are_per_model() -> None:
    rescue, floor = dense_thresholds("e5-small")
    assert (rescue, floor) == (DENSE_RESCUE["e5-small"], DENSE_FLOOR["e5-small"])
    assert 0.0 < floor < rescue <= 1.0
    # a model that was never measured keeps the lexical checks alone
    assert dense_thresholds("use") == (DEFAULT_MIN_DENSE, 0.0)
    assert dense_thresholds("none") == (DEFAULT_MIN_DENSE, 0.0)


# -- the answer path --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "怎样用 docker 在 GPU 上启动 ollama？",
        "pip 国内镜像地址是什么？",
        "怎么进入容器",
        "num_heads 有什么要求",
        "docker 怎么把容器保存为镜像",
    ],
)
def test_answerable_questions_are_answered(engine: Engine, question: str) -> None:
    final = answer(engine, None, question)
    assert final.kind == "extractive", (final.note, final.checks)
    assert final.evidence >= DEFAULT_MIN_EVIDENCE


@pytest.mark.parametrize(
    ("question", "term"),
    [
        ("what is num_ctx", "num_ctx"),
        ("怎样用 docker 在 GPU 上启动 vllm？", "vllm"),
        ("量子计算机的纠错码是什么？", "纠错码"),
    ],
)
def test_questions_about_absent_terms_are_refused_on_both_paths(
    engine: Engine, question: str, term: str
) -> None:
    extractive = answer(engine, None, question)
    assert extractive.kind == "refused" and extractive.text in REFUSAL.values()
    assert extractive.note is not None and term in extractive.note
    assert extractive.as_dict()["evidence_checks"]["absent"]
    with LLMStub({MODEL: 8192}) as stub:
        llm = ollama(stub.url)
        generated = answer(engine, llm, question)
        llm.close()
        assert not stub.chats()  # the model was never asked
    assert generated.kind == "refused" and generated.note == extractive.note


def test_the_answer_path_uses_the_thresholds_of_the_engine_s_model(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.answer as answer_module

    question = "怎么进入容器"
    model = engine.settings.embedding.model
    far = Evidence(0.9, (), 0.0, 0.9, dense=0.5, graph=None, named=1)
    monkeypatch.setattr(answer_module, "measure_evidence", lambda *_: far)
    assert answer(engine, None, question).kind == "extractive"  # model not measured: no floor
    monkeypatch.setitem(DENSE_FLOOR, model, 0.79)
    final = answer(engine, None, question)
    assert final.kind == "refused" and final.note is not None
    assert "closest passage similarity 0.50 below 0.79" in final.note
    weak = Evidence(0.05, (), 0.0, 0.9, dense=0.95, graph=None, named=1)
    monkeypatch.setattr(answer_module, "measure_evidence", lambda *_: weak)
    assert answer(engine, None, question).kind == "refused"  # weak lexical evidence, no rescue
    monkeypatch.setitem(DENSE_RESCUE, model, 0.9)
    assert answer(engine, None, question).kind == "extractive"  # close in meaning: rescued


def test_the_check_is_cheap(engine: Engine) -> None:
    final = answer(engine, None, "what is num_ctx")
    assert final.checks is not None
    view_hits = final.hits
    view = corpus_view(engine)
    t0 = time.perf_counter()
    for _ in range(20):
        measure_evidence("what is num_ctx", view_hits, view)
    assert (time.perf_counter() - t0) / 20 < 0.05  # well under the search itself


def test_document_frequency_counts_live_documents_only() -> None:
    from rag.sparse.bmx import BMXIndex

    index = BMXIndex()
    index.upsert(["a", "b", "c"], [["num_heads", "d_model"], ["num_heads"], ["docker"]])
    assert index.document_frequency("num_heads") == 2
    assert index.document_frequency("num_ctx") == 0  # never seen
    index.delete(["b"])
    assert index.document_frequency("num_heads") == 1
    index.upsert(["a"], [["docker"]])  # a new version of "a" drops its old terms
    assert index.document_frequency("num_heads") == 0
    assert index.document_frequency("docker") == 2


def test_the_view_reads_document_frequencies_through_the_index(engine: Engine) -> None:
    view = corpus_view(engine)
    assert view.df is not None
    assert view.df("num_ctx") == 0
    assert view.df("num_heads") == 1


@pytest.mark.parametrize("strict", [False, True])
def test_the_cli_prints_why_a_question_was_refused(
    engine: Engine, strict: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.ask import _print_sources
    from rag.settings import AnswerSettings

    if strict:  # low lexical evidence: the line it always was
        settings = AnswerSettings.model_validate({"min_evidence": 50.0})
        final = answer(engine, None, "怎么进入容器", settings=settings)
    else:
        final = answer(engine, None, "what is num_ctx")
    assert final.kind == "refused" and final.hits
    _print_sources(final)
    err = " ".join(capsys.readouterr().err.split())
    if strict:
        assert f"evidence {final.evidence:.2f} below 50.00: the model was not asked" in err
    else:
        assert "the documents never mention num_ctx: the model was not asked" in err
        assert "below" not in err
