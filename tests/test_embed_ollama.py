"""``ollama:<name>`` embeddings over real HTTP against the Ollama-protocol test server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.embed import EmbeddingCache, Prefixes, l2_normalize, make_embedder, prefixes_for
from rag.embed.ollama import OllamaEmbedder, default_ollama_url
from rag.errors import BackendError, LLMTimeoutError, LLMUnavailableError, ModelNotFoundError
from tests.ollama_stub import LLMStub, closed_port, stub_vector


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub({"bge-m3": 8192, "nomic-embed-text": 2048, "nomic-embed-text:latest": 2048}) as s:
        yield s


def _embeds(stub: LLMStub) -> list[list[str]]:
    return [list(r.body["input"]) for r in stub.requests if r.path == "/api/embed" and r.body]


def test_embeds_in_batches_with_the_dimension_of_the_first_reply(stub: LLMStub) -> None:
    emb = make_embedder("ollama:bge-m3", url=stub.url, batch_size=2)
    assert isinstance(emb, OllamaEmbedder)
    assert emb.dim == 3 and emb.name == "ollama:bge-m3"
    assert len(_embeds(stub)) == 1  # the probe that read the dimension
    texts = ["a b c", "猫 喜欢 鱼", "x", "one two", "last one here"]
    vectors = emb.embed_passages(texts)
    expected = l2_normalize(np.array([stub_vector(t) for t in texts], dtype=np.float32))
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    assert vectors.dtype == np.float32
    assert _embeds(stub)[1:] == [texts[0:2], texts[2:4], texts[4:5]]
    body = next(r.body for r in stub.requests if r.path == "/api/embed" and r.body)
    assert body["model"] == "bge-m3" and body.get("truncate") is True


def test_model_prefixes_are_applied(stub: LLMStub) -> None:
    emb = make_embedder("ollama:nomic-embed-text:latest", url=stub.url)
    assert emb.name == "ollama:nomic-embed-text"  # ':latest' is the same model
    assert prefixes_for("nomic-embed-text") == Prefixes("search_query: ", "search_document: ")
    emb.embed_queries(["where"])
    emb.embed_passages(["here"])
    assert _embeds(stub)[-2:] == [["search_query: where"], ["search_document: here"]]
    custom = make_embedder("ollama:nomic-embed-text", url=stub.url, prefixes=Prefixes("", ""))
    assert custom.name.startswith("ollama:nomic-embed-text+p")


def test_content_hash_cache_sends_only_new_texts(stub: LLMStub, tmp_path: Path) -> None:
    emb = make_embedder("ollama:bge-m3", url=stub.url, batch_size=8)
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        first = cache.embed_passages(emb, ["alpha", "beta"])
        before = len(_embeds(stub))
        again = cache.embed_passages(emb, ["beta", "alpha", "gamma"])
    np.testing.assert_array_equal(again[:2], first[::-1])
    assert _embeds(stub)[before:] == [["gamma"]]


def test_url_defaults_to_the_llm_url(stub: LLMStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("RAG_LLM__URL", stub.url)
    assert default_ollama_url() == stub.url
    assert make_embedder("ollama:bge-m3").dim == 3
    monkeypatch.delenv("RAG_LLM__URL")
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{stub.port}")
    assert default_ollama_url() == stub.url


def test_server_down_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.perf_counter()
    with pytest.raises(LLMUnavailableError) as info:
        OllamaEmbedder("bge-m3", url=url, retries=0)
    assert time.perf_counter() - started < 5
    line = info.value.one_line()
    assert "cannot reach Ollama" in line and url in line and "\n" not in line


def test_model_not_pulled_says_ollama_pull(stub: LLMStub) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        make_embedder("ollama:mxbai-embed-large", url=stub.url)
    assert "ollama pull mxbai-embed-large" in (info.value.hint or "")
    assert isinstance(info.value, BackendError)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    srv.close()


def test_a_silent_server_times_out(silent_server: str) -> None:
    started = time.perf_counter()
    with pytest.raises(LLMTimeoutError, match="in time"):
        OllamaEmbedder("bge-m3", url=silent_server, timeout_s=0.5, retries=0)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("embedding", "pulled"),
    [("e5-small", ["qwen2.5:7b-instruct"]), ("ollama:bge-m3", ["qwen2.5:7b-instruct", "bge-m3"])],
)
def test_compose_pulls_an_ollama_embedding_model(tmp_path: Path, embedding: str, pulled: list[str]) -> None:
    """The compose layout's one-shot pull fetches the embedding model too when Ollama serves it (its GPU path)."""
    import subprocess

    from tests.test_deploy import USER_ENV, compose, env_of

    services = compose({**USER_ENV, "EMBEDDING_MODEL": embedding})["services"]
    pull = services["ollama-pull"]
    assert env_of(pull)["EMBEDDING"] == env_of(services["api"])["RAG_EMBEDDING__MODEL"] == embedding
    fake = tmp_path / "ollama"  # `ollama show` finds nothing, `ollama pull` logs its argument
    fake.write_text(f'#!/bin/sh\n[ "$1" = pull ] && echo "$2" >> {tmp_path}/pulled.log\n[ "$1" = pull ]\n')
    fake.chmod(0o755)
    env = {**env_of(pull), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    done = subprocess.run([*pull["entrypoint"], *pull["command"]], env=env, check=False)
    assert done.returncode == 0
    assert (tmp_path / "pulled.log").read_text().split() == pulled
