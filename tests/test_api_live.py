"""The API through real HTTP: a live uvicorn on 127.0.0.1, the scripted Ollama-compatible server as the
model, httpx and the official ``openai`` client as clients."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rag.llm import clear_context_cache
from tests.ollama_stub import LLMStub, Script
from tests.test_api_common import MODEL, QUESTION, api_settings, live_server, wait_job


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_context_cache()
    yield
    clear_context_cache()


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs from SSE lines (``event:`` optional, one ``data:`` line per event here)."""
    name = "message"
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            yield name, data if data == "[DONE]" else json.loads(data)
            name = "message"


def test_ask_streams_tokens_as_they_come(tmp_path: Path) -> None:
    tokens = ["Ollama listens", " on port", " 11434", " [1]."]
    arrivals: list[tuple[str, Any, float]] = []
    with (
        LLMStub({MODEL: 8192}, Script(tokens=tokens, delay=0.3)) as stub,
        live_server(api_settings(tmp_path, stub.url)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        t0 = time.monotonic()
        with http.stream("POST", "/v1/ask", json={"question": QUESTION, "stream": True}) as res:
            assert res.status_code == 200
            assert res.headers["content-type"].startswith("text/event-stream")
            for name, data in sse_events(res.iter_lines()):
                arrivals.append((name, data, time.monotonic() - t0))
    names = [n for n, _, _ in arrivals]
    assert names == ["token"] * len(tokens) + ["citations", "final"]
    assert "".join(d["text"] for n, d, _ in arrivals if n == "token") == arrivals[-1][1]["answer"]
    assert arrivals[-1][1]["citations"][0]["source"] == "ollama-en.md"
    assert arrivals[-2][1]["citations"] == arrivals[-1][1]["citations"]
    # the first token arrives while the model is still generating (3 x 0.3 s to go)
    assert arrivals[-1][2] - arrivals[0][2] > 0.6


class SlowModel:
    """A model that generates ``n`` tokens slowly and records when its stream is closed."""

    def __init__(self, n: int = 400, delay: float = 0.02) -> None:
        self.n, self.delay = n, delay
        self.sent = 0
        self.finished = False
        self.closed = threading.Event()

    def __call__(self, body: dict[str, Any]) -> Iterator[str]:
        def generate() -> Iterator[str]:
            try:
                for i in range(self.n):
                    if i:
                        time.sleep(self.delay)
                    self.sent += 1
                    yield f" word{i}"
                self.finished = True
            finally:
                self.closed.set()

        return generate()


def test_a_client_that_disconnects_stops_generation(tmp_path: Path) -> None:
    model = SlowModel()
    with (
        LLMStub({MODEL: 8192}, model) as stub,
        live_server(api_settings(tmp_path, stub.url)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        with http.stream("POST", "/v1/ask", json={"question": QUESTION, "stream": True}) as res:
            first = next(sse_events(res.iter_lines()))
        assert first[0] == "token"
        # the response is closed unread: the connection goes away
        assert model.closed.wait(5), "the model's stream was not closed"
        assert not model.finished and model.sent < model.n / 2
        assert http.get("/health").status_code == 200  # and the server carries on


def test_openai_client_chat_and_models(tmp_path: Path) -> None:
    tokens = ["Ollama listens", " on port 11434", " [1]."]

    def responder(body: dict[str, Any]) -> Script:
        if body["messages"][-1]["content"].endswith("Rewritten question:"):  # the condense call
            return Script(tokens=[QUESTION])  # a standalone question comes back unchanged
        return Script(tokens=tokens)

    with LLMStub({MODEL: 8192}, responder) as stub:
        settings = api_settings(tmp_path, stub.url, api_key="sk-test")
        with live_server(settings) as url:
            with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0) as client:
                assert [m.id for m in client.models.list().data] == ["rag"]
                messages: Any = [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi."},
                    {"role": "user", "content": QUESTION},
                ]
                reply = client.chat.completions.create(model="rag", messages=messages)
                text = reply.choices[0].message.content
                assert text is not None and text.startswith("Ollama listens on port 11434 [1].")
                assert "\n\nSources:\n[1] ollama-en.md: “" in text
                assert reply.choices[0].finish_reason == "stop" and reply.model == "rag"
                asked = stub.chats()[-1].body
                assert asked is not None and QUESTION in asked["messages"][-1]["content"]

                chunks = list(client.chat.completions.create(model="rag", messages=messages, stream=True))
                assert chunks[0].choices[0].delta.role == "assistant"
                assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
                assert chunks[-1].choices[0].finish_reason == "stop"
                assert len({c.id for c in chunks}) == 1

                with pytest.raises(openai.NotFoundError, match="does not exist"):
                    client.chat.completions.create(model="gpt-4o", messages=messages)
            with (
                openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as bad,
                pytest.raises(openai.AuthenticationError),
            ):
                bad.models.list()


def test_searches_during_an_ingest_see_whole_documents(tmp_path: Path) -> None:
    """Every document is replaced while clients search: each search must return every document
    exactly once (old or new version), never a document missing or twice."""
    n_docs = 40
    settings = api_settings(tmp_path, publish_interval_s=0.02)
    settings.ingest.commit_every = 1

    def files(version: str) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [
            (
                "files",
                (f"doc{i:02d}.md", f"# Doc {i}\n\nquagga herd {version} doc{i}\n".encode(), "text/markdown"),
            )
            for i in range(n_docs)
        ]

    observed: list[list[tuple[str, str]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def searcher(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                res = c.post("/v1/search", json={"query": "quagga herd", "k": 100, "mode": "sparse"})
                if res.status_code != 200:
                    failures.append(res.text)
                    continue
                observed.append([(h["source"], h["text"].split()[-2]) for h in res.json()["hits"]])

    with live_server(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert (
            wait_job(http, http.post("/v1/documents", files=files("v1")).json()["job"]["id"])["status"]
            == "done"
        )
        threads = [threading.Thread(target=searcher, args=(url,)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        job = wait_job(http, http.post("/v1/documents", files=files("v2")).json()["job"]["id"])
        time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(10)
        final = http.post("/v1/search", json={"query": "quagga herd", "k": 100}).json()["hits"]

    assert job["status"] == "done" and job["result"]["updated"] == n_docs
    assert job["result"]["publishes"] >= 2  # intermediate states were published while searches ran
    assert not failures
    assert len(observed) > 10
    expected = {f"doc{i:02d}.md" for i in range(n_docs)}
    for hits in observed:
        assert len(hits) == n_docs and {source for source, _ in hits} == expected
    assert {h["text"].split()[-2] for h in final} == {"v2"}
