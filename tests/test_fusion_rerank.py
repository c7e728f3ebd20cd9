"""The LLM re-ranking stage: answer parsing by hand, and the whole stage over real HTTP against
the Ollama-protocol stub (the stub's answer is scripted: this tests the plumbing, not a model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag.retrieval.rerank import llm_order, parse_permutation, rerank_messages
from rag.settings import LLMSettings
from tests.ollama_stub import LLMStub, Script

MODEL = "stub-ranker"


def _ollama(url: str) -> Any:
    from rag.llm.ollama import OllamaLLM

    return OllamaLLM(LLMSettings.model_validate({"url": url, "model": MODEL, "retries": 0}))


def test_parse_permutation_by_hand() -> None:
    assert parse_permutation("[3] > [1] > [2]", 3) == [2, 0, 1]
    # repeats and numbers out of range are dropped; passages left out follow in their own order
    assert parse_permutation("[2] > [2] > [9] > [0]", 4) == [1, 0, 2, 3]
    assert parse_permutation("Passage 4 is best, then 2.", 5) == [3, 1, 0, 2, 4]
    assert parse_permutation("I cannot tell.", 3) == [0, 1, 2]
    assert parse_permutation("", 0) == []


def test_rerank_messages_number_the_passages() -> None:
    msgs = rerank_messages("ollama 默认端口", ["端口是 11434", "docker  run\n--gpus all"], max_chars=8)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "Question: ollama 默认端口" in user
    # whitespace folded, each passage cut to 8 characters
    assert "[1] 端口是 1143\n" in user and "[2] docker r\n" in user
    assert "all 2 passages" in user


def test_llm_order_over_http() -> None:
    with LLMStub({MODEL: 4096}, Script(tokens=["[3]", " > [1]", " > [2]"])) as stub:
        llm = _ollama(stub.url)
        try:
            assert llm_order(llm, "q?", ["a", "b", "c"]) == [2, 0, 1]
            assert llm_order(llm, "q?", ["only one"]) == [0]  # nothing to order: no request
        finally:
            llm.close()
        chats = stub.chats()
        assert len(chats) == 1
        body = chats[0].body
        assert body is not None and "[2] b" in body["messages"][-1]["content"]


def test_llm_order_keeps_the_fused_order_when_the_model_fails() -> None:
    with LLMStub({MODEL: 4096}, Script(status=500, error="model crashed")) as stub:
        llm = _ollama(stub.url)
        try:
            assert llm_order(llm, "q?", ["a", "b", "c"]) == [0, 1, 2]
        finally:
            llm.close()


def test_retriever_reranks_hybrid_hits_only_when_asked(tmp_path: Path) -> None:
    from ingest.publish import ingest_and_publish
    from rag.engine import Engine
    from rag.retrieval.search import Retriever
    from rag.settings import Settings
    from tests.hashing_embedder import HashingEmbedder

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(6):
        (notes / f"n{i}.md").write_text(
            f"# n{i}\n\ndocker gpu port {'docker ' * i}note{i}\n", encoding="utf-8"
        )
    settings = Settings(data_dir=tmp_path / "d")
    settings.embedding.model = "hashing"
    settings.graph.enabled = False
    with Engine.open(settings, create=True, embedder=HashingEmbedder(32)) as engine:
        ingest_and_publish([notes], settings, engine, engine.store)
        plain = engine.search("docker gpu", k=3, mode="hybrid")
        assert len(plain) == 3
        with LLMStub({MODEL: 4096}, Script(tokens=["[4] > [2]"])) as stub:
            llm = _ollama(stub.url)
            try:
                r = settings.retrieval.model_copy(update={"rerank": "llm", "rerank_depth": 4})
                retriever = Retriever(engine.store, engine.legs_for("hybrid"), r, llm=llm)
                fused = Retriever(engine.store, engine.legs_for("hybrid"), settings.retrieval, llm=llm)
                top4 = fused.search("docker gpu", k=4, mode="hybrid")  # rerank "none": no LLM call
                assert not stub.chats()
                got = retriever.search("docker gpu", k=3, mode="hybrid")
                assert len(stub.chats()) == 1
                # the model put the 4th, then the 2nd first; the rest keep their fused order
                assert [h.chunk.chunk_id for h in got] == [top4[i].chunk.chunk_id for i in (3, 1, 0)]
                assert [h.rank for h in got] == [1, 2, 3]
                assert retriever.search("docker gpu", k=3, mode="sparse")  # one leg: never re-ranked
                assert len(stub.chats()) == 1
            finally:
                llm.close()


def test_engine_reranks_through_the_configured_llm(tmp_path: Path) -> None:
    """``RAG_RETRIEVAL__RERANK=llm`` alone turns the stage on: the engine builds the LLM from settings."""
    from ingest.publish import ingest_and_publish
    from rag.engine import Engine
    from rag.settings import Settings
    from tests.hashing_embedder import HashingEmbedder

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(5):
        (notes / f"n{i}.md").write_text(f"# n{i}\n\ndocker gpu {'docker ' * i}note{i}\n", encoding="utf-8")
    with LLMStub({MODEL: 4096}, Script(tokens=["[3] > [1] > [2]"])) as stub:
        settings = Settings.model_validate(
            {
                "data_dir": tmp_path / "d",
                "embedding": {"model": "hashing"},
                "graph": {"enabled": False},
                "retrieval": {"rerank": "llm", "rerank_depth": 3},
                "llm": {"url": stub.url, "model": MODEL, "retries": 0},
            }
        )
        with Engine.open(settings, create=True, embedder=HashingEmbedder(32)) as engine:
            ingest_and_publish([notes], settings, engine, engine.store)
            from rag.retrieval.search import Retriever

            plain = Retriever(
                engine.store,
                engine.legs_for("hybrid"),
                settings.retrieval.model_copy(update={"rerank": "none"}),
            ).search("docker gpu", 3, "hybrid")
            assert not stub.chats()
            assert engine.search("docker gpu", k=3, mode="sparse")  # one leg: never re-ranked
            assert not stub.chats()
            got = engine.search("docker gpu", k=3, mode="hybrid")
            assert len(stub.chats()) == 1
            body = stub.chats()[0].body
            assert body is not None and "Question: docker gpu" in body["messages"][-1]["content"]
            # the model's order [3] > [1] > [2] over the fused top 3
            assert [h.chunk.chunk_id for h in got] == [plain[i].chunk.chunk_id for i in (2, 0, 1)]
