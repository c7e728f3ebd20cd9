"""LLM entity extraction over real HTTP against the Ollama-compatible stub server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import sync_paths
from rag.engine import Engine
from rag.errors import ConfigError
from rag.graph import GraphLeg
from rag.graph.extract import Mention
from rag.graph.llm import ENTITY_SCHEMA, merge_llm_entities, parse_entities
from rag.graph.normalize import AliasTable
from rag.llm import clear_context_cache
from rag.settings import Settings
from tests.ollama_stub import LLMStub, Script, closed_port

MODEL = "qwen2.5:7b-instruct"


@pytest.fixture(autouse=True)
def _fresh_context_cache() -> Iterator[None]:
    clear_context_cache()
    yield
    clear_context_cache()


@pytest.mark.parametrize(
    ("reply", "names"),
    [
        (
            '{"entities": [{"name": "Ollama", "type": "software"}, {"name": " 大语言模型 "}]}',
            ["Ollama", "大语言模型"],
        ),
        ('```json\n{"entities": ["Qdrant", "HNSW"]}\n```', ["Qdrant", "HNSW"]),
        ('Here you go: [{"name": "GPU"}, "CUDA", {"type": "x"}, 3]', ["GPU", "CUDA"]),
        ('{"entities": []}', []),
    ],
)
def test_parse_entities_golden(reply: str, names: list[str]) -> None:
    assert parse_entities(reply) == names


@pytest.mark.parametrize("reply", ["no json here", '{"entities": "Ollama"}', "{broken"])
def test_parse_entities_rejects_other_replies(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_entities(reply)


def test_merge_keeps_only_names_in_the_text() -> None:
    text = "大语言模型用 Ollama 在本地运行，HF 上有权重。"
    rules = [Mention("ollama", "Ollama", "name", 1, 2.0)]
    aliases = AliasTable.from_mapping({"Hugging Face": ["HF"]})
    merged = merge_llm_entities(rules, ["OLLAMA", "大语言模型", "GPT-5", "HF", "的", "x" * 80], text, aliases)
    got = {m.key: (m.surface, m.kind) for m in merged}
    assert got == {
        "ollama": ("Ollama", "name"),  # the rules had it already
        "大语言模型": ("大语言模型", "llm"),
        "huggingface": ("Hugging Face", "llm"),  # through the alias table, by its canonical name
    }  # GPT-5 is not in the text, 的 is junk, the long name is too long


def write_chunks(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"n{i}.md").write_text(
            f"# 笔记 {i}\n\n大语言模型用 Ollama 在本地运行，端口 11434，第 {i} 条。\n", encoding="utf-8"
        )
    return root


def llm_settings(data: Path, url: str, timeout_s: float = 10.0) -> Settings:
    return Settings(
        data_dir=data,
        embedding={"model": "none"},  # type: ignore[arg-type]
        graph={"extractor": "llm", "llm_timeout_s": timeout_s},  # type: ignore[arg-type]
        llm={"backend": "ollama", "url": url, "model": MODEL, "retries": 0},  # type: ignore[arg-type]
    )


def entities_reply(body: dict[str, Any]) -> Script:
    """Names the passage's model, plus one the passage never mentions."""
    passage = body["messages"][-1]["content"]
    names = [{"name": "大语言模型", "type": "concept"}, {"name": "Invented Corp", "type": "org"}]
    if "Ollama" in passage:
        names.append({"name": "Ollama", "type": "software"})
    text = json.dumps({"entities": names}, ensure_ascii=False)
    return Script(tokens=[text[:15], text[15:]])


def graph_of(engine: Engine) -> GraphLeg:
    leg = engine.leg("graph")
    assert isinstance(leg, GraphLeg)
    return leg


def run_ingest(settings: Settings, root: Path) -> Engine:
    engine = Engine.open(settings, create=True)
    sync_paths([root], settings, engine.store)
    engine.sync(["graph"])
    return engine


def test_llm_entities_join_the_graph_with_a_json_schema(tmp_path: Path) -> None:
    root = write_chunks(tmp_path / "notes", 2)
    with LLMStub({MODEL: 8192}, entities_reply) as stub:
        engine = run_ingest(llm_settings(tmp_path / "data", stub.url), root)
        try:
            leg = graph_of(engine)
            chats = stub.chats()
            assert len(chats) == 2  # one request per chunk
            body = chats[0].body
            assert body is not None and body["format"] == ENTITY_SCHEMA  # constrained decoding
            assert body["options"]["temperature"] == 0.0 and "<passage>" in body["messages"][-1]["content"]
            snap = leg.graph.snapshot()
            kinds = {key: kind for (_, key), (_, _, _, kind) in snap["mentions"].items()}
            assert kinds["大语言模型"] == "llm" and kinds["ollama"] != "llm"  # the rules found Ollama
            assert "inventedcorp" not in snap["entities"]
            assert leg.graph.chunk_ids(llm="ok") == engine.store.chunk_ids()
            assert leg.llm_failed == 0

            # a rebuild asks the model nothing: extractions are cached by text
            leg.graph.reset()
            leg.generation = None
            engine.sync(["graph"])
            assert len(stub.chats()) == 2
            assert leg.graph.snapshot() == snap
        finally:
            engine.close()


def test_per_chunk_timeout_then_retry(tmp_path: Path) -> None:
    root = write_chunks(tmp_path / "notes", 5)
    slow = Script(tokens=['{"entities": []}'], first_delay=3.0)
    with LLMStub({MODEL: 8192}, slow) as stub:
        settings = llm_settings(tmp_path / "data", stub.url, timeout_s=0.3)
        t0 = time.monotonic()
        engine = run_ingest(settings, root)
        try:
            took = time.monotonic() - t0
            leg = graph_of(engine)
            assert took < 5.0  # never waits the 3 s per chunk
            # three chunks in a row timed out: the rest are not even sent
            assert len(stub.chats()) == 3 and leg.llm_failed == 5
            assert leg.graph.chunk_ids(llm="failed") == engine.store.chunk_ids()
            assert "ollama" in leg.graph.snapshot()["entities"]  # the rules still ran

            # the model answers again: the next sync retries the failed chunks
            stub.responder = entities_reply
            (root / "n0.md").write_text("# 笔记 0\n\n大语言模型和 Ollama。\n", encoding="utf-8")
            sync_paths([root], settings, engine.store)
            engine.sync(["graph"])
            assert leg.llm_failed == 0
            assert leg.graph.chunk_ids(llm="ok") == engine.store.chunk_ids()
            assert "大语言模型" in leg.graph.snapshot()["entities"]
        finally:
            engine.close()


def test_unreachable_server_falls_back_to_rules(tmp_path: Path) -> None:
    root = write_chunks(tmp_path / "notes", 3)
    engine = run_ingest(llm_settings(tmp_path / "data", f"http://127.0.0.1:{closed_port()}"), root)
    try:
        leg = graph_of(engine)
        assert leg.llm_failed == 3 and leg.graph.count("chunks") == 3
        assert "ollama" in leg.graph.snapshot()["entities"]
    finally:
        engine.close()


def test_llm_extractor_needs_a_model(tmp_path: Path) -> None:
    settings = llm_settings(tmp_path / "data", "http://127.0.0.1:1")
    settings.llm.backend = "none"
    engine = Engine.open(settings, create=True)
    try:
        with pytest.raises(ConfigError, match="needs a language model"):
            engine.leg("graph")
    finally:
        engine.close()
