"""`rag chat` through click's runner: follow-ups without a model, with the stub model, JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from rag.llm import clear_context_cache
from rag.settings import Settings
from tests.answer_corpus import index_notes
from tests.ollama_stub import LLMStub, Script, closed_port

MODEL = "stub-model"
NOTES = {
    "ollama.md": "# Ollama\n\nOllama 是本地运行大模型的工具。它默认监听 11434 端口。\n",
    "nginx.md": "# Nginx\n\nNginx 是一个反向代理服务器。它默认监听 80 端口。\n",
    "qdrant.md": "# Qdrant\n\nQdrant is a vector database. It listens on port 6333 by default.\n",
    "红烧肉.md": "# 红烧肉\n\n五花肉切块，冷水下锅焯水。加冰糖炒糖色，小火炖一小时。\n",
    "meeting.md": "# Meeting notes\n\nThe GPU cluster budget meeting is on Friday in room 4.\n",
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return index_notes(tmp_path_factory.mktemp("chat"), NOTES)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_context_cache()
    yield
    clear_context_cache()


def chat(indexed: Settings, url: str, *args: str, input: str) -> Result:
    env = {
        "RAG_EMBEDDING__MODEL": "none",
        "RAG_ANSWER__MIN_EVIDENCE": "0",  # every question reaches the model: these tests are about turns
        "RAG_LLM__URL": url,
        "RAG_LLM__MODEL": MODEL,
        "RAG_LLM__RETRIES": "0",
    }
    return CliRunner().invoke(cli, ["chat", *args, "--data-dir", str(indexed.data_dir)], env=env, input=input)


def lines(res: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def test_json_follow_ups_without_a_model(indexed: Settings) -> None:
    script = "Nginx 是什么？\n\n它默认监听哪个端口？\n/reset\nOllama 是什么？\n它默认监听哪个端口？\n"
    res = chat(indexed, f"http://127.0.0.1:{closed_port()}", "--json", "--no-llm", input=script)
    assert res.exit_code == 0, res.output
    turns = lines(res)
    assert len(turns) == 4  # the blank line and /reset are not questions
    assert turns[0]["rewrite"]["method"] == "none" and turns[0]["hits"][0]["source"] == "nginx.md"
    assert turns[1]["rewrite"] == {
        "question": "它默认监听哪个端口？",
        "standalone": "它默认监听哪个端口？ Nginx",
        "method": "terms",
        "note": None,
    }
    assert turns[1]["hits"][0]["source"] == "nginx.md" and turns[1]["llm"] is None
    # after /reset the earlier conversation is gone: only Ollama is carried
    assert turns[3]["rewrite"]["standalone"] == "它默认监听哪个端口？ Ollama"
    assert turns[3]["hits"][0]["source"] == "ollama.md"
    assert {"answer", "citations", "hits", "llm"} <= set(turns[3])


def test_people_see_the_rewrite_the_answer_and_its_sources(indexed: Settings) -> None:
    def responder(body: dict[str, Any]) -> Script:
        if body["messages"][-1]["content"].endswith("Rewritten question:"):
            return Script(tokens=["Ollama 默认监听哪个端口？"])
        return Script(tokens=["Ollama 默认监听 11434 端口", " [1]。"])

    with LLMStub({MODEL: 8192}, responder) as stub:
        res = chat(indexed, stub.url, input="Ollama 是什么？\n它默认监听哪个端口？\n/exit\n不会被问到\n")
        assert len(stub.chats()) == 3  # answer, condense, answer: nothing after /exit
        condense_call = stub.chats()[1].body
    assert res.exit_code == 0, res.output
    assert "→ Ollama 默认监听哪个端口？" in res.stdout
    assert res.stdout.count("Ollama 默认监听 11434 端口 [1]。") == 2
    assert "[1] ollama.md" in res.stdout
    assert condense_call is not None
    assert "Assistant: Ollama 默认监听 11434 端口 [1]。" in condense_call["messages"][1]["content"]


def test_a_failed_turn_is_one_line_and_the_chat_goes_on(indexed: Settings) -> None:
    calls = {"n": 0}

    def responder(body: dict[str, Any]) -> Script:
        calls["n"] += 1
        if calls["n"] == 1:
            return Script(status=500, error="llama runner process has terminated")
        return Script(tokens=["Nginx 默认监听 80 端口 [1]。"])

    with LLMStub({MODEL: 8192}, responder) as stub:
        res = chat(indexed, stub.url, "--json", input="Nginx 默认监听哪个端口？\nNginx 默认监听哪个端口？\n")
    assert res.exit_code == 1
    assert "error: Ollama replied HTTP 500: llama runner process has terminated" in res.stderr
    turns = lines(res)
    assert len(turns) == 1 and turns[0]["answer"] == "Nginx 默认监听 80 端口 [1]。"
    assert turns[0]["rewrite"]["method"] == "none"  # the failed turn is not part of the conversation


def test_beside_a_server_every_turn_goes_through_it(tmp_path: Path) -> None:
    import signal

    from rag.owner import current_owner
    from tests.answer_corpus import write_notes
    from tests.serve_process import rag_env, start_server

    data = tmp_path / "data"
    notes = write_notes(tmp_path / "notes", NOTES)
    env = rag_env(data, RAG_ANSWER__MIN_EVIDENCE="0")
    runner = CliRunner()
    assert runner.invoke(cli, ["ingest", str(notes), "--data-dir", str(data)], env=env).exit_code == 0
    script = "Nginx 是什么？\n它默认监听哪个端口？\n"
    args = ["chat", "--json", "--no-llm", "--data-dir", str(data)]
    here = runner.invoke(cli, args, env=env, input=script)
    assert here.exit_code == 0, here.output
    server = start_server(data, env={**env, "RAG_ANSWER__K": "1"})  # tells its answers apart
    try:
        owner = current_owner(data)
        assert owner is not None and owner.kind == "server"
        served = runner.invoke(cli, args, env=env, input=script)
        assert served.exit_code == 0, served.output
    finally:
        code, log = server.stop(signal.SIGTERM)
    assert code == 0, log
    local, remote = lines(here), lines(served)
    assert [t["rewrite"] for t in remote] == [t["rewrite"] for t in local]
    assert remote[1]["rewrite"]["standalone"] == "它默认监听哪个端口？ Nginx"
    assert "80 端口" in remote[1]["answer"] and "11434" not in remote[1]["answer"]  # one block: k=1 there
    assert [t["hits"][0]["source"] for t in remote] == ["nginx.md", "nginx.md"]
    assert [len(t["hits"]) for t in remote] == [1, 1] and len(local[1]["hits"]) > 1
    assert "Traceback" not in log
