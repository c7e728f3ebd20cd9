"""The llama-index integration: NotesRetriever's nodes, and stock llama-index engines with
llama-index's own Ollama LLM answering over HTTP from the Ollama-protocol test server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.llms.ollama")

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.llms import ChatMessage as LlamaMessage
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode
from llama_index.llms.ollama import Ollama

from rag.engine import Engine
from rag.errors import ConfigError
from rag.integrations.llama_index import NotesRetriever
from rag.settings import Settings
from tests.answer_corpus import index_notes
from tests.ollama_stub import LLMStub, Script

MODEL = "stub-model"
QUESTION = "Which port does Ollama listen on?"
REPLY = "Ollama listens on port 11434 (ollama-en.md)."


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return index_notes(tmp_path_factory.mktemp("llama"))


@pytest.fixture
def retriever(indexed: Settings) -> Iterator[NotesRetriever]:
    with NotesRetriever(settings=indexed, mode="hybrid", k=3) as r:
        yield r


def test_nodes_carry_the_chunk_text_and_metadata(indexed: Settings, retriever: NotesRetriever) -> None:
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve(QUESTION)
    with Engine.open(indexed) as engine:
        hits = engine.search(QUESTION, 3, "hybrid")
    assert [n.node.node_id for n in nodes] == [h.chunk.chunk_id for h in hits]
    first, hit = nodes[0], hits[0]
    assert first.node.get_content() == hit.chunk.text and first.score == pytest.approx(hit.score)
    meta = first.node.metadata
    assert meta["source"] == "ollama-en.md" and meta["page"] is None
    assert (meta["start"], meta["end"]) == (hit.chunk.start, hit.chunk.end)
    assert meta["heading_path"] == list(hit.chunk.heading_path) and meta["heading"] == hit.chunk.heading
    assert meta["scores"] == hit.scores and set(meta["scores"]) == {"sparse", "dense", "graph", "fused"}
    assert meta["rank"] == 1 and meta["mode"] == "hybrid"
    shown = first.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "source: ollama-en.md" in shown and hit.chunk.text in shown
    assert "scores" not in shown and "chunk_id" not in shown


def test_a_one_leg_mode_scores_by_that_leg(indexed: Settings) -> None:
    with NotesRetriever(settings=indexed, mode="sparse", k=2) as r:
        nodes = r.retrieve(QUESTION)
    assert len(nodes) == 2 and nodes[0].node.metadata["scores"]["dense"] is None
    assert nodes[0].score == pytest.approx(nodes[0].node.metadata["scores"]["sparse"])


def test_bad_arguments_are_config_errors(indexed: Settings) -> None:
    with pytest.raises(ConfigError, match="unknown mode"):
        NotesRetriever(settings=indexed, mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k must be at least 1"):
        NotesRetriever(settings=indexed, k=0)


@contextlib.contextmanager
def ollama_llm(url: str) -> Iterator[Ollama]:
    """llama-index's Ollama LLM; its ollama client (and socket) is closed afterwards."""
    llm = Ollama(model=MODEL, base_url=url, request_timeout=30.0)
    try:
        yield llm
    finally:
        llm.client.close()


def test_stock_query_engine_with_llama_index_ollama_llm(retriever: NotesRetriever) -> None:
    script = Script(tokens=["Ollama listens on port 11434", " (ollama-en.md)."])
    with LLMStub({MODEL: 8192}, script) as stub, ollama_llm(stub.url) as llm:
        engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
        response = engine.query(QUESTION)
        chats = stub.chats()
        paths = [r.path for r in stub.requests]
    assert str(response) == REPLY
    assert response.source_nodes[0].node.metadata["source"] == "ollama-en.md"
    assert len(chats) == 1 and "/api/show" in paths  # llama-index reads the context window itself
    body = chats[0].body
    assert body is not None and body["model"] == MODEL and body["stream"] is False
    prompt = "\n".join(m["content"] for m in body["messages"])
    assert "Ollama listens on port 11434 by default." in prompt  # the retrieved chunk
    assert "source: ollama-en.md" in prompt and QUESTION in prompt
    assert "chunk_id" not in prompt


def test_stock_chat_engine_follow_up(retriever: NotesRetriever) -> None:
    def responder(body: dict[str, Any]) -> Script:
        text = "\n".join(m["content"] for m in body["messages"])
        if "Follow Up Input" in text:  # llama-index's condense prompt
            return Script(tokens=["Which port does Ollama listen on?"])
        return Script(tokens=["Port 11434 [ollama-en.md]."])

    with LLMStub({MODEL: 8192}, responder) as stub, ollama_llm(stub.url) as llm:
        # an in-process memory: the default one opens an aiosqlite database the engine never closes
        memory = ChatMemoryBuffer.from_defaults(token_limit=3000)
        chat = CondensePlusContextChatEngine.from_defaults(retriever, llm=llm, memory=memory)
        history = [
            LlamaMessage(role="user", content="What is Ollama?"),
            LlamaMessage(role="assistant", content="A tool that runs models locally."),
        ]
        reply = chat.chat("Which port does it listen on?", chat_history=history)
        bodies = [c.body for c in stub.chats()]
    assert str(reply) == "Port 11434 [ollama-en.md]."
    assert len(bodies) == 2  # the condense call, then the answer with the retrieved context
    assert "What is Ollama?" in "\n".join(m["content"] for m in (bodies[0] or {})["messages"])
    answer_prompt = "\n".join(m["content"] for m in (bodies[1] or {})["messages"])
    assert "Ollama listens on port 11434 by default." in answer_prompt
    assert reply.source_nodes[0].node.metadata["source"] == "ollama-en.md"
