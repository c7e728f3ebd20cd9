"""Conversations over HTTP: `/v1/ask` with a history and `/v1/chat/completions` with the whole
message list rewrite a follow-up before retrieval and show the rewritten question."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.llm import clear_context_cache
from tests.ollama_stub import LLMStub, Script
from tests.test_api_common import MODEL, api_settings

FOLLOW_UP = "Which port does it listen on by default?"
STANDALONE = "Which port does Ollama listen on by default?"
HISTORY = [
    {"role": "user", "content": "What is Ollama?"},
    {"role": "assistant", "content": "A tool to run models locally [1]."},
]


def responder(body: dict[str, Any]) -> Script:
    last = body["messages"][-1]["content"]
    if last.endswith("Rewritten question:"):
        return Script(tokens=["Which port does ", "Ollama listen on by default?"])
    return Script(tokens=["Ollama listens on port 11434", " [1]."])


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    clear_context_cache()
    with LLMStub({MODEL: 8192}, responder) as s:
        yield s
    clear_context_cache()


@pytest.fixture
def client(tmp_path: Path, stub: LLMStub) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(tmp_path, stub.url))) as c:
        yield c


def sse(text: str) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    for block in text.strip().split("\n\n"):
        name = None
        data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                raw = line.removeprefix("data: ")
                data = raw if raw == "[DONE]" else json.loads(raw)
        out.append((name, data))
    return out


def test_ask_with_history_rewrites_the_follow_up(client: TestClient, stub: LLMStub) -> None:
    body = client.post("/v1/ask", json={"question": FOLLOW_UP, "history": HISTORY}).json()
    assert body["rewrite"] == {"question": FOLLOW_UP, "standalone": STANDALONE, "method": "llm", "note": None}
    assert body["answer"] == "Ollama listens on port 11434 [1]."
    assert body["citations"][0]["source"] == "ollama-en.md"
    condense_call, answer_call = (c.body for c in stub.chats())
    assert condense_call is not None and "User: What is Ollama?" in condense_call["messages"][1]["content"]
    assert answer_call is not None and STANDALONE in answer_call["messages"][-1]["content"]
    assert FOLLOW_UP not in answer_call["messages"][-1]["content"]


def test_ask_without_history_has_no_rewrite_and_no_condense_call(client: TestClient, stub: LLMStub) -> None:
    body = client.post("/v1/ask", json={"question": STANDALONE}).json()
    assert "rewrite" not in body and len(stub.chats()) == 1


def test_ask_history_without_a_model_carries_terms(client: TestClient, stub: LLMStub) -> None:
    body = client.post("/v1/ask", json={"question": FOLLOW_UP, "history": HISTORY, "no_llm": True}).json()
    assert body["rewrite"]["method"] == "terms" and body["rewrite"]["standalone"] == f"{FOLLOW_UP} Ollama"
    assert body["kind"] == "extractive" and body["hits"][0]["source"] == "ollama-en.md"
    assert not stub.chats()


def test_ask_stream_with_history_starts_with_the_rewrite(client: TestClient) -> None:
    res = client.post("/v1/ask", json={"question": FOLLOW_UP, "history": HISTORY, "stream": True})
    events = sse(res.text)
    assert [name for name, _ in events] == ["rewrite", "token", "token", "citations", "final"]
    assert events[0][1]["standalone"] == STANDALONE
    assert events[-1][1]["rewrite"]["standalone"] == STANDALONE


def test_history_roles_are_checked(client: TestClient) -> None:
    bad = {"question": FOLLOW_UP, "history": [{"role": "system", "content": "x"}]}
    res = client.post("/v1/ask", json=bad)
    assert res.status_code == 422
    assert res.json()["error"]["details"][0]["loc"] == ["body", "history", "0", "role"]


def test_chat_completions_use_the_whole_message_list(client: TestClient, stub: LLMStub) -> None:
    messages = [{"role": "system", "content": "Be terse."}, *HISTORY, {"role": "user", "content": FOLLOW_UP}]
    reply = client.post("/v1/chat/completions", json={"model": "rag", "messages": messages}).json()
    text = reply["choices"][0]["message"]["content"]
    assert text.startswith(f"→ {STANDALONE}\n\nOllama listens on port 11434 [1].")
    assert reply["rewrite"]["standalone"] == STANDALONE
    condense_call = stub.chats()[0].body
    assert condense_call is not None
    assert "Be terse" not in condense_call["messages"][1]["content"]  # system messages are not turns
    assert "Assistant: A tool to run models locally [1]." in condense_call["messages"][1]["content"]

    streamed = client.post(
        "/v1/chat/completions", json={"model": "rag", "messages": messages, "stream": True}
    )
    chunks = [data for _, data in sse(streamed.text)]
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": f"→ {STANDALONE}\n\n"}
    assert "".join(d.get("content", "") for d in deltas) == text


def test_a_single_message_is_answered_as_before(client: TestClient, stub: LLMStub) -> None:
    messages = [{"role": "user", "content": STANDALONE}]
    reply = client.post("/v1/chat/completions", json={"model": "rag", "messages": messages}).json()
    assert reply["choices"][0]["message"]["content"].startswith("Ollama listens on port 11434 [1].")
    assert reply["rewrite"]["method"] == "none" and len(stub.chats()) == 1
